"""The batched twins equal their MiniGrid classes step for step, auto-reset included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import events
from envs.corridor import CorridorEnv, CorridorVectorEnv
from envs.portal import PortalEnv, PortalVectorEnv
from envs.reference import corridor_oracle_actions


@pytest.mark.parametrize("view", [3, 5])
def test_corridor_twin_equals_minigrid(lockstep, view):
    rng = np.random.default_rng(view)
    kwargs = dict(min_length=1, max_length=8, agent_view_size=view)
    twin = CorridorVectorEnv(32, **kwargs)

    def draw(rng):
        return {"length": int(rng.integers(1, 9)), "cue": int(rng.integers(2))}

    # Forward-heavy actions so that many episodes reach the junction and the arms.
    episodes, seen = lockstep(
        lambda: CorridorEnv(**kwargs), twin, draw, 250, rng, action_probs=[0.2, 0.2, 0.6]
    )
    assert episodes >= 200
    assert {events.CUE_VISIBLE, events.JUNCTION_REACHED, events.CORRECT_ARM} <= set(seen)
    assert events.WRONG_ARM in seen


def test_corridor_twin_equals_minigrid_fixed_max_steps(lockstep):
    rng = np.random.default_rng(1)
    kwargs = dict(min_length=2, max_length=5, max_steps=7, progress_reward=0.5)
    twin = CorridorVectorEnv(8, **kwargs)

    def draw(rng):
        return {"length": int(rng.integers(2, 6)), "cue": int(rng.integers(2))}

    episodes, _ = lockstep(lambda: CorridorEnv(**kwargs), twin, draw, 60, rng)
    assert episodes >= 8 * 60 // 8  # every episode lasts at most 7 steps + 1 reset step


def test_corridor_twin_equals_minigrid_with_a_step_slack(lockstep):
    """``slack_steps``: each episode may last its shortest length (``length + 2``) plus the
    slack; random walks hit that limit often, and both implementations cut them alike."""
    rng = np.random.default_rng(2)
    kwargs = dict(min_length=2, max_length=6, slack_steps=3)
    twin = CorridorVectorEnv(8, **kwargs)

    def draw(rng):
        return {"length": int(rng.integers(2, 7)), "cue": int(rng.integers(2))}

    episodes, _ = lockstep(lambda: CorridorEnv(**kwargs), twin, draw, 80, rng)
    assert episodes >= 8 * 80 // 12  # every episode lasts at most 6 + 2 + 3 steps + 1 reset


@pytest.mark.parametrize("view", [3, 7])
def test_portal_twin_equals_minigrid(lockstep, view):
    rng = np.random.default_rng(10 + view)
    kwargs = dict(num_rooms=3, hallway_length=1, max_steps=40, agent_view_size=view)
    twin = PortalVectorEnv(16, **kwargs)

    def draw(rng):
        return {"correct_sides": rng.integers(0, 2, 3)}

    episodes, seen = lockstep(
        lambda: PortalEnv(**kwargs), twin, draw, 200, rng, action_probs=[0.2, 0.2, 0.6]
    )
    assert episodes >= 16 * 4
    assert {events.CORRECT_PORTAL, events.WRONG_PORTAL} <= set(seen)


def test_twin_autoreset_is_next_step():
    """A corridor of length 1 facing east: forward reaches the junction, left turns north,
    forward enters the north arm (success with cue 0). The next step ignores its action and
    returns the new episode's first observation with reward 0 and both flags False."""
    twin = CorridorVectorEnv(2, min_length=1, max_length=3, progress_reward=0.0)
    first, _ = twin.reset(seed=0, options={"length": 1, "cue": [0, 1]})
    twin.set_next_layouts(length=[3, 3], cue=[1, 1])
    steps = [2, 0, 2]  # forward, left, forward
    for k, action in enumerate(steps):
        obs, reward, terminated, truncated, info = twin.step(torch.tensor([action, action]))
        assert not truncated.any()
        if k < 2:
            assert not terminated.any() and (reward == 0).all()
    assert terminated.tolist() == [True, True]
    assert reward.tolist() == [1.0, 0.0]  # env 1's cue named the south arm
    assert info["success"].tolist() == [True, False]
    assert info["_success"].tolist() == [True, True]
    assert info["episode_length"].tolist() == [3, 3]
    assert info["event"].tolist() == [events.CORRECT_ARM, events.WRONG_ARM]
    # Next step: the action (forward) is ignored, both envs start a length-3 episode.
    obs, reward, terminated, truncated, info = twin.step(torch.tensor([2, 2]))
    assert reward.tolist() == [0.0, 0.0]
    assert terminated.tolist() == [False, False] and truncated.tolist() == [False, False]
    assert info["_success"].tolist() == [False, False]
    assert (twin.grid.x == 1).all() and (twin.grid.dir == 0).all()  # start cell, facing east
    # The red cue ball (type 6, colour 0) is at the agent's left: view cell (0, 2).
    assert obs[:, 0, 2].tolist() == [[6, 0, 0], [6, 0, 0]]
    assert info["event"].tolist() == [events.CUE_VISIBLE] * 2
    # And the episode runs on: one step forward, nothing terminates.
    obs, reward, terminated, truncated, info = twin.step(torch.tensor([2, 2]))
    assert (twin.grid.x == 2).all() and not terminated.any()


