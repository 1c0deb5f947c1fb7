"""`PreviousActionReward`: the previous action and reward as observations, one env at a time.

Lethe's learner adds these entries to a whole batch with ``--previous-action-reward``
(`agents.vec.TorchVectorEnv`); this wrapper gives the same entries to learners that step
single Gymnasium envs, such as Stable-Baselines3's, so that baselines see what Lethe's agents
see::

    import gymnasium as gym
    from gymnasium.wrappers import FlattenObservation
    from envs.wrappers import PreviousActionReward

    env = PreviousActionReward(FlattenObservation(gym.make("Lethe/Portal-v0")))
    # observation: {"obs": [27] uint8, "prev_action": Discrete(4), "prev_reward": [1] float32}
    # (SB3's MultiInputLstmPolicy; flattened first, since SB3 reads a 3-D uint8 box as an
    # image for its CNN, which a 3 x 3 view is too small for)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PREVIOUS_KEYS = ("prev_action", "prev_reward")
"""The observation entries added: ``prev_action`` (0 at an episode's first observation, else
the action taken plus 1) and ``prev_reward`` (``[1]``, the reward as the env gave it; 0 at an
episode's first observation)."""


def with_previous_spaces(
    entries: Mapping[str, spaces.Space], action_space: spaces.Discrete
) -> dict[str, spaces.Space]:
    """``entries`` (observation spaces by key) plus those of `PREVIOUS_KEYS` for an env with
    ``action_space``; a one-line ``ValueError`` if the env already observes one of them."""
    taken = [key for key in PREVIOUS_KEYS if key in entries]
    if taken:
        raise ValueError(
            f"the env already observes {taken[0]!r}; allowed: an env without "
            f"{' and '.join(PREVIOUS_KEYS)}"
        )
    return {
        **entries,
        "prev_action": spaces.Discrete(int(action_space.n) + 1),  # 0: an episode's first step
        "prev_reward": spaces.Box(-np.inf, np.inf, (1,), np.float32),
    }


class PreviousActionReward(gym.Wrapper):
    """Adds `PREVIOUS_KEYS` to each observation of an env with ``Discrete`` actions.

    A ``Dict`` observation keeps its entries; any other becomes the ``"obs"`` entry.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        action_space = env.action_space
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"PreviousActionReward: action space {action_space} is not supported; "
                "allowed: Discrete"
            )
        base = env.observation_space
        entries = dict(base.spaces) if isinstance(base, spaces.Dict) else {"obs": base}
        try:
            self.observation_space = spaces.Dict(with_previous_spaces(entries, action_space))
        except ValueError as error:
            raise ValueError(f"PreviousActionReward: {error}") from None
        self._start = int(action_space.start)

    def _observe(self, obs: Any, action: int, reward: float) -> dict[str, Any]:
        entries = dict(obs) if isinstance(obs, dict) else {"obs": obs}
        entries["prev_action"] = np.int64(action)
        entries["prev_reward"] = np.array([reward], np.float32)
        return entries

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs, 0, 0.0), info

    def step(self, action: Any) -> tuple[dict[str, Any], Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        taken = int(np.asarray(action)) - self._start + 1
        return self._observe(obs, taken, float(reward)), reward, terminated, truncated, info
