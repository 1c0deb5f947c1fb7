"""The curricula (the Corridor's lengths, the Portal's rooms): the same rule in both
implementations, on the device."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from envs.corridor import (
    CorridorEnv,
    CorridorVectorEnv,
    curriculum_bounds,
    next_curriculum_level,
    previous_curriculum_level,
)
from envs.portal import PortalEnv, PortalVectorEnv
from envs.reference import BatchedPortalOracle, corridor_oracle_action, corridor_oracle_actions


def test_each_curriculum_id_is_its_task_plus_a_curriculum():
    from envs import CURRICULUM_TASKS, REGISTERED_IDS, task_of

    for curriculum_id, task_id in CURRICULUM_TASKS.items():
        (entry, curriculum_kwargs), (task_entry, task_kwargs) = (
            REGISTERED_IDS[curriculum_id],
            REGISTERED_IDS[task_id],
        )
        assert entry == task_entry and "curriculum_start" not in task_kwargs
        assert {k: v for k, v in curriculum_kwargs.items() if k != "curriculum_start"} == (
            task_kwargs
        )
        assert task_of(curriculum_id) == task_id and task_of(task_id) == task_id
    # Corridor-v0's curriculum ends on Corridor-v0's own lengths, 5 to 50.
    env = gymnasium.make("Lethe/Corridor-Curriculum-v0").unwrapped
    assert curriculum_bounds(env.max_length, env.min_length) == (5, 50)


def test_bounds_and_growth_by_hand():
    # [min(min_length, ceil(level / 2)), level], the last level too.
    assert curriculum_bounds(10, 100) == (5, 10)
    assert curriculum_bounds(13, 100) == (7, 13)
    assert curriculum_bounds(40, 5) == (5, 40)
    assert curriculum_bounds(100, 100) == (50, 100)
    assert curriculum_bounds(50, 5) == (5, 50)
    levels = [10]
    while levels[-1] < 100:
        levels.append(next_curriculum_level(levels[-1], 100))
    assert levels == [10, 13, 17, 22, 28, 35, 44, 55, 69, 87, 100]
    level = torch.tensor(87)
    assert int(next_curriculum_level(level, 100)) == 100
    # A retreat: floor(level * 4 / 5), not below the start.
    assert [previous_curriculum_level(v, 10) for v in (28, 22, 17, 13, 10)] == [22, 17, 13, 10, 10]
    assert int(previous_curriculum_level(torch.tensor(12), 10)) == 10
    low, high = curriculum_bounds(torch.tensor(13), 100)
    assert (int(low), int(high)) == (7, 13)
    assert int(curriculum_bounds(torch.tensor(100), 100)[0]) == 50
    assert int(curriculum_bounds(torch.tensor(40), 5)[0]) == 5


def run_minigrid(env: CorridorEnv, episodes: int, oracle: bool, seed: int = 0):
    """Play whole episodes; returns (level when each episode was drawn, its length)."""
    rng = np.random.default_rng(seed)
    drawn = []
    env.reset(seed=seed)
    for _ in range(episodes):
        drawn.append((env.curriculum_level, env.length))
        done = False
        while not done:
            action = corridor_oracle_action(env) if oracle else int(rng.integers(3))
            _, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        env.reset()
    return drawn


def test_minigrid_advances_on_success_and_draws_within_the_level():
    env = CorridorEnv(length=100, curriculum_start=10, curriculum_episodes=4)
    drawn = run_minigrid(env, 45, oracle=True)
    levels = [level for level, _ in drawn]
    # Every 4 episodes at a level, all successful: the next level.
    assert levels[:12] == [10] * 4 + [13] * 4 + [17] * 4
    assert levels[-1] == 100 and env.curriculum_level == 100
    for level, length in drawn:
        low, high = curriculum_bounds(level, 100)
        assert low <= length <= high, (level, length)


def test_minigrid_stays_below_the_success_threshold():
    # A random walker succeeds rarely (truncations count as failures): the level stays.
    env = CorridorEnv(length=100, curriculum_start=10, curriculum_episodes=4)
    drawn = run_minigrid(env, 24, oracle=False, seed=3)
    assert {level for level, _ in drawn} == {10}


def test_minigrid_retreats_after_failing_blocks_and_stays_between_the_thresholds():
    env = CorridorEnv(length=100, curriculum_start=10, curriculum_episodes=4)
    env.curriculum_level = 28  # as if a trained agent had lost what it kept
    levels = [level for level, _ in run_minigrid(env, 24, oracle=False, seed=3)]
    assert levels[0] == 28 and levels[-1] == 10
    assert sorted(set(levels), reverse=True) == [28, 22, 17, 13, 10]
    # Between the thresholds (here: never below 0.0, never at 0.9) the level holds.
    still = CorridorEnv(
        length=100, curriculum_start=10, curriculum_episodes=4, curriculum_retreat=0.0
    )
    still.curriculum_level = 28
    assert {level for level, _ in run_minigrid(still, 12, oracle=False, seed=3)} == {28}


def test_twin_retreats_like_minigrid():
    twin = CorridorVectorEnv(32, length=100, curriculum_start=10, curriculum_episodes=32)
    twin.curriculum_level = torch.tensor(28)
    twin.reset(seed=0)
    levels = {28}
    for _ in range(3000):
        twin.step(torch.randint(0, 3, (32,)))
        levels.add(int(twin.curriculum_level))
    assert int(twin.curriculum_level) == 10 and levels == {28, 22, 17, 13, 10}


def test_twin_follows_the_same_rule_as_minigrid():
    """One twin env and one MiniGrid env, both with the oracle: the same level sequence."""
    single = CorridorEnv(length=100, curriculum_start=10, curriculum_episodes=3)
    single_levels = [level for level, _ in run_minigrid(single, 40, oracle=True)]
    twin = CorridorVectorEnv(1, length=100, curriculum_start=10, curriculum_episodes=3)
    twin.reset(seed=0)
    twin_levels = [int(twin.curriculum_level)]
    while len(twin_levels) < 40:
        *_, terminated, truncated, _ = twin.step(corridor_oracle_actions(twin))
        if bool(terminated | truncated):
            twin.step(torch.zeros(1, dtype=torch.long))  # NEXT_STEP: this step resets
            twin_levels.append(int(twin.curriculum_level))
    assert twin_levels == single_levels


def test_twin_counts_all_envs_and_only_episodes_of_the_current_level():
    twin = CorridorVectorEnv(64, length=100, curriculum_start=10, curriculum_episodes=64)
    twin.reset(seed=1)
    seen = {}
    for _ in range(3000):
        level = int(twin.curriculum_level)
        fresh = twin.step_count == 0
        if bool(fresh.any()):
            lengths = twin.length[fresh]
            # episodes drawn after a level change use the new bounds (or the old ones, for
            # envs reset on the step that advanced it)
            seen.setdefault(level, []).append(lengths)
        twin.step(corridor_oracle_actions(twin))
    assert int(twin.curriculum_level) == 100
    assert sorted(seen)[:3] == [10, 13, 17]
    first = torch.cat(seen[10])
    assert int(first.min()) >= 5 and int(first.max()) <= 10 and len(first.unique()) == 6
    final = torch.cat(seen[100])
    assert int(final.min()) >= 50 and int(final.max()) == 100


def test_twin_episodes_report_the_level_they_were_drawn_at():
    """An episode under way when the level rises ends at its old level, and says so: what
    the learner's "last level" figures count by (`agents.rollout`)."""
    twin = CorridorVectorEnv(64, length=100, curriculum_start=10, curriculum_episodes=64)
    assert twin.curriculum_last == 100
    twin.reset(seed=1)
    drawn_at = torch.full((64,), 10)
    reported, behind = 0, 0
    for _ in range(1500):
        level = twin.curriculum_level.clone()  # what this step's resets draw at
        _, _, terminated, truncated, info = twin.step(corridor_oracle_actions(twin))
        done = terminated | truncated
        assert torch.equal(info["_curriculum_level"], done)
        assert torch.equal(info["curriculum_level"][done], drawn_at[done])
        reported += int(done.sum())
        behind += int((info["curriculum_level"][done] < twin.curriculum_level).sum())
        fresh = twin.step_count == 0  # reset on this step (NEXT_STEP)
        drawn_at = torch.where(fresh, level, drawn_at)
    assert int(twin.curriculum_level) == 100 and reported > 1000
    assert behind > 0  # some did end after the level had moved on


