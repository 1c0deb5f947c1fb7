"""Evaluation of a trained policy on fresh episodes."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from agents.config import TrainConfig
from agents.policy import ActorCritic
from agents.vec import make_vector_env
from envs import task_of

#: evaluation runs at most this many envs at once (more episodes: several rounds)
MAX_EVAL_ENVS = 256
#: a round that has not ended every episode after this many steps is cut short
MAX_EVAL_STEPS = 100_000
CHECK_EVERY = 32  # steps between host checks of "are all episodes over"


def eval_env_id(config: TrainConfig) -> str:
    """The env of the final evaluation and the heatmaps: ``--eval-env``, else ``--env`` (for a
    curriculum id, the task it teaches: `envs.task_of`)."""
    return config.eval_env or task_of(config.env)


def eval_env_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of the eval env: ``--eval-env-kwargs``, else ``--env-kwargs``."""
    return config.env_kwargs if config.eval_env_kwargs is None else config.eval_env_kwargs


@torch.no_grad()
def evaluate(
    policy: ActorCritic,
    env_id: str,
    episodes: int,
    device: torch.device,
    seed: int,
    deterministic: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Play `episodes` fresh episodes, the first episode of each env (no bias to short ones).

    ``env_kwargs`` go to the env's constructor (`agents.vec.make_vector_env`).

    Returns ``episodes``, ``mean_return``, ``success_rate`` (None when the env reports no
    ``success``) and ``mean_length``.
    """
    returns: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    successes: list[torch.Tensor] = []
    remaining, round_index = episodes, 0
    while remaining > 0:
        n = min(remaining, MAX_EVAL_ENVS)
        env = make_vector_env(env_id, n, device, policy.reads_previous_action_reward, env_kwargs)
        try:
            # env i of a round is seeded seed + i (Gymnasium's vector envs): rounds apart by
            # MAX_EVAL_ENVS, so that no episode is played twice
            obs, _ = env.reset(seed=seed + round_index * MAX_EVAL_ENVS)
            state = policy.initial_state(n, device)
            start = torch.ones(n, dtype=torch.bool, device=device)
            active = torch.ones(n, dtype=torch.bool, device=device)
            episode_return = torch.zeros(n, device=device)
            episode_length = torch.zeros(n, device=device)
            success = torch.full((n,), float("nan"), device=device)
            for step in range(MAX_EVAL_STEPS):
                logits, _, state = policy.step(obs, state, start)
                start = torch.zeros_like(start)
                action = (
                    logits.argmax(-1)
                    if deterministic
                    else torch.distributions.Categorical(logits=logits).sample()
                )
                obs, reward, terminated, truncated, info = env.step(action)
                episode_return += reward * active
                episode_length += active.float()
                ended = active & (terminated | truncated)
                if "success" in info:
                    reported = ended & info.get("_success", torch.ones_like(ended)).bool()
                    success = torch.where(reported, info["success"].float(), success)
                active = active & ~ended
                if step % CHECK_EVERY == CHECK_EVERY - 1 and not bool(active.any()):
                    break
            else:
                warnings.warn(
                    f"evaluation: {int(active.sum())} of {n} episodes still running after "
                    f"{MAX_EVAL_STEPS} steps; they count with their return so far",
                    stacklevel=2,
                )
        finally:
            env.close()
        returns.append(episode_return)
        lengths.append(episode_length)
        successes.append(success)
        remaining -= n
        round_index += 1
    all_success = torch.cat(successes)
    reported = ~all_success.isnan()
    return {
        "episodes": episodes,
        "mean_return": float(torch.cat(returns).mean()),
        "mean_length": float(torch.cat(lengths).mean()),
        "success_rate": float(all_success[reported].mean()) if bool(reported.any()) else None,
    }
