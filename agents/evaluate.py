"""Evaluation of a trained policy on fresh episodes, and ``python train_rl.py evaluate RUN_DIR``.

`evaluate` plays a policy (the trainer's final and ``--eval-every`` evaluations);
`load_policy` rebuilds a run's policy from its checkpoint (also what ``analyze`` plays);
`evaluate_run` / `main` are the subcommand: a run's last or kept policy on fresh episodes,
any number of them, on its eval env or another, with one table on the terminal and, with
``--out``, a JSON file. The same command gives the same figures (the actions are sampled
from a torch generator seeded with the episodes' seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agents.cli import OneLineParser, prog, run_subcommand
from agents.config import DEVICES, ConfigError, TrainConfig, env_label, json_object, seed_value
from agents.policy import ActorCritic
from agents.vec import make_vector_env
from envs import task_of

#: evaluation runs at most this many envs at once (more episodes: several rounds)
MAX_EVAL_ENVS = 256
#: `evaluate_run`'s episode seeds start here past the run's seed: apart from the seeds of
#: training, of the trainer's evaluations (7,919 and 99,991 past it) and of analyze (77,777)
FRESH_SEED_OFFSET = 40_000
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
    progress: bool = False,
) -> dict[str, Any]:
    """Play `episodes` fresh episodes, the first episode of each env (no bias to short ones).

    ``env_kwargs`` go to the env's constructor (`agents.vec.make_vector_env`); ``progress``:
    a bar of the episodes ended on the terminal.

    Returns ``episodes``, ``mean_return``, ``success_rate`` (None when the env reports no
    ``success``) and ``mean_length``.
    """
    returns: list[torch.Tensor] = []
    lengths: list[torch.Tensor] = []
    successes: list[torch.Tensor] = []
    remaining, round_index = episodes, 0
    bar = tqdm(total=episodes, unit="episode", desc="evaluate", disable=not progress)
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
                if step % CHECK_EVERY == CHECK_EVERY - 1:
                    running = int(active.sum())
                    bar.update(episodes - remaining + n - running - bar.n)
                    if not running:
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
    bar.update(episodes - bar.n)
    bar.close()
    all_success = torch.cat(successes)
    reported = ~all_success.isnan()
    return {
        "episodes": episodes,
        "mean_return": float(torch.cat(returns).mean()),
        "mean_length": float(torch.cat(lengths).mean()),
        "success_rate": float(all_success[reported].mean()) if bool(reported.any()) else None,
    }


def played_env_kwargs(
    config: TrainConfig, env_id: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Keyword arguments for the env a loaded policy plays: ``given`` (``--env-kwargs``), else
    the run's eval env kwargs when it plays the run's eval env, none for another id."""
    if given is not None:
        return given
    return eval_env_kwargs(config) if env_id == eval_env_id(config) else {}


def forked_rng(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """torch's global RNG, of the CPU and of ``device``, forked: what is drawn inside leaves
    the caller's own draws (a run's sampled actions) as they would have been."""
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices, device_type=device.type)


def load_policy(
    run_dir: Path,
    device_name: str,
    env_id: str | None,
    checkpoint: str = "last",
    env_kwargs: dict[str, Any] | None = None,
    kinds: tuple[str, ...] | None = None,
) -> tuple[ActorCritic, TrainConfig, dict[str, Any], str, dict[str, Any], torch.device]:
    """(policy on device, config, checkpoint payload, env id, env kwargs, device) of a run
    directory; ``checkpoint``: ``"last"`` (``checkpoint.pt``) or ``"best"`` (``best.pt``); the
    env kwargs are `played_env_kwargs` (``env_kwargs``: ``--env-kwargs``); ``kinds``: the
    memory kinds allowed (None: any).

    Raises `ConfigError` (one line) for a missing / corrupt run directory, a memory kind not
    in ``kinds``, an unknown env or a checkpoint that does not fit the env."""
    from agents.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, mismatch_reason
    from agents.trainer import resolve_device

    try:
        payload = load_checkpoint(run_dir, BEST_NAME if checkpoint == "best" else CHECKPOINT_NAME)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--resume ", "", 1)) from None
    try:
        config = TrainConfig.from_dict(payload["config"])
    except (TypeError, AttributeError) as error:
        raise ConfigError(f"{run_dir}: checkpoint config is not readable ({error})") from None
    if kinds is not None and config.memory.kind not in kinds:
        raise ConfigError(
            f"{run_dir}: memory kind {config.memory.kind!r} keeps no per-observation memories; "
            f"allowed: {', '.join(kinds)}"
        )
    device = resolve_device(device_name)
    env_id = env_id or eval_env_id(config)
    env_kwargs = played_env_kwargs(config, env_id, env_kwargs)
    env = make_vector_env(env_id, 1, device, config.memory.previous_action_reward, env_kwargs)
    try:
        policy = ActorCritic(env.obs_spaces, int(env.single_action_space.n), config.memory)
    finally:
        env.close()
    try:
        policy.load_state_dict(payload["policy"])
    except RuntimeError as error:
        raise ConfigError(
            f"{run_dir}: the checkpoint does not fit env {env_id} ({mismatch_reason(error)})"
        ) from None
    policy.to(device).eval()
    return policy, config, payload, env_id, env_kwargs, device