def test_minigrid_episodes_report_the_level_they_were_drawn_at():
    env = CorridorEnv(length=100, curriculum_start=10, curriculum_episodes=2)
    assert env.curriculum_last == 100
    env.reset(seed=0)
    levels = []
    for _ in range(12):
        drawn, done = env.curriculum_level, False
        while not done:
            _, _, terminated, truncated, info = env.step(corridor_oracle_action(env))
            done = terminated or truncated
        assert info["curriculum_level"] == drawn
        levels.append(drawn)
        env.reset()
    assert levels[-1] > levels[0]
    plain = CorridorEnv(length=20)
    plain.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = plain.step(corridor_oracle_action(plain))
        done = terminated or truncated
    assert "curriculum_level" not in info and plain.curriculum_last == 20


def test_twin_without_a_curriculum_is_unchanged():
    plain, zero = CorridorVectorEnv(8, min_length=5, max_length=50), CorridorVectorEnv(8)
    assert not plain.curriculum and int(plain.curriculum_level) == 50
    plain.reset(seed=4)
    zero.reset(seed=4)
    assert torch.equal(plain.length, zero.length)


def test_registered_curriculum_ids():
    for env_id, final in (
        ("Lethe/Corridor-L100-Curriculum-v0", 100),
        ("Lethe/Corridor-L1000-Curriculum-v0", 1000),
    ):
        single = gymnasium.make(env_id).unwrapped
        assert single.curriculum and single.curriculum_level == 10
        assert single.max_length == final
        twin = gymnasium.make_vec(env_id, num_envs=16, vectorization_mode="vector_entry_point")
        twin.reset(seed=0)
        assert int(twin.length.min()) >= 5 and int(twin.length.max()) <= 10


