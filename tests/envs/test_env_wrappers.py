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


def test_reset_options_reach_the_wrapped_env() -> None:
    """A Corridor's ``cue`` reset option still picks the cue through the wrapper: the ball
    at the agent's left in the first view is green for cue 0 and red for cue 1."""
    env = PreviousActionReward(gym.make("Lethe/Corridor-S-v0"))
    for cue, colour in ((0, 1), (1, 0)):  # MiniGrid colour ids: green 1, red 0
        obs, _ = env.reset(seed=0, options={"cue": cue})
        assert obs["obs"][0, 2].tolist() == [6, colour, 0]  # a ball (type 6)


class _OffsetActions(gym.Env):
    """A one-state env whose actions are ``Discrete(3, start=-1)``: -1, 0, 1."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(3, start=-1)

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN202
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):  # noqa: ANN001, ANN202
        return np.zeros(1, np.float32), float(action), False, False, {}


def test_prev_action_is_the_action_index_plus_one_for_a_shifted_space() -> None:
    """With ``Discrete(3, start=-1)`` action -1 is index 0, so ``prev_action`` 1 (0 stays
    reserved for an episode's first observation) and action 1 gives 3."""
    env = PreviousActionReward(_OffsetActions())
    assert env.observation_space["prev_action"] == spaces.Discrete(4)
    env.reset(seed=0)
    for action, expected in ((-1, 1), (0, 2), (1, 3)):
        obs, *_ = env.step(action)
        assert obs["prev_action"] == expected
        assert env.observation_space.contains(obs)