def evaluate_run(
    run_dir: Path,
    episodes: int = 100,
    env_id: str | None = None,
    device: str = "cpu",
    seed: int | None = None,
    checkpoint: str = "last",
    env_kwargs: dict[str, Any] | None = None,
    deterministic: bool | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """`evaluate` a run's policy on fresh episodes; `ConfigError` on bad input.

    ``seed``: the first episode's (default: the run's seed + `FRESH_SEED_OFFSET`), also the
    seed of the sampled actions; ``deterministic``: greedy actions (default: the run's
    ``--eval-deterministic``); ``progress``: a bar of the episodes ended. Returns what was
    played (``run_dir``, ``checkpoint``, ``global_step``, ``env_id``, ``env_kwargs``,
    ``seed``, ``deterministic``) and ``eval``."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be a positive integer, got {episodes}")
    policy, config, payload, env_id, env_kwargs, torch_device = load_policy(
        Path(run_dir), device, env_id, checkpoint, env_kwargs
    )
    seed = config.seed + FRESH_SEED_OFFSET if seed is None else seed
    deterministic = config.eval_deterministic if deterministic is None else deterministic
    with forked_rng(torch_device):
        torch.manual_seed(seed)
        result = evaluate(
            policy, env_id, episodes, torch_device, seed, deterministic, env_kwargs, progress
        )
    return {
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        "global_step": payload["global_step"],
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "seed": seed,
        "deterministic": deterministic,
        "eval": result,
    }


def add_policy_arguments(
    parser: argparse.ArgumentParser, default_episodes: int, seed_offset: int
) -> None:
    """What the subcommands that play a run's policy (``evaluate``, ``analyze``) share: the run
    directory, which checkpoint, how many episodes, which env and device, the first seed
    (default: the run's seed + ``seed_offset``)."""
    parser.add_argument("run_dir", type=Path, help="a run directory holding checkpoint.pt")
    parser.add_argument(
        "--checkpoint",
        default="last",
        choices=("last", "best"),
        help="the policy to play: last (checkpoint.pt) or best (best.pt, kept by runs with "
        "--eval-every; default last)",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=default_episodes,
        help=f"episodes to play (default {default_episodes})",
    )
    parser.add_argument(
        "--env", default=None, help="env id to play (default: the run's --eval-env, else --env)"
    )
    parser.add_argument(
        "--env-kwargs",
        type=json_object,
        default=None,
        metavar="JSON",
        help="keyword arguments for the env's constructor (default: the run's eval env kwargs "
        "when playing its eval env, none for another --env)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="torch device (default cpu)"
    )
    parser.add_argument(
        "--seed",
        type=seed_value,
        default=None,
        help=f"first episode seed (default: run seed + {seed_offset})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of torch's operators (default 0: torch's default, one per core; 1 is "
        "far faster when other jobs share the cores)",
    )


def threads_of(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The ``--threads`` of `add_policy_arguments`, checked, as a context to play in."""
    from agents.trainer import cpu_threads

    if args.threads < 0:
        raise ConfigError(f"--threads must be an integer >= 0, got {args.threads}")
    return cpu_threads(args.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"{prog()} evaluate",
        description="Play a trained run's policy on fresh episodes and report its mean return, "
        "success rate and episode length.",
    )
    add_policy_arguments(parser, default_episodes=100, seed_offset=FRESH_SEED_OFFSET)
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="greedy actions instead of sampled ones (default: the run's --eval-deterministic)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the result to this JSON file"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar of the episodes played"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``evaluate RUN_DIR [--episodes N] [--checkpoint best] ...``; exit status."""

    def body(args: argparse.Namespace) -> int:
        if args.out is not None and not args.out.parent.is_dir():
            raise ConfigError(f"--out {args.out}: no such directory {args.out.parent}")
        if args.out is not None and args.out.is_dir():
            raise ConfigError(f"--out {args.out} is a directory; allowed: a file name")
        with threads_of(args):
            played = evaluate_run(
                args.run_dir,
                args.episodes,
                args.env,
                args.device,
                args.seed,
                args.checkpoint,
                args.env_kwargs,
                args.deterministic,
                progress=not args.no_progress,
            )
        result = played["eval"]
        rows = [
            ("policy", f"{played['checkpoint']}, step {played['global_step']:,}"),
            ("env", env_label(played["env_id"], played["env_kwargs"])),
            ("episodes", f"{result['episodes']} (seeds from {played['seed']})"),
            ("actions", "greedy" if played["deterministic"] else "sampled"),
            ("mean return", f"{result['mean_return']:.3f}"),
            (
                "success rate",
                "- (the env reports no success)"
                if result["success_rate"] is None
                else f"{result['success_rate']:.3f}",
            ),
            ("mean length", f"{result['mean_length']:.1f} steps"),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
        if args.out is not None:
            args.out.write_text(json.dumps(played, indent=2) + "\n")
            print(f"written to {args.out}")
        return 0

    return run_subcommand(build_parser(), argv, body)