@pytest.mark.parametrize("cls", [CorridorEnv, CorridorVectorEnv])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curriculum_start": 0}, r"curriculum_start=0 .*\[1, max_length=100\]"),
        ({"curriculum_start": 101}, r"curriculum_start=101 .*\[1, max_length=100\]"),
        ({"curriculum_start": 10, "curriculum_episodes": 0}, r"curriculum_episodes=0 .*>= 1"),
        ({"curriculum_start": 10, "curriculum_success": 1.5}, r"curriculum_success=1.5 .*\(0, 1\]"),
        (
            {"curriculum_start": 10, "curriculum_retreat": 0.95},
            r"curriculum_retreat=0.95 .*\[0, curriculum_success=0.9\)",
        ),
    ],
)
def test_bad_curriculum_arguments(cls, kwargs, message):
    args = (4,) if cls is CorridorVectorEnv else ()
    with pytest.raises(ValueError, match=message):
        cls(*args, length=100, **kwargs)


# ---- the Portal's room curriculum ----------------------------------------------------------
ROOMS = dict(num_rooms=3, hallway_length=0, max_steps=100)
EPISODE = ROOMS["max_steps"] + 1  # twin steps per episode: its steps, then the reset step
# From the entry of room 0 (facing east) into room 0's north portal.
TO_NORTH_PORTAL = [2, 2, 0, 2, 1, 2]


