"""A2C's update rule: one gradient step on the whole rollout."""

from __future__ import annotations

import torch
from torch import nn

from agents.config import AlgoConfig
from agents.losses import Evaluation, apply_gradients, evaluate_rollout, masked_mean, normalize
from agents.rollout import Rollout


def a2c_update(
    policy: nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout, config: AlgoConfig
) -> dict[str, float]:
    """Policy gradient with the GAE advantage as baseline-corrected return, value regression.

    `policy` is an `ActorCritic` or its DDP wrapper (whose backward pass averages gradients).
    """
    mask = rollout.valid
    new = evaluate_rollout(policy, rollout)
    advantages = rollout.advantages
    if config.normalize_advantages:
        advantages = normalize(advantages, mask)
    loss, (policy_loss, value_loss, entropy) = a2c_loss(
        new, advantages, rollout.returns, mask, config
    )
    taken, grad_norm = apply_gradients(policy, optimizer, loss, config.max_grad_norm)
    return {
        "losses/policy_loss": float(policy_loss.detach()),
        "losses/value_loss": float(value_loss.detach()),
        "losses/entropy": float(entropy.detach()),
        "losses/aux_span_loss": float(new.aux_loss.detach()),
        "losses/grad_norm": grad_norm,
        "losses/skipped_updates": float(not taken),
        "losses/updates": 1.0,
    }


def a2c_loss(
    new: Evaluation,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    config: AlgoConfig,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A2C's loss: the total and its policy, value and entropy terms (means over `mask`).

    The policy term is the advantage-weighted log-probability; the memory's auxiliary loss is
    added to the total as it is.
    """
    policy_loss = -masked_mean(advantages * new.logprobs, mask)
    value_loss = 0.5 * masked_mean((new.values - returns) ** 2, mask)
    entropy = masked_mean(new.entropy, mask)
    loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss + new.aux_loss
    return loss, (policy_loss, value_loss, entropy)
