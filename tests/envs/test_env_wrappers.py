"""envs/wrappers.py: the previous action and reward, one env at a time, as the learner's batch."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation

from agents.vec import TorchVectorEnv
from envs.wrappers import PREVIOUS_KEYS, PreviousActionReward


def test_each_env_sees_what_the_learners_batch_adds() -> None:
    """Gymnasium's vector env of wrapped MiniGrid Corridors and `TorchVectorEnv` with
    ``previous_action_reward`` over the same unwrapped envs agree step for step, through
    episode ends (NEXT_STEP autoreset: the reset step's observation is a first one)."""

    def make(wrap: bool):  # noqa: ANN202
        def one() -> gym.Env:
            env = gym.make("Lethe/Corridor-S-v0", max_steps=12)
            return PreviousActionReward(env) if wrap else env

        return gym.vector.SyncVectorEnv([one] * 4)

    wrapped = make(True)
    batch = TorchVectorEnv(make(False), torch.device("cpu"), previous_action_reward=True)
    obs_w, _ = wrapped.reset(seed=3)
    obs_b, _ = batch.reset(seed=3)
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(60):
        for key in ("obs", *PREVIOUS_KEYS):
            np.testing.assert_array_equal(obs_w[key], obs_b[key].numpy())
        actions = rng.integers(0, 3, size=4)
        obs_w, reward_w, term_w, trunc_w, _ = wrapped.step(actions)
        obs_b, reward_b, term_b, trunc_b, _ = batch.step(torch.as_tensor(actions))
        np.testing.assert_array_equal(reward_w.astype(np.float32), reward_b.numpy())
        dones += int((term_w | trunc_w).sum())
    assert dones >= 4  # every env ended an episode (12-step limit) and restarted
    wrapped.close()
    batch.close()


def test_first_observation_then_the_action_and_reward_taken() -> None:
    env = PreviousActionReward(gym.make("Lethe/Corridor-S-v0"))
    assert env.observation_space["prev_action"] == spaces.Discrete(4)
    obs, _ = env.reset(seed=0)
    assert obs["prev_action"] == 0 and obs["prev_reward"].tolist() == [0.0]
    assert env.observation_space.contains(obs)
    while True:  # walk east: each new cell pays the progress reward
        obs, reward, terminated, truncated, _ = env.step(2)
        assert obs["prev_action"] == 3 and obs["prev_reward"].tolist() == [np.float32(reward)]
        assert env.observation_space.contains(obs)
        if reward == 0.0 or terminated or truncated:
            break


def test_stable_baselines3_accepts_the_wrapped_env() -> None:
    """SB3's env checker passes on the flattened, wrapped Portal (what the learning
    benchmark gives RecurrentPPO's ``MultiInputLstmPolicy``)."""
    from stable_baselines3.common.env_checker import check_env

    check_env(PreviousActionReward(FlattenObservation(gym.make("Lethe/Portal-v0"))))


def test_dict_observations_keep_their_entries() -> None:
    env = PreviousActionReward(gym.make("MiniGrid-Empty-5x5-v0"))
    assert {"image", "direction", "mission", *PREVIOUS_KEYS} == set(env.observation_space)
    obs, _ = env.reset(seed=0)
    assert {"image", "direction", "mission", *PREVIOUS_KEYS} == set(obs)


def test_what_it_cannot_wrap_is_named() -> None:
    with pytest.raises(ValueError, match="Box.*allowed: Discrete"):
        PreviousActionReward(gym.make("Pendulum-v1"))
    once = PreviousActionReward(gym.make("Lethe/Corridor-S-v0"))
    with pytest.raises(ValueError, match="already observes 'prev_action'"):
        PreviousActionReward(once)