def test_portal_trial_ends_at_the_level_s_last_room():
    for start, reward, position in ((1, 1.0, (1, 2)), (None, 0.0, (5, 2))):
        env = PortalEnv(**ROOMS, curriculum_start=start)
        env.reset(seed=0, options={"correct_sides": [0, 1, 1]})
        for action in TO_NORTH_PORTAL:
            _, got, *_ = env.step(action)
        # At level 1 room 0's correct portal completes the trial and leads back to room 0;
        # without a curriculum it leads on to room 1's doorway.
        assert got == reward and tuple(env.agent_pos) == position and env.trials == reward


def test_portal_levels_rise_with_the_oracle_and_fall_with_a_random_walk():
    twin = PortalVectorEnv(16, **ROOMS, curriculum_start=1, curriculum_episodes=16)
    twin.reset(seed=0)
    oracle = BatchedPortalOracle(twin)
    levels = [int(twin.curriculum_level)]
    for _ in range(EPISODE * 4):  # four blocks of 16 episodes
        _, _, terminated, truncated, info = twin.step(oracle.act(twin))
        oracle.observe(info, terminated | truncated)
        levels.append(int(twin.curriculum_level))
    assert sorted(set(levels)) == [1, 2, 3] and levels[-1] == 3  # never past num_rooms
    for _ in range(EPISODE * 2):  # turning on the spot: no trial, one room less per block
        twin.step(torch.zeros(16, dtype=torch.long))
    assert int(twin.curriculum_level) == 1


def test_portal_twin_follows_the_room_curriculum_like_minigrid(lockstep):
    """One twin env and one MiniGrid env, the same actions and layouts: every output equal
    while the level moves (a trial at the level's last room returns to room 0)."""
    kwargs = dict(
        **ROOMS,
        curriculum_start=1,
        curriculum_episodes=2,
        curriculum_success=0.5,
        curriculum_retreat=0.25,
        curriculum_trials=1,
    )
    levels = []

    class Recorded(PortalVectorEnv):
        def step(self, actions):
            out = super().step(actions)
            levels.append(int(self.curriculum_level))
            return out

    twin, singles = Recorded(1, **kwargs), []

    def make_single():
        singles.append(PortalEnv(**kwargs))
        return singles[-1]

    def draw(rng):
        return {"correct_sides": rng.integers(0, 2, 3)}

    rng = np.random.default_rng(5)
    lockstep(make_single, twin, draw, 1500, rng, action_probs=[0.15, 0.15, 0.7])
    assert singles[0].curriculum_level == levels[-1]
    changes = sum(a != b for a, b in zip(levels, levels[1:], strict=False))
    assert {1, 2} <= set(levels) and changes >= 2, levels  # up and down while in lockstep


@pytest.mark.parametrize("cls", [PortalEnv, PortalVectorEnv])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"curriculum_start": 5}, r"curriculum_start=5 .*\[1, num_rooms=4\]"),
        ({"curriculum_start": 1, "curriculum_trials": 0}, r"curriculum_trials=0 .*>= 1"),
        ({"curriculum_start": 1, "curriculum_success": 0}, r"curriculum_success=0 .*\(0, 1\]"),
    ],
)
def test_bad_room_curriculum_arguments(cls, kwargs, message):
    args = (4,) if cls is PortalVectorEnv else ()
    with pytest.raises(ValueError, match=message):
        cls(*args, num_rooms=4, **kwargs)


# ---- the rule itself, at its thresholds, in both implementations ---------------------------
def _rule_state(level: int, batched: bool, num_envs: int = 2):
    """A bare holder of the curriculum's state (4-episode blocks, advance at >= 0.75, retreat
    below 0.5, start 2), as `init_curriculum` and `init_batched_counts` set it on an env."""
    from types import SimpleNamespace

    from envs.curriculum import init_batched_counts, init_curriculum

    env = SimpleNamespace()
    init_curriculum(env, 2, 4, 0.75, 0.5, 9, "max_level")
    if batched:
        init_batched_counts(env, level, num_envs, torch.device("cpu"))
    else:
        env.curriculum_level = level
    return env


