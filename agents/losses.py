"""What A2C and PPO share in an update: re-evaluating a rollout slice and masked statistics."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Categorical

from agents.distributed import all_ranks, unwrap
from agents.rollout import Rollout


class Evaluation(NamedTuple):
    """The policy's outputs on a slice of a rollout, with gradients, ``[T, n]`` each."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor
    aux_loss: torch.Tensor  # scalar, the memory's auxiliary loss


def evaluate_rollout(
    policy: nn.Module, rollout: Rollout, env_idx: torch.Tensor | None = None
) -> Evaluation:
    """Recompute the chunk of the envs `env_idx` (all when None) with `policy.sequence`.

    Sequences stay whole (minibatches are cut by env) and start from the memory state the
    rollout started from, so the first evaluation reproduces the rollout's log-probabilities.
    `policy` is an `ActorCritic` or its DDP wrapper: it is called (``forward`` is
    ``sequence``), so that DDP averages the gradients of this pass.
    """
    from memory.base import index_state

    if env_idx is None:
        obs, state, starts, actions = (
            rollout.obs,
            rollout.initial_state,
            rollout.episode_starts,
            rollout.actions,
        )
    else:
        obs = {k: v[:, env_idx] for k, v in rollout.obs.items()}
        has_memory = unwrap(policy).memory is not None
        state = index_state(rollout.initial_state, env_idx) if has_memory else ()
        starts, actions = rollout.episode_starts[:, env_idx], rollout.actions[:, env_idx]
    logits, values, aux = policy(obs, state, starts)
    dist = Categorical(logits=logits, validate_args=False)
    return Evaluation(dist.log_prob(actions), dist.entropy(), values, aux)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the entries where `mask` holds (reset steps are left out of every loss)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def normalize(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Standardise `x` over the masked entries."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return (x - mean) / (std + eps)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over valid steps (nan when returns are constant)."""
    residual = returns - values
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float("nan") if var_returns == 0 else float(1 - var_residual / var_returns)


def apply_gradients(
    policy: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_norm: float
) -> tuple[bool, float]:
    """Backward, clip and step, unless the loss or the gradient is not finite.

    Returns whether the step was taken and the gradient norm. A skipped step leaves the
    parameters and the optimiser untouched; the trainer counts skips and stops after many.
    Under DDP the ranks agree first: a non-finite loss on any rank skips the step on all of
    them (a rank that skipped the backward pass alone would leave the others waiting). The
    gradient after backward is the all-reduced one, the same on every rank, so the gradient
    check needs no agreement.
    """
    optimizer.zero_grad(set_to_none=True)
    if not all_ranks(policy, torch.isfinite(loss)):
        return False, float("nan")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return False, float("nan")
    optimizer.step()
    return True, float(grad_norm)
