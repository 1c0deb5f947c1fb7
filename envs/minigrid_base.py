"""Base class of the MiniGrid implementations: image-only observations, three actions,
layout options, per-step events.

MiniGrid's own ``step`` knows seven actions and ends episodes on goals; Lethe tasks use
the first three actions and their own rules, so ``step`` is written here once, in the
same order as the batched twin's (``envs.grid.BatchedGridVectorEnv.step``): count the
step, move, apply the task's rules, truncate at ``max_steps``, observe.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import numpy as np
from gymnasium import spaces
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.minigrid_env import MiniGridEnv

from envs.grid import NUM_ACTIONS, check_view_size


class LetheMiniGridEnv(MiniGridEnv):
    """A ``MiniGridEnv`` whose observation is the encoded ``(V, V, 3)`` image alone.

    Views are computed with ``see_through_walls=True`` (no occlusion), as in the batched
    twin. Subclasses set ``layout_keys`` and implement ``_layout``,
    ``_task_step`` and optionally ``_observe_event``.
    """

    layout_keys: tuple[str, ...] = ()

    def __init__(
        self,
        width: int,
        height: int,
        max_steps: int,
        agent_view_size: int = 3,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_view_size(agent_view_size)
        super().__init__(
            mission_space=MissionSpace(mission_func=self._gen_mission),
            width=width,
            height=height,
            max_steps=max_steps,
            see_through_walls=True,
            agent_view_size=int(agent_view_size),
            render_mode=render_mode,
            **kwargs,
        )
        v = self.agent_view_size
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = spaces.Box(0, 255, (v, v, 3), np.uint8)
        self._options: dict[str, Any] = {}

    @staticmethod
    def _gen_mission() -> str:
        """MiniGrid's mission string (unused by the image-only observation)."""
        return "remember what you saw"

    # -- hooks --------------------------------------------------------------------------
    def _layout(self, options: dict[str, Any]) -> np.ndarray:
        """Draw this episode's choices (from ``options`` or ``self.np_random``), set the
        task state, ``agent_pos``, ``agent_dir``, ``max_steps``; return the ``[W, H, 3]``
        encoded layout."""
        raise NotImplementedError

    def _task_step(self, moved: bool) -> tuple[float, bool, int, dict[str, Any]]:
        """After the move: ``(reward, terminated, event, final_info)``."""
        raise NotImplementedError

    def _observe_event(self, image: np.ndarray) -> int:
        """Event code read from the observation (e.g. the cue in view)."""
        return 0

    # -- MiniGrid / Gymnasium API ---------------------------------------------------------
    def _gen_grid(self, width: int, height: int) -> None:
        layout = self._layout(self._options)
        self.width, self.height = layout.shape[0], layout.shape[1]
        self.grid, _ = Grid.decode(layout)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options`` may fix the layout choices (see ``layout_keys``)."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.layout_keys))
        if unknown:
            raise ValueError(
                f"unknown reset options {unknown}: allowed are {sorted(self.layout_keys)}"
            )
        self._options = options
        obs, _ = super().reset(seed=seed)
        return obs, {"event": self._observe_event(obs)}

    def gen_obs(self) -> np.ndarray:  # type: ignore[override]
        """The encoded egocentric view alone, ``(V, V, 3)`` uint8."""
        return super().gen_obs()["image"]

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Turn left (0), turn right (1) or move forward (2), then apply the task's rules."""
        if not self.action_space.contains(action):
            raise ValueError(
                f"action {action!r} is outside Discrete({NUM_ACTIONS}): allowed are "
                "0 (left), 1 (right), 2 (forward)"
            )
        action = int(action)
        self.step_count += 1
        moved = False
        if action == 0:
            self.agent_dir = (self.agent_dir - 1) % 4
        elif action == 1:
            self.agent_dir = (self.agent_dir + 1) % 4
        else:
            fwd_x, fwd_y = self.front_pos
            cell = self.grid.get(fwd_x, fwd_y)
            if cell is None or cell.can_overlap():
                self.agent_pos = (int(fwd_x), int(fwd_y))
                moved = True
        reward, terminated, event, final_info = self._task_step(moved)
        truncated = self.step_count >= self.max_steps
        obs = self.gen_obs()
        info: dict[str, Any] = {"event": max(event, self._observe_event(obs))}
        if terminated or truncated:
            info.update(final_info)
            info["episode_length"] = self.step_count
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, truncated, info
