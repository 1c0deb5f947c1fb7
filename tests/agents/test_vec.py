"""The learner's vector envs: keyword arguments for the env, the previous action and reward as
observations."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.config import ConfigError, MemoryConfig
from agents.policy import ActorCritic
from agents.vec import TorchVectorEnv, make_vector_env
from envs.wrappers import PREVIOUS_KEYS

CPU = torch.device("cpu")


class EchoEnv(gym.Env):
    """Reward ``10 * step + action``; the episode ends after `length` steps."""

    def __init__(
        self, length: int, terminate: bool, extra_key: str | None = None, start: int = 0
    ) -> None:
        self.length, self.terminate, self.extra_key = length, terminate, extra_key
        box = spaces.Box(0, 100, (1,), np.float32)
        self.observation_space = (
            spaces.Dict({"x": box, extra_key: spaces.Discrete(2)}) if extra_key else box
        )
        self.action_space = spaces.Discrete(3, start=start)

    def _obs(self):
        x = np.array([self.count], np.float32)
        return {"x": x, self.extra_key: 0} if self.extra_key else x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.count += 1
        over = self.count >= self.length
        reward = 10.0 * self.count + int(action)
        return self._obs(), reward, over and self.terminate, over and not self.terminate, {}


def test_previous_action_and_reward_of_a_gymnasium_vector_env():
    """Env 0 terminates after 2 steps, env 1 is truncated after 3; each done step is followed
    by a reset step whose action is ignored and whose output starts an episode: there the
    previous action and reward are 0 (none), elsewhere the action taken + 1 and its reward."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: EchoEnv(2, terminate=True), lambda: EchoEnv(3, terminate=False)]
    )
    env = TorchVectorEnv(envs, CPU, previous_action_reward=True)
    assert set(env.obs_spaces) == {"obs", *PREVIOUS_KEYS}
    assert env.obs_spaces["prev_action"] == spaces.Discrete(4)
    obs, _ = env.reset(seed=0)
    assert obs["prev_action"].tolist() == [0, 0]
    assert obs["prev_reward"].tolist() == [[0.0], [0.0]]
    seen_actions, seen_rewards = [], []
    for action in ([2, 1], [0, 2], [1, 0], [2, 2], [1, 1]):
        obs, reward, *_ = env.step(torch.tensor(action))
        seen_actions.append(obs["prev_action"].tolist())
        seen_rewards.append(obs["prev_reward"][:, 0].tolist())
        assert obs["prev_action"].dtype == torch.long
    # env 0: step, step (terminated), reset step, step, step; env 1: 3 steps, reset, step
    assert seen_actions == [[3, 2], [1, 3], [0, 1], [3, 0], [2, 2]]
    assert seen_rewards == [[12.0, 11.0], [20.0, 22.0], [0.0, 30.0], [12.0, 0.0], [21.0, 11.0]]
    env.close()


def test_actions_are_indices_into_a_discrete_space_with_a_start():
    """The policy samples indices 0 .. n-1; an env whose ``Discrete`` starts elsewhere gets
    them shifted by its start, and the previous action is the index + 1 as for any env."""
    envs = gym.vector.SyncVectorEnv([lambda: EchoEnv(5, terminate=True, start=-1)] * 2)
    env = TorchVectorEnv(envs, CPU, previous_action_reward=True)
    env.reset(seed=0)
    obs, reward, *_ = env.step(torch.tensor([0, 2]))
    assert reward.tolist() == [10.0 - 1, 10.0 + 1]  # the env saw -1 and 1
    assert obs["prev_action"].tolist() == [1, 3]
    env.close()


def test_previous_action_and_reward_of_a_batched_twin():
    """The Corridor twin walked east: the progress reward of each new cell is the previous
    reward; after the truncation (the corridor's east wall stops the walk) a fresh start."""
    env = make_vector_env("Lethe/Corridor-S-v0", 2, CPU, previous_action_reward=True)
    obs, _ = env.reset(seed=1)
    forward = torch.full((2,), 2)
    truncated_at = None
    for step in range(80):
        obs, reward, terminated, truncated, _ = env.step(forward)
        if truncated_at is not None:  # the reset step's output: a first observation
            assert obs["prev_action"][0] == 0 and obs["prev_reward"][0, 0] == 0.0
            break
        assert obs["prev_action"][0] == 3  # forward (2) + 1
        assert obs["prev_reward"][0, 0] == reward[0]
        assert not terminated.any()
        if truncated[0]:
            truncated_at = step
    assert truncated_at is not None
    assert obs["prev_action"].device == CPU
    env.close()


def test_without_the_option_nothing_is_added():
    env = make_vector_env("Lethe/Corridor-S-v0", 2, CPU)
    obs, _ = env.reset(seed=0)
    assert not set(PREVIOUS_KEYS) & set(obs)
    policy = ActorCritic(env.obs_spaces, 3, MemoryConfig(width=16, heads=2))
    assert not policy.reads_previous_action_reward
    env.close()


