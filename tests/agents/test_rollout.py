"""Rollout collection under NEXT_STEP autoreset, on a counter env whose every step is known."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.config import MemoryConfig
from agents.policy import ActorCritic
from agents.rollout import RolloutCollector
from agents.vec import TorchVectorEnv


class CounterEnv(gym.Env):
    """Observation = steps taken; reward 1 per step; ends after `length` steps."""

    def __init__(self, length: int, terminate: bool) -> None:
        self.length, self.terminate = length, terminate
        self.observation_space = spaces.Box(0, 100, (1,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.count += 1
        over = self.count >= self.length
        info = {"success": True} if over else {}
        obs = np.array([self.count], np.float32)
        return obs, 1.0, over and self.terminate, over and not self.terminate, info


def test_reset_steps_episode_starts_and_stats():
    envs = gym.vector.SyncVectorEnv(
        [lambda: CounterEnv(3, terminate=True), lambda: CounterEnv(2, terminate=False)]
    )
    env = TorchVectorEnv(envs, torch.device("cpu"))
    policy = ActorCritic(env.obs_spaces, 2, MemoryConfig(kind="none", width=8))
    collector = RolloutCollector(env, policy, num_steps=8, device=torch.device("cpu"), seed=0)
    rollout, stats = collector.collect(gamma=0.9, gae_lambda=1.0)

    # env 0: episodes of 3 steps then a reset step: inputs 0 1 2 3 | 0 1 2 3
    assert rollout.obs["obs"][:, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert rollout.valid[:, 0].tolist() == [True, True, True, False] * 2
    assert rollout.episode_starts[:, 0].tolist() == [True, False, False, False] * 2
    assert rollout.terminated[:, 0].tolist() == [False, False, True, False] * 2
    assert rollout.rewards[:, 0].tolist() == [1, 1, 1, 0] * 2
    # env 1: 2-step episodes, truncated: inputs 0 1 2 | 0 1 2 | 0 1
    assert rollout.obs["obs"][:, 1, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert rollout.valid[:, 1].tolist() == [True, True, False] * 2 + [True, True]
    assert rollout.episode_starts[:, 1].tolist() == [True, False, False] * 2 + [True, False]
    assert rollout.dones[:, 1].tolist() == [False, True, False] * 2 + [False, True]
    assert not rollout.terminated[:, 1].any()

    # truncation at t=1 bootstraps from the value of the final observation (the reset step's input)
    values = rollout.values[:, 1]
    assert torch.isclose(rollout.advantages[1, 1], 1 + 0.9 * values[2] - values[1])
    # termination at t=2 of env 0 does not
    assert torch.isclose(rollout.advantages[2, 0], 1 - rollout.values[2, 0])

    # env 0 ended 2 episodes of return 3, env 1 three of return 2; all reported success
    assert stats.episodes == 5
    assert stats.return_sum == 2 * 3 + 3 * 2
    assert stats.length_sum == 2 * 3 + 3 * 2
    assert (stats.success_count, stats.success_sum) == (5, 5)


class GoalOnTheLastStep(CounterEnv):
    """Ends terminated and truncated at once: the goal reached on the time limit's step."""

    def step(self, action):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, terminated, info


def test_termination_wins_when_truncation_comes_on_the_same_step():
    envs = gym.vector.SyncVectorEnv([lambda: GoalOnTheLastStep(2, terminate=True)])
    env = TorchVectorEnv(envs, torch.device("cpu"))
    policy = ActorCritic(env.obs_spaces, 2, MemoryConfig(kind="none", width=8))
    collector = RolloutCollector(env, policy, num_steps=6, device=torch.device("cpu"), seed=0)
    rollout, _ = collector.collect(gamma=0.9, gae_lambda=1.0)
    assert rollout.terminated[:, 0].tolist() == [False, True, False] * 2
    assert rollout.dones[:, 0].tolist() == [False, True, False] * 2
    # no bootstrap from the final observation: the episode is over
    assert torch.isclose(rollout.advantages[1, 0], 1 - rollout.values[1, 0])


def test_memory_carries_across_chunks():
    envs = gym.vector.SyncVectorEnv([lambda: CounterEnv(5, terminate=True)])
    env = TorchVectorEnv(envs, torch.device("cpu"))
    policy = ActorCritic(env.obs_spaces, 2, MemoryConfig(kind="none", width=8))
    collector = RolloutCollector(env, policy, num_steps=4, device=torch.device("cpu"), seed=0)
    first, _ = collector.collect(0.9, 0.95)
    second, _ = collector.collect(0.9, 0.95)
    assert first.obs["obs"][:, 0, 0].tolist() == [0, 1, 2, 3]
    # the second chunk continues the episode: no episode start at its first step
    assert second.obs["obs"][:, 0, 0].tolist() == [4, 5, 0, 1]
    assert second.episode_starts[:, 0].tolist() == [False, False, True, False]
    assert second.valid[:, 0].tolist() == [True, False, True, True]


def test_last_level_stats_count_episodes_by_the_level_they_were_drawn_at():
    """A twin with a length curriculum: episodes under way when the level is raised to the
    last one end at their old level and stay out of the ``last_level_*`` sums."""
    from envs.corridor import CorridorVectorEnv

    twin = CorridorVectorEnv(16, length=20, curriculum_start=10, curriculum_episodes=10_000)
    env = TorchVectorEnv(twin, torch.device("cpu"))
    assert env.curriculum_last_level == 20
    policy = ActorCritic(env.obs_spaces, 3, MemoryConfig(kind="none", width=8))
    collector = RolloutCollector(env, policy, num_steps=64, device=torch.device("cpu"), seed=0)
    _, before = collector.collect(0.99, 0.95)
    assert before.episodes > 0 and before.last_level_episodes == 0
    env.curriculum_level = 20  # episodes drawn from now on are at the last level
    stats = [collector.collect(0.99, 0.95)[1] for _ in range(4)]
    first, last = stats[0], stats[-1]
    assert first.episodes > 0 and first.last_level_episodes < first.episodes  # old ones end
    # Level-10 episodes last at most 4 * 10 + 20 = 60 steps: after a chunk of 64, all new.
    assert last.episodes > 0 and last.last_level_episodes == last.episodes
    assert last.last_level_return_sum == pytest.approx(last.return_sum)
    assert last.last_level_success_count == last.success_count == last.episodes
    assert last.last_level_success_sum == last.success_sum


def test_no_last_level_stats_without_a_curriculum():
    envs = gym.vector.SyncVectorEnv([lambda: CounterEnv(3, terminate=True)])
    env = TorchVectorEnv(envs, torch.device("cpu"))
    assert env.curriculum_last_level is None
    policy = ActorCritic(env.obs_spaces, 2, MemoryConfig(kind="none", width=8))
    collector = RolloutCollector(env, policy, num_steps=8, device=torch.device("cpu"), seed=0)
    _, stats = collector.collect(0.99, 0.95)
    assert stats.episodes == 2 and stats.last_level_episodes == 0