@pytest.mark.parametrize("slack", [0, 4])
def test_step_slack_allows_the_shortest_episode_plus_the_slack(slack):
    """The twin: the oracle's walk (``length + 2`` steps) succeeds with no slack at all;
    standing still is truncated after exactly ``length + 2 + slack`` steps. The MiniGrid
    class sets the same limit (the lockstep test above compares the two step for step)."""
    lengths = torch.tensor([1, 3, 7])
    twin = CorridorVectorEnv(3, max_length=7, slack_steps=slack)
    twin.reset(seed=0, options={"length": lengths, "cue": torch.tensor([0, 1, 0])})
    done = torch.zeros(3, dtype=torch.bool)
    for _ in range(int(lengths.max()) + 2):
        _, _, terminated, truncated, info = twin.step(corridor_oracle_actions(twin))
        # (On the limit's last step MiniGrid sets both flags: entering the arm still counts.)
        assert not (truncated & ~terminated & ~done).any()
        assert info["success"][terminated & ~done].all()
        done |= terminated
    assert done.all()
    twin.reset(seed=0, options={"length": lengths})
    ended = torch.zeros(3, dtype=torch.long)
    for step in range(1, 20):
        _, _, _, truncated, _ = twin.step(torch.zeros(3, dtype=torch.long))  # turn left
        ended = torch.where(truncated & (ended == 0), step, ended)
    assert ended.tolist() == (lengths + 2 + slack).tolist()
    env = CorridorEnv(length=3, slack_steps=slack)
    env.reset(seed=0)
    assert env.max_steps == 3 + 2 + slack


def test_twin_truncates_at_max_steps_then_resets():
    twin = CorridorVectorEnv(3, length=5)  # max_steps = 4 * 5 + 20 = 40
    twin.reset(seed=3)
    for _ in range(39):
        _, _, terminated, truncated, _ = twin.step(torch.zeros(3, dtype=torch.long))
        assert not truncated.any() and not terminated.any()
    _, _, terminated, truncated, info = twin.step(torch.zeros(3, dtype=torch.long))
    assert truncated.all() and not terminated.any()
    assert info["episode_length"].tolist() == [40, 40, 40]
    assert info["success"].tolist() == [False, False, False]
    _, reward, _, truncated, _ = twin.step(torch.zeros(3, dtype=torch.long))
    assert not truncated.any() and (reward == 0).all() and (twin.step_count == 0).all()


