"""GAE and returns against values worked out by hand, truncation and termination mixed."""

import pytest
import torch

from agents.rollout import compute_gae


def _column(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype).unsqueeze(1)  # [T, 1]


def test_truncation_bootstraps_and_termination_does_not():
    # t0 plain step, t1 truncated, t2 the reset step (its input is t1's final observation,
    # so its value V=2 is what t1 bootstraps from), t3 terminated.
    rewards = _column([1.0, 0.0, 0.0, 1.0])
    values = _column([0.5, 1.0, 2.0, 0.0])
    next_value = torch.tensor([4.0], dtype=torch.float64)
    dones = _column([False, True, False, True], torch.bool)
    terminated = _column([False, False, False, True], torch.bool)
    advantages, returns = compute_gae(rewards, values, next_value, terminated, dones, 0.5, 1.0)
    # by hand, gamma = 0.5, lambda = 1:
    # d3 = 1 + 0 - 0 = 1 (terminated: no bootstrap from 4)      A3 = 1
    # d2 = 0 + 0.5 * 0 - 2 = -2                                  A2 = -2 + 0.5 * 1 = -1.5
    # d1 = 0 + 0.5 * 2 - 1 = 0 (truncated: bootstraps from V=2)  A1 = 0 (episode ends)
    # d0 = 1 + 0.5 * 1 - 0.5 = 1                                 A0 = 1 + 0.5 * 0 = 1
    assert advantages.squeeze(1).tolist() == pytest.approx([1.0, 0.0, -1.5, 1.0])
    assert returns.squeeze(1).tolist() == pytest.approx([1.5, 1.0, 0.5, 1.0])

    # the same step 1 as a termination: no bootstrap, d1 = -1, A0 = 1 + 0.5 * -1 = 0.5
    terminated[1] = True
    advantages, _ = compute_gae(rewards, values, next_value, terminated, dones, 0.5, 1.0)
    assert advantages.squeeze(1).tolist() == pytest.approx([0.5, -1.0, -1.5, 1.0])


def test_chunk_end_bootstraps_from_next_value_with_lambda():
    rewards = _column([0.0, 1.0])
    values = _column([1.0, 2.0])
    next_value = torch.tensor([3.0], dtype=torch.float64)
    dones = _column([False, False], torch.bool)
    advantages, _ = compute_gae(rewards, values, next_value, dones, dones, 0.5, 0.5)
    # d1 = 1 + 0.5 * 3 - 2 = 0.5; d0 = 0 + 0.5 * 2 - 1 = 0; A0 = 0 + 0.25 * 0.5 = 0.125
    assert advantages.squeeze(1).tolist() == pytest.approx([0.125, 0.5])


@pytest.mark.parametrize(
    ("steps", "gamma", "lam"), [(64, 0.99, 0.95), (3000, 0.6, 0.6), (10, 1.0, 1.0), (5, 0.9, 0.0)]
)
def test_matches_the_backward_recursion(steps, gamma, lam):
    """The loop-free form equals the textbook recursion, long chunks (several blocks) included."""
    generator = torch.Generator().manual_seed(steps)
    n = 6
    rewards = torch.randn(steps, n, generator=generator, dtype=torch.float64)
    values = torch.randn(steps, n, generator=generator, dtype=torch.float64)
    next_value = torch.randn(n, generator=generator, dtype=torch.float64)
    dones = torch.rand(steps, n, generator=generator) < 0.1
    terminated = dones & (torch.rand(steps, n, generator=generator) < 0.5)
    expected = torch.zeros_like(rewards)
    last = torch.zeros(n, dtype=torch.float64)
    for t in reversed(range(steps)):
        following = next_value if t == steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * (~terminated[t]).double() - values[t]
        last = delta + gamma * lam * (~dones[t]).double() * last
        expected[t] = last
    advantages, _ = compute_gae(rewards, values, next_value, terminated, dones, gamma, lam)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-9)