# (level each ending episode was drawn at, success), blocks of 4 at the current level. At 5:
# 3 of 4, exactly the success threshold: up to 6; two episodes drawn at 5 end after the rise
# and do not count. At 6: 2 of 4, exactly the retreat threshold: holds; then 1 of 4: back to
# 5. Then 0 of 4 at 5, 4 and 3: down to 2, the start; 0 of 4 at 2: stays there.
RULE_STREAM = (
    [(5, True)] * 3
    + [(5, False)]
    + [(5, False), (5, False)]
    + [(6, True)] * 2
    + [(6, False)] * 2
    + [(6, True)]
    + [(6, False)] * 3
    + [(5, False)] * 4
    + [(4, False)] * 4
    + [(3, False)] * 4
    + [(2, False)] * 4
)
RULE_LEVELS = [5] * 3 + [6] * 10 + [5] * 4 + [4] * 4 + [3] * 4 + [2] * 5


def _steps(env):
    def grow(level):
        return (level + 1).clamp(max=9) if isinstance(level, torch.Tensor) else min(level + 1, 9)

    def shrink(level):
        start = env.curriculum_start
        return (
            (level - 1).clamp(min=start)
            if isinstance(level, torch.Tensor)
            else max(level - 1, start)
        )

    return grow, shrink


def test_the_rule_at_its_thresholds_minigrid():
    from envs.curriculum import count_episode

    env, levels = _rule_state(5, batched=False), []
    for drawn_at, success in RULE_STREAM:
        env._episode_level = drawn_at
        info = {}
        count_episode(env, info, success, *_steps(env))
        assert info["curriculum_level"] == drawn_at
        levels.append(env.curriculum_level)
    assert levels == RULE_LEVELS


def test_the_rule_at_its_thresholds_twin():
    """The same stream through `count_episodes`: each episode ends in env 1 while env 0,
    drawn at level 1, runs on (not done: never counted)."""
    from envs.curriculum import count_episodes

    env, levels = _rule_state(5, batched=True), []
    done = torch.tensor([False, True])
    for drawn_at, success in RULE_STREAM:
        env._episode_level = torch.tensor([1, drawn_at])
        info = {}
        count_episodes(env, info, done, torch.tensor([True, success]), *_steps(env))
        assert info["curriculum_level"].tolist() == [1, drawn_at]
        assert info["_curriculum_level"].tolist() == [False, True]
        levels.append(int(env.curriculum_level))
    assert levels == RULE_LEVELS


def test_the_twin_skips_ending_episodes_of_an_earlier_level_in_the_same_step():
    """Four envs end together, two drawn at the current level (both succeed) and two at an
    earlier one (both fail): the block counts 2 of 2, not 2 of 4."""
    from envs.curriculum import count_episodes

    env = _rule_state(5, batched=True, num_envs=4)
    env._episode_level = torch.tensor([5, 4, 5, 4])
    done, success = torch.ones(4, dtype=torch.bool), torch.tensor([True, False, True, False])
    count_episodes(env, {}, done, success, *_steps(env))
    assert (int(env._level_episodes), int(env._level_successes)) == (2, 2)
    count_episodes(env, {}, done, success, *_steps(env))  # 4 of 4: up
    assert int(env.curriculum_level) == 6 and int(env._level_episodes) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: PortalEnv(**ROOMS, curriculum_start=2),
        lambda: PortalVectorEnv(4, **ROOMS, curriculum_start=2),
    ],
)
def test_portal_rooms_fall_no_lower_than_the_start_and_rise_no_higher_than_num_rooms(make):
    from envs.portal import _room_steps

    env = make()
    grow, shrink = _room_steps(env)
    as_level = (lambda n: torch.tensor(n)) if isinstance(env, PortalVectorEnv) else int
    assert [int(shrink(as_level(n))) for n in (3, 2)] == [2, 2]
    assert [int(grow(as_level(n))) for n in (2, 3)] == [3, 3]