def test_a_policy_built_for_them_reads_them():
    env = make_vector_env("Lethe/Corridor-S-v0", 2, CPU, previous_action_reward=True)
    policy = ActorCritic(env.obs_spaces, 3, MemoryConfig(width=16, heads=2))
    assert policy.reads_previous_action_reward
    obs, _ = env.reset(seed=0)
    state = policy.initial_state(2, CPU)
    logits, _, _ = policy.step(obs, state, torch.ones(2, dtype=torch.bool))
    assert logits.shape == (2, 3)
    env.close()


def test_an_env_that_already_observes_the_keys_is_refused():
    envs = gym.vector.SyncVectorEnv([lambda: EchoEnv(2, True, extra_key="prev_reward")])
    with pytest.raises(ConfigError, match="already observes 'prev_reward'") as error:
        TorchVectorEnv(envs, CPU, previous_action_reward=True)
    assert "\n" not in str(error.value)
    envs.close()


@pytest.mark.parametrize("num_envs", [1, 3])  # sync, and async on a machine with more cores
def test_env_kwargs_reach_every_gymnasium_env(num_envs):
    env = make_vector_env("MiniGrid-MemoryS7-v0", num_envs, CPU, env_kwargs={"size": 11})
    try:
        assert env.env.get_attr("width") == (11,) * num_envs  # registered size: 7
    finally:
        env.close()


def test_env_kwargs_reach_the_batched_twin():
    env = make_vector_env("Lethe/Corridor-L100-v0", 2, CPU, env_kwargs={"slack_steps": 3})
    env.reset(seed=0)
    forward = torch.full((2,), 2, dtype=torch.long)  # MiniGrid's "forward"
    for step in range(1, 106):
        *_, truncated, _ = env.step(forward)
        assert bool(truncated.all()) == (step == 105), step  # 100 + 2 + 3: the wall stops it


@pytest.mark.parametrize(
    ("env_id", "kwargs", "needles"),
    [
        ("Lethe/Corridor-S-v0", {"lenght": 5}, ["Lethe/Corridor-S-v0", "lenght"]),
        ("Lethe/Corridor-S-v0", {"slack_steps": -1}, ["slack_steps=-1", "int >= 0"]),
        ("MiniGrid-MemoryS7-v0", {"colour": 1}, ["MiniGrid-MemoryS7-v0", "colour"]),
        # MiniGrid checks sizes with a bare assert (an AssertionError without a message)
        ("MiniGrid-MemoryS7-v0", {"size": 2}, ['{"size": 2}', "AssertionError"]),
    ],
)
def test_env_kwargs_the_env_refuses_are_one_line(env_id, kwargs, needles):
    with pytest.raises(ConfigError) as error:
        make_vector_env(env_id, 1, CPU, env_kwargs=kwargs)
    message = str(error.value)
    assert "\n" not in message and "refused the keyword arguments" in message
    for needle in needles:
        assert needle in message, message


def test_a_twin_registered_as_a_class_is_used():
    """``gymnasium.register(..., vector_entry_point=TheClass)``, the class itself rather than a
    ``"module:Class"`` string (as docs/new_environment.md registers its example), gives the
    batched twin too."""
    from envs.corridor import CorridorEnv, CorridorVectorEnv

    env_id = "LetheTest/ClassTwin-v0"
    gym.register(
        env_id,
        entry_point=CorridorEnv,
        vector_entry_point=CorridorVectorEnv,
        kwargs={"min_length": 5, "max_length": 10},
    )
    try:
        env = make_vector_env(env_id, 2, CPU, env_kwargs={"slack_steps": 2})
        env.reset(seed=0)
        assert isinstance(env.env, CorridorVectorEnv) and env.is_torch
        assert env.env.slack_steps == 2
        env.close()
    finally:
        del gym.registry[env_id]


@pytest.mark.parametrize(("key", "owner"), [("num_envs", "--num-envs"), ("device", "--device")])
def test_env_kwargs_the_learner_sets_are_refused_by_name(key, owner):
    with pytest.raises(ConfigError, match=f"'{key}' is not allowed: it is set by {owner}"):
        make_vector_env("Lethe/Corridor-S-v0", 1, CPU, env_kwargs={key: 2})


def test_rewards_come_as_float32_and_done_flags_as_bool():
    """A Gymnasium vector env's rewards are float64 numpy: on the device they are float32,
    the dtype of the values they are compared with in GAE."""
    envs = gym.vector.SyncVectorEnv([lambda: EchoEnv(2, terminate=True)] * 2)
    env = TorchVectorEnv(envs, CPU)
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(torch.tensor([0, 1]))
    assert reward.dtype == torch.float32 and reward.tolist() == [10.0, 11.0]
    assert terminated.dtype == truncated.dtype == torch.bool
    env.close()


def test_a_same_step_autoreset_vector_env_is_refused_in_one_line():
    """The rollout relies on NEXT_STEP (the step after a done step resets); SAME_STEP would
    silently mix the final observation with the next episode's first."""
    same_step = gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv(
        [lambda: EchoEnv(2, terminate=True)] * 2, autoreset_mode=same_step
    )
    with pytest.raises(ConfigError, match=r"autoreset mode .*SAME_STEP.* allowed: NEXT_STEP"):
        TorchVectorEnv(envs, CPU)
    envs.close()
