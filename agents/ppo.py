"""PPO's update rule: clipped surrogate, (clipped) value loss, entropy, the memory's aux loss."""

from __future__ import annotations

import torch
from torch import nn

from agents.config import AlgoConfig
from agents.distributed import mean_over_ranks
from agents.losses import Evaluation, apply_gradients, evaluate_rollout, masked_mean, normalize
from agents.rollout import Rollout


def ppo_update(
    policy: nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout, config: AlgoConfig
) -> dict[str, float]:
    """`update_epochs` passes over the rollout in minibatches of whole env sequences.

    `policy` is an `ActorCritic` or its DDP wrapper. Under DDP every rank runs the same
    number of minibatches (same ``num_envs`` and ``num_minibatches``), and the ``target_kl``
    early stop reads the KL averaged over the ranks, so they all stop at the same epoch.
    """
    num_envs = rollout.num_envs
    # Exactly `num_minibatches` parts of sizes differing by at most one env (`chunk` would
    # give fewer: 10 envs in 8 chunks of 2 is 5), one env each when there are fewer envs.
    minibatches = min(config.num_minibatches, num_envs)
    stats: dict[str, list[float]] = {}
    skipped = 0
    for _epoch in range(config.update_epochs):
        permutation = torch.randperm(num_envs, device=rollout.actions.device)
        for env_idx in permutation.tensor_split(minibatches):
            mask = rollout.valid[:, env_idx]  # [T, n]
            new = evaluate_rollout(policy, rollout, env_idx)
            old_logprobs = rollout.logprobs[:, env_idx]
            advantages = rollout.advantages[:, env_idx]
            if config.normalize_advantages:
                advantages = normalize(advantages, mask)
            loss, (policy_loss, value_loss, entropy) = ppo_loss(
                new,
                old_logprobs,
                rollout.values[:, env_idx],
                advantages,
                rollout.returns[:, env_idx],
                mask,
                config,
            )
            taken, grad_norm = apply_gradients(policy, optimizer, loss, config.max_grad_norm)
            skipped += not taken
            with torch.no_grad():
                log_ratio = new.logprobs - old_logprobs
                ratio = log_ratio.exp()
                approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
                clip_fraction = masked_mean(((ratio - 1).abs() > config.clip_coef).float(), mask)
            for key, value in (
                ("losses/policy_loss", policy_loss),
                ("losses/value_loss", value_loss),
                ("losses/entropy", entropy),
                ("losses/aux_span_loss", new.aux_loss),
                ("losses/approx_kl", approx_kl),
                ("losses/clip_fraction", clip_fraction),
                ("losses/grad_norm", grad_norm),
            ):
                stats.setdefault(key, []).append(float(torch.as_tensor(value).detach()))
        if (
            config.target_kl > 0
            and mean_over_ranks(policy, stats["losses/approx_kl"][-1]) > config.target_kl
        ):
            break
    out = {key: sum(values) / len(values) for key, values in stats.items()}
    out["losses/skipped_updates"] = float(skipped)
    out["losses/updates"] = float(len(stats["losses/grad_norm"]))
    return out


def ppo_loss(
    new: Evaluation,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    config: AlgoConfig,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """PPO's loss on one minibatch: the total and its policy, value and entropy terms.

    The clipped surrogate takes the pessimistic (larger) of the unclipped and clipped terms;
    the value loss, with ``clip_value_loss``, the larger of the unclipped error and the error
    of a value kept within ``clip_coef`` of the rollout's. All are means over `mask`; the
    memory's auxiliary loss is added to the total as it is.
    """
    ratio = (new.logprobs - old_logprobs).exp()
    policy_loss = masked_mean(
        torch.max(
            -advantages * ratio,
            -advantages * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef),
        ),
        mask,
    )
    value_error = (new.values - returns) ** 2
    if config.clip_value_loss:
        clipped = old_values + (new.values - old_values).clamp(-config.clip_coef, config.clip_coef)
        value_error = torch.max(value_error, (clipped - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_error, mask)
    entropy = masked_mean(new.entropy, mask)
    loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss + new.aux_loss
    return loss, (policy_loss, value_loss, entropy)
