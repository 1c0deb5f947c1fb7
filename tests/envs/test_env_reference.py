"""Reference behaviour: oracle, random policy and memory oracle, against hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import events
from envs.corridor import CorridorEnv, CorridorVectorEnv
from envs.portal import PortalEnv, PortalVectorEnv
from envs.reference import (
    BatchedPortalOracle,
    PortalOracle,
    corridor_oracle_action,
    corridor_oracle_actions,
    random_actions,
)


@pytest.mark.parametrize("length", [1, 2, 5, 50, 100, 1000])
@pytest.mark.parametrize("cue", [0, 1])
def test_corridor_oracle_minigrid(length, cue):
    env = CorridorEnv(length=length)
    env.reset(seed=0, options={"cue": cue})
    total, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(corridor_oracle_action(env))
        total += reward
    # length steps east, one turn, one step into the arm; the walk earns progress_reward.
    assert terminated and info["success"] is True
    assert info["episode_length"] == length + 2
    assert total == pytest.approx(1.0 + 0.1)


def test_corridor_oracle_batched_every_length():
    lengths = torch.arange(1, 201)
    twin = CorridorVectorEnv(len(lengths), min_length=1, max_length=200)
    twin.reset(seed=0, options={"length": lengths, "cue": lengths % 2})
    done = torch.zeros(len(lengths), dtype=torch.bool)
    success = torch.zeros_like(done)
    episode_length = torch.zeros_like(lengths)
    for _ in range(202):
        _, _, terminated, truncated, info = twin.step(corridor_oracle_actions(twin))
        ended = (terminated | truncated) & ~done
        success |= ended & info["success"]
        episode_length = torch.where(ended, info["episode_length"], episode_length)
        done |= ended
    assert done.all() and success.all()
    assert torch.equal(episode_length, lengths + 2)


def test_random_policy_is_right_half_the_time_at_the_junction():
    twin = CorridorVectorEnv(1024, min_length=1, max_length=3)
    twin.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    arms = successes = 0
    for _ in range(300):
        _, _, terminated, _, info = twin.step(random_actions(twin, gen))
        arms += int(terminated.sum())
        successes += int((terminated & info["success"]).sum())
    assert arms > 3000  # enough episodes: the standard error of the rate is < 0.01
    assert abs(successes / arms - 0.5) < 0.04


@pytest.mark.parametrize("sides", [[0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1]])
def test_portal_memory_oracle_errs_only_in_the_first_trial(sides):
    env = PortalEnv(num_rooms=4, hallway_length=8, max_steps=400)
    oracle = PortalOracle()
    env.reset(seed=0, options={"correct_sides": sides})
    oracle.reset()
    trials_at_wrong = []
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(oracle.act(env))
        oracle.observe(info)
        if info["event"] == events.WRONG_PORTAL:
            trials_at_wrong.append(env.trials)
    # It tries north first, so it errs once per room whose correct portal is south.
    assert info["wrong_portals"] == sum(sides)
    assert trials_at_wrong == [0] * sum(sides)
    assert info["trials"] >= 3


def test_portal_oracle_on_the_hard_variant():
    env = PortalEnv(num_rooms=6, hallway_length=16, max_steps=1000)
    oracle = PortalOracle()
    rng = np.random.default_rng(0)
    sides = rng.integers(0, 2, 6).tolist()
    env.reset(seed=0, options={"correct_sides": sides})
    oracle.reset()
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(oracle.act(env))
        oracle.observe(info)
    assert info["wrong_portals"] == sum(sides) and info["trials"] >= 3


@pytest.mark.parametrize("sparse_reset", [True, False])
def test_batched_portal_memory_oracle_errs_only_in_the_first_trial(sparse_reset):
    """On the twin, over two episodes per env (auto-reset included): every wrong portal
    comes in trial 0, one per room whose correct portal is south (it tries north first),
    and every episode completes several trials."""
    n, max_steps = 64, 200
    twin = PortalVectorEnv(n, num_rooms=4, hallway_length=2, max_steps=max_steps)
    twin.sparse_reset = sparse_reset
    twin.reset(seed=0)
    oracle = BatchedPortalOracle(twin)
    episodes = 0
    for _ in range(2 * (max_steps + 1)):
        sides = twin.correct_sides.clone()  # this step's episode (reset happens next step)
        _, _, terminated, truncated, info = twin.step(oracle.act(twin))
        done = terminated | truncated
        oracle.observe(info, done)
        wrong = info["event"] == events.WRONG_PORTAL
        assert (twin.trials[wrong] == 0).all()
        assert torch.equal(info["wrong_portals"][done], sides.sum(1)[done])
        assert (info["trials"][done] >= 3).all()
        episodes += int(done.sum())
    assert episodes == 2 * n


def test_batched_portal_oracle_equals_the_minigrid_oracle():
    """Same actions as `PortalOracle` on `PortalEnv`, env by env, from the same layouts."""
    n = 8
    kwargs = dict(num_rooms=3, hallway_length=1, max_steps=60)
    sides = np.random.default_rng(0).integers(0, 2, (n, 3))
    twin = PortalVectorEnv(n, **kwargs)
    twin.reset(options={"correct_sides": sides})
    singles = [PortalEnv(**kwargs) for _ in range(n)]
    oracles = [PortalOracle() for _ in range(n)]
    for single, oracle, row in zip(singles, oracles, sides, strict=True):
        single.reset(seed=0, options={"correct_sides": row.tolist()})
        oracle.reset()
    batched = BatchedPortalOracle(twin)
    for _ in range(60):
        actions = batched.act(twin)
        expected = [oracle.act(single) for oracle, single in zip(oracles, singles, strict=True)]
        assert actions.tolist() == expected
        _, _, terminated, truncated, info = twin.step(actions)
        batched.observe(info, terminated | truncated)
        for i, (oracle, single) in enumerate(zip(oracles, singles, strict=True)):
            oracle.observe(single.step(expected[i])[4])
