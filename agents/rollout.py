"""Rollout storage and collection, batched on the device, and GAE without a loop over time.

Autoreset is Gymnasium's ``NEXT_STEP`` (see `docs/architecture.md`): the step that ends an
episode returns its final observation, and the following step of that env is a *reset step*
whose action is ignored and whose output is the next episode's first observation. So:

- the final observation is a policy input like any other, processed with that episode's
  memory: its value is exactly what a truncated episode bootstraps from;
- reset steps are stored but marked invalid (``valid = False``) and never enter a loss;
- the step after a reset step carries ``episode_start = True``, which clears the memory.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch.distributions import Categorical

from agents.policy import ActorCritic
from agents.vec import ObsDict, TorchVectorEnv


class Rollout(NamedTuple):
    """One chunk of ``T`` steps of ``N`` envs, everything ``[T, N, ...]`` on the device."""

    obs: ObsDict  # each [T, N, *obs_shape]
    actions: torch.Tensor  # [T, N] long
    logprobs: torch.Tensor  # [T, N]
    values: torch.Tensor  # [T, N]
    rewards: torch.Tensor  # [T, N]
    terminated: torch.Tensor  # [T, N] bool
    dones: torch.Tensor  # [T, N] bool, terminated or truncated
    episode_starts: torch.Tensor  # [T, N] bool, the memory is cleared before this step
    valid: torch.Tensor  # [T, N] bool, False on reset steps
    events: torch.Tensor  # [T, N] int, the env's event code of the step's input observation
    initial_state: Any  # the memory state at the chunk's start, [N, ...] per tensor
    next_value: torch.Tensor  # [N], value of the observation after the chunk
    advantages: torch.Tensor  # [T, N]
    returns: torch.Tensor  # [T, N]

    @property
    def num_envs(self) -> int:
        return self.actions.shape[1]


class EpisodeStats(NamedTuple):
    """Episodes that ended during one rollout, summed on the device (read once per rollout)."""

    episodes: int
    return_sum: float
    length_sum: float
    success_count: int  # episodes whose env reported `success`
    success_sum: float
    # The same for the episodes drawn at the last level of the env's curriculum (counted by
    # the level each episode reports when it ends; zero without a curriculum).
    last_level_episodes: int = 0
    last_level_return_sum: float = 0.0
    last_level_success_count: int = 0
    last_level_success_sum: float = 0.0

    @classmethod
    def of_sums(cls, sums: list[float]) -> EpisodeStats:
        """From the sums in field order, counts made ints again."""
        return cls(
            *(int(v) if f in _COUNT_FIELDS else v for f, v in zip(cls._fields, sums, strict=True))
        )


_COUNT_FIELDS = ("episodes", "success_count", "last_level_episodes", "last_level_success_count")


def _discounted_segment_sums(
    deltas: torch.Tensor, dones: torch.Tensor, decay: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A_t = sum_{k=t}^{end_t} decay^(k-t) delta_k`` within one block, in float64.

    ``end_t`` is the first ``k >= t`` with ``dones[k]``, or the block's last step. Also returns
    which steps' sums ran to the block's end without meeting a done (they continue past it).
    """
    num_steps = deltas.shape[0]
    steps = torch.arange(num_steps, device=deltas.device)
    weights = (decay ** steps.double()).unsqueeze(1)  # [T, 1]
    weighted = deltas.double() * weights  # [T, N]
    # tail[t] = sum_{k >= t} weighted[k], with tail[T] = 0
    tail = torch.cat([weighted.flip(0).cumsum(0).flip(0), weighted.new_zeros(1, weighted.shape[1])])
    index = steps.unsqueeze(1).expand_as(dones)
    done_index = torch.where(dones, index, torch.full_like(index, num_steps))
    first_done = done_index.flip(0).cummin(0).values.flip(0)  # [T, N], T where none
    end = first_done.clamp(max=num_steps - 1)
    sums = (tail[:-1] - tail.gather(0, end + 1)) / weights
    return sums, first_done == num_steps


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, ``[T, N]``, with no Python loop over time.

    ``delta_t = r_t + gamma * V_{t+1} * (1 - terminated_t) - V_t``: termination does not
    bootstrap, truncation does (``V_{t+1}`` is the value of the final observation, the input
    of the reset step that follows). ``A_t = sum_k (gamma * lambda)^(k-t) delta_k`` runs from
    ``t`` to the first step ``k >= t`` that ends an episode. It is a reverse cumulative sum
    weighted by ``(gamma * lambda)^k``, in float64; chunks so long that those weights would
    underflow are cut into blocks, joined from the last block back (a loop over blocks, one
    block for any usual rollout length).
    """
    num_steps = rewards.shape[0]
    next_values = torch.cat([values[1:], next_value.unsqueeze(0)], dim=0)  # [T, N]
    deltas = rewards + gamma * next_values * (~terminated) - values  # [T, N]
    decay = gamma * gae_lambda
    if decay == 0:
        advantages = deltas
        return advantages, advantages + values
    block = num_steps if decay >= 1 else max(1, int(200 / -math.log10(decay)))
    pieces: list[torch.Tensor] = []
    carry = deltas.new_zeros(deltas.shape[1], dtype=torch.float64)  # A at the block's end + 1
    for stop in range(num_steps, 0, -block):
        start = max(0, stop - block)
        sums, open_end = _discounted_segment_sums(deltas[start:stop], dones[start:stop], decay)
        to_end = torch.arange(stop - start, 0, -1, device=deltas.device).unsqueeze(1)  # [Tb, 1]
        sums = sums + open_end * (decay ** to_end.double()) * carry
        pieces.append(sums)
        carry = sums[0]
    advantages = torch.cat(pieces[::-1]).to(values.dtype)
    return advantages, advantages + values


class RolloutCollector:
    """Steps the vector env with the policy and fills `Rollout` chunks, carrying the memory."""

    def __init__(
        self,
        env: TorchVectorEnv,
        policy: ActorCritic,
        num_steps: int,
        device: torch.device,
        seed: int | None = None,
        deterministic: bool = False,
    ) -> None:
        self.env, self.policy, self.num_steps, self.device = env, policy, num_steps, device
        self.deterministic = deterministic
        n = env.num_envs
        self.obs, _ = env.reset(seed=seed)
        self.state = policy.initial_state(n, device)
        self.episode_start = torch.ones(n, dtype=torch.bool, device=device)
        self.reset_step = torch.zeros(n, dtype=torch.bool, device=device)
        self.episode_return = torch.zeros(n, device=device)
        self.episode_length = torch.zeros(n, device=device)
        self.last_event = torch.zeros(n, dtype=torch.long, device=device)

    def act(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An action (sampled, or the most likely one when deterministic) and its log-prob."""
        dist = Categorical(logits=logits, validate_args=False)
        action = logits.argmax(-1) if self.deterministic else dist.sample()
        return action, dist.log_prob(action)

    @torch.no_grad()
    def collect(self, gamma: float, gae_lambda: float) -> tuple[Rollout, EpisodeStats]:
        """One chunk of `num_steps` steps per env, with its advantages and episode stats."""
        T, n, device = self.num_steps, self.env.num_envs, self.device
        obs_store = {
            k: torch.empty((T, *v.shape), dtype=v.dtype, device=device) for k, v in self.obs.items()
        }
        actions = torch.empty((T, n), dtype=torch.long, device=device)
        logprobs, values, rewards = (torch.empty((T, n), device=device) for _ in range(3))
        terminated, dones, starts, valid = (
            torch.empty((T, n), dtype=torch.bool, device=device) for _ in range(4)
        )
        events = torch.empty((T, n), dtype=torch.long, device=device)
        totals = torch.zeros(9, dtype=torch.float64, device=device)  # see EpisodeStats
        last_level = self.env.curriculum_last_level  # None: no curriculum to single out
        initial_state = self.state

        for t in range(T):
            logits, value, self.state = self.policy.step(self.obs, self.state, self.episode_start)
            action, logprob = self.act(logits)
            for key, value_t in self.obs.items():
                obs_store[key][t] = value_t
            actions[t] = action
            logprobs[t] = logprob
            values[t] = value
            starts[t] = self.episode_start
            valid[t] = ~self.reset_step
            events[t] = self.last_event

            self.obs, reward, term, trunc, info = self.env.step(action)
            done = term | trunc
            rewards[t], terminated[t], dones[t] = reward, term, done
            self.last_event = info.get("event", torch.zeros_like(self.last_event)).long()

            self.episode_return += reward
            self.episode_length += (~self.reset_step).float()
            done_f = done.double()
            totals[0] += done_f.sum()
            totals[1] += (self.episode_return * done_f).sum()
            totals[2] += (self.episode_length * done_f).sum()
            reported = succeeded = None
            if "success" in info:
                reported = done & info.get("_success", torch.ones_like(done)).bool()
                succeeded = info["success"].bool() & reported
                totals[3] += reported.double().sum()
                totals[4] += succeeded.double().sum()
            if last_level is not None and "curriculum_level" in info:
                at_last = done & (info["curriculum_level"] == last_level)
                totals[5] += at_last.double().sum()
                totals[6] += (self.episode_return * at_last).sum()
                if reported is not None:
                    totals[7] += (reported & at_last).double().sum()
                    totals[8] += (succeeded & at_last).double().sum()
            self.episode_return = torch.where(done, 0.0, self.episode_return)
            self.episode_length = torch.where(done, 0.0, self.episode_length)
            # NEXT_STEP autoreset: after a done comes a reset step, then a new episode.
            self.episode_start = self.reset_step
            self.reset_step = done

        _, next_value, _ = self.policy.step(self.obs, self.state, self.episode_start)
        advantages, returns = compute_gae(
            rewards, values, next_value, terminated, dones, gamma, gae_lambda
        )
        rollout = Rollout(
            obs_store,
            actions,
            logprobs,
            values,
            rewards,
            terminated,
            dones,
            starts,
            valid,
            events,
            initial_state,
            next_value,
            advantages,
            returns,
        )
        return rollout, EpisodeStats.of_sums(totals.tolist())  # the one host read of the rollout
