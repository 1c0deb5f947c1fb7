"""The update sees the memory the rollout saw: the first PPO epoch's ratio is exactly 1."""

import pytest
import torch

from agents.config import AlgoConfig, MemoryConfig
from agents.losses import Evaluation, evaluate_rollout
from agents.policy import ActorCritic
from agents.ppo import ppo_loss, ppo_update
from agents.rollout import RolloutCollector
from agents.vec import make_vector_env

KINDS = ["expire-span", "window", "full", "gru", "lstm", "none"]


def small_memory(kind: str, critic: str = "shared") -> MemoryConfig:
    # capacity, spans and windows far below the chunk length: eviction, expiry and episode
    # starts all happen inside the chunk
    return MemoryConfig(
        kind=kind,
        width=16,
        layers=2,
        heads=2,
        capacity=4,
        span_limit=8,
        ramp=2,
        window=3,
        max_memory=6,
        span_init=0.5,
        critic=critic,
    )


@pytest.mark.parametrize(
    ("kind", "previous_action_reward", "critic"),
    [(kind, False, "shared") for kind in KINDS]
    + [("expire-span", True, "shared"), ("gru", True, "shared")]
    + [(kind, False, "separate") for kind in ("expire-span", "lstm", "none")],
)
def test_first_epoch_ratio_is_one(kind, previous_action_reward, critic):
    torch.manual_seed(0)
    device = torch.device("cpu")
    env = make_vector_env("Lethe/Corridor-S-v0", 6, device, previous_action_reward)
    policy = ActorCritic(env.obs_spaces, 3, small_memory(kind, critic))
    collector = RolloutCollector(env, policy, num_steps=40, device=device, seed=3)
    collector.collect(0.99, 0.95)  # the second chunk starts from a non-empty memory
    rollout, _ = collector.collect(0.99, 0.95)
    assert rollout.episode_starts[1:].any(), "the chunk should contain episode starts"

    with torch.no_grad():
        whole = evaluate_rollout(policy, rollout)
        subset = evaluate_rollout(policy, rollout, torch.tensor([4, 1]))
    valid = rollout.valid
    ratio = (whole.logprobs - rollout.logprobs).exp()[valid]
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    torch.testing.assert_close(whole.values[valid], rollout.values[valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(subset.logprobs, rollout.logprobs[:, [4, 1]], rtol=0, atol=1e-5)

    # and the update reports it: KL and clip fraction of a zero-learning-rate PPO update are 0
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.0)
    stats = ppo_update(policy, optimizer, rollout, AlgoConfig(update_epochs=1, num_minibatches=2))
    assert abs(stats["losses/approx_kl"]) < 1e-6
    assert stats["losses/clip_fraction"] == 0.0
    env.close()


@pytest.mark.parametrize(("num_minibatches", "per_epoch"), [(4, 4), (8, 8), (3, 3), (16, 10)])
def test_each_epoch_runs_the_asked_number_of_minibatches(num_minibatches, per_epoch):
    """10 envs in 4 or 8 minibatches is 4 or 8 (``torch.chunk`` gave 4 and 5: parts of
    ceil(10 / n) envs); more minibatches than envs is one env each."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    env = make_vector_env("Lethe/Corridor-S-v0", 10, device)
    policy = ActorCritic(env.obs_spaces, 3, small_memory("gru"))
    rollout, _ = RolloutCollector(env, policy, num_steps=8, device=device, seed=1).collect(
        0.99, 0.95
    )
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
    config = AlgoConfig(update_epochs=2, num_minibatches=num_minibatches)
    assert ppo_update(policy, optimizer, rollout, config)["losses/updates"] == 2 * per_epoch
    env.close()


@pytest.mark.parametrize("kind", ["expire-span", "gru", "none"])
def test_a_separate_critic_shares_no_features_with_the_policy(kind):
    """``critic="separate"``: the value loss moves only the critic's encoder, memory and head,
    the policy loss only the policy's; the auxiliary loss is both memories'."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    env = make_vector_env("Lethe/Corridor-S-v0", 4, device)
    policy = ActorCritic(env.obs_spaces, 3, small_memory(kind, "separate"))
    rollout, _ = RolloutCollector(env, policy, num_steps=12, device=device, seed=1).collect(
        0.99, 0.95
    )
    env.close()
    names = [name for name, _ in policy.named_parameters()]
    critic_side = {
        n for n in names if n.startswith(("critic_encoder.", "critic_memory.", "critic."))
    }
    assert {n.split(".")[0] for n in critic_side} >= {"critic_encoder", "critic"}
    for loss_of in ("values", "logprobs"):
        policy.zero_grad()
        getattr(evaluate_rollout(policy, rollout), loss_of).sum().backward()
        moved = {n for n, p in policy.named_parameters() if p.grad is not None and p.grad.any()}
        assert moved, loss_of
        assert moved <= critic_side if loss_of == "values" else not moved & critic_side


def evaluation(logprobs, values, entropy=(0.0,), aux=0.0):
    """An `Evaluation` of the given per-step numbers, one env, [T, 1] each."""
    column = lambda x: torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)  # noqa: E731
    return Evaluation(column(logprobs), column(entropy), column(values), torch.tensor(aux))


