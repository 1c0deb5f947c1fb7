"""Rollout collection under NEXT_STEP autoreset, on a counter env whose every step is known."""

import gymnasium as gym
import numpy as np
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