def test_twin_seeding_is_deterministic():
    def rollout(seed):
        twin = CorridorVectorEnv(16, min_length=1, max_length=6)
        obs, _ = twin.reset(seed=seed)
        gen = torch.Generator().manual_seed(5)
        out = [obs]
        for _ in range(40):
            obs, reward, *_ = twin.step(torch.randint(0, 3, (16,), generator=gen))
            out += [obs, reward]
        return out

    a, b, c = rollout(1), rollout(1), rollout(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_twin_outputs_follow_the_contract():
    twin = PortalVectorEnv(5)
    obs, info = twin.reset(seed=0)
    assert obs.shape == (5, 3, 3, 3) and obs.dtype == torch.uint8
    obs, reward, terminated, truncated, info = twin.step(np.array([0, 1, 2, 2, 1]))
    assert reward.dtype == torch.float32 and reward.shape == (5,)
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert set(info) >= {"event", "_event", "trials", "_trials", "wrong_portals", "episode_length"}
    assert all(v.shape == (5,) for v in info.values())
    from gymnasium.vector import AutoresetMode

    assert twin.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP


@pytest.mark.parametrize(
    "make",
    [
        lambda: CorridorVectorEnv(48, min_length=1, max_length=6),
        lambda: CorridorVectorEnv(48, min_length=2, max_length=9, max_steps=11, agent_view_size=5),
        lambda: PortalVectorEnv(48, num_rooms=3, hallway_length=1, max_steps=30),
        lambda: CorridorVectorEnv(
            48,
            length=9,
            curriculum_start=2,
            curriculum_episodes=8,
            curriculum_success=0.3,
            curriculum_retreat=0.1,
        ),
        lambda: PortalVectorEnv(
            48,
            num_rooms=3,
            hallway_length=0,
            max_steps=30,
            curriculum_start=1,
            curriculum_episodes=8,
            curriculum_success=0.3,
            curriculum_retreat=0.1,
            curriculum_trials=1,
        ),
    ],
    ids=[
        "corridor",
        "corridor-fixed-max-steps-view5",
        "portal",
        "corridor-curriculum",
        "portal-curriculum",
    ],
)
def test_sparse_and_dense_reset_agree(make):
    """The CPU path (reset only the envs that finished, by index) and the sync-free path
    (``torch.where`` over all envs, used on CUDA) give the same outputs step for step, from
    the same seed, with drawn and injected layouts alike."""
    sparse, dense, injector = make(), make(), make()
    sparse.sparse_reset, dense.sparse_reset = True, False
    first = [env.reset(seed=7) for env in (sparse, dense)]
    assert torch.equal(first[0][0], first[1][0])
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.2, 0.2, 0.6])
    episodes, levels = 0, set()
    for step in range(150):
        actions = torch.multinomial(probs, 48, replacement=True, generator=gen)
        if step % 20 == 5:  # inject the next layouts (drawn from a third env's generator)
            options = injector._draw_layouts()
            sparse.set_next_layouts(**options)
            dense.set_next_layouts(**options)
        out_s, out_d = sparse.step(actions), dense.step(actions)
        for a, b in zip(out_s[:4], out_d[:4], strict=True):
            assert torch.equal(a, b), step
        assert out_s[4].keys() == out_d[4].keys()
        for key in out_s[4]:
            assert torch.equal(out_s[4][key], out_d[4][key]), (step, key)
        assert torch.equal(sparse.grid.pos, dense.grid.pos)
        assert torch.equal(sparse.grid.cells, dense.grid.cells)
        assert torch.equal(sparse.grid.passable, dense.grid.passable)
        if getattr(sparse, "curriculum", False):
            assert torch.equal(sparse.curriculum_level, dense.curriculum_level), step
            levels.add(int(sparse.curriculum_level))
        episodes += int(out_s[4]["_episode_length"].sum())
    assert episodes >= 48
    if getattr(sparse, "curriculum", False):  # the level moved while both paths agreed
        assert len(levels) >= 2, levels


@pytest.mark.parametrize("sparse_reset", [True, False])
def test_injected_layout_is_used_once_per_env(sparse_reset):
    """``set_next_layouts`` sets only the next episode of each env: the auto-reset after
    that one draws a fresh layout again (here: not every one of 16 envs gets length 1)."""
    twin = CorridorVectorEnv(16, min_length=1, max_length=9, max_steps=2)
    twin.sparse_reset = sparse_reset
    twin.reset(seed=0)
    twin.set_next_layouts(length=1, cue=0)
    turn = torch.zeros(16, dtype=torch.long)  # turn left: episodes truncate after 2 steps
    for _ in range(3):  # 2 steps, then the auto-reset step starts the injected episodes
        twin.step(turn)
    assert twin.length.tolist() == [1] * 16 and twin.cue.tolist() == [0] * 16
    for _ in range(3):  # the next auto-reset draws again
        twin.step(turn)
    assert len(set(twin.length.tolist())) > 1 and len(set(twin.cue.tolist())) == 2


def test_reset_after_an_episode_ended_clears_the_pending_auto_reset():
    """An episode ends, then the user calls ``reset()`` themselves: the next step acts with
    its action (moves forward, earns the progress reward) instead of resetting again."""
    twin = CorridorVectorEnv(2, max_length=5, max_steps=1)
    twin.reset(seed=0)
    _, _, _, truncated, _ = twin.step(torch.zeros(2, dtype=torch.long))
    assert truncated.all()  # both envs would auto-reset on the next step
    twin.reset(options={"length": 5, "cue": 0})
    _, reward, _, truncated, _ = twin.step(torch.full((2,), 2))  # forward
    assert (twin.grid.x == 2).all()  # moved one cell east of the start
    assert (reward > 0).all() and truncated.all()  # a real step: the 1-step limit ends it