def test_clipped_surrogate_takes_the_pessimistic_term():
    # ratios 1.5 and 0.5 with advantages +1 and -1, clip 0.2, worked out by hand:
    # A=+1, r=1.5: max(-1.5, -1.2) = -1.2   A=+1, r=0.5: max(-0.5, -0.8) = -0.5
    # A=-1, r=1.5: max(1.5, 1.2) = 1.5      A=-1, r=0.5: max(0.5, 0.8) = 0.8
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5], dtype=torch.float64)
    new = evaluation(ratios.log(), [0.0] * 4, [0.0] * 4)
    zeros = torch.zeros(4, 1, dtype=torch.float64)
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64).reshape(4, 1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    config = AlgoConfig(clip_coef=0.2, ent_coef=0.0, vf_coef=0.0)
    loss, (policy_loss, _, _) = ppo_loss(new, zeros, zeros, advantages, zeros, mask, config)
    assert policy_loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)
    assert loss.item() == pytest.approx(policy_loss.item())


def test_value_loss_clips_to_the_larger_error_and_masks():
    # old value 0, clip 0.2. New 1.0, return 0.5: unclipped 0.25, clipped (0.2 - 0.5)^2 =
    # 0.09, larger 0.25. New 0.3, return 1.0: unclipped 0.49, clipped 0.64, larger 0.64.
    # The third step is masked out (a reset step) and would add 100.
    new = evaluation([0.0] * 3, [1.0, 0.3, 10.0], [0.0] * 3)
    zeros = torch.zeros(3, 1, dtype=torch.float64)
    returns = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64).reshape(3, 1)
    mask = torch.tensor([True, True, False]).reshape(3, 1)
    clipped = AlgoConfig(clip_coef=0.2, ent_coef=0.0, vf_coef=1.0)
    _, (_, value_loss, _) = ppo_loss(new, zeros, zeros, zeros, returns, mask, clipped)
    assert value_loss.item() == pytest.approx(0.5 * (0.25 + 0.64) / 2)
    unclipped = AlgoConfig(clip_coef=0.2, clip_value_loss=False, ent_coef=0.0, vf_coef=1.0)
    _, (_, value_loss, _) = ppo_loss(new, zeros, zeros, zeros, returns, mask, unclipped)
    assert value_loss.item() == pytest.approx(0.5 * (0.25 + 0.49) / 2)


def test_total_adds_the_terms_with_their_signs():
    # ratio 1, advantage 2: policy term -2. Value 1 against return 0: value term 0.5.
    # Entropy 0.7 is a bonus (subtracted); the memory's aux loss 0.3 is added as it is.
    new = evaluation([0.0], [1.0], [0.7], aux=0.3)
    zero = torch.zeros(1, 1, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    config = AlgoConfig(ent_coef=0.1, vf_coef=0.5)
    loss, terms = ppo_loss(new, zero, zero, zero + 2.0, zero, mask, config)
    assert [t.item() for t in terms] == pytest.approx([-2.0, 0.5, 0.7])
    assert loss.item() == pytest.approx(-2.0 - 0.1 * 0.7 + 0.5 * 0.5 + 0.3)
