"""Lethe/Portal: remember which portal was right in each room."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from envs import events
from envs.curriculum import count_episode, count_episodes, init_batched_counts, init_curriculum
from envs.grid import (
    EMPTY_CELL,
    BatchedGrid,
    BatchedGridVectorEnv,
    EnvSelection,
    check_batch,
    check_max_steps,
    check_no_render,
    empty_layout,
)
from envs.minigrid_base import LetheMiniGridEnv

# ---- the layout, shared by both implementations -------------------------------------
HEIGHT = 5
MIDDLE_Y = 2
PORTAL_Y = (1, 3)
"""y of the north (side 0) and south (side 1) portal of every room."""
ENTRY = (1, 2)
"""Entry of room 0, where a trial starts and a wrong portal sends the agent (facing east)."""
MARKER_COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
"""Room r's marker colour is ``MARKER_COLORS[r % 6]``."""
MARKER_TYPE = OBJECT_TO_IDX["floor"]
PORTAL_CELL = (OBJECT_TO_IDX["door"], COLOR_TO_IDX["yellow"], 0)  # an open door
"""Every portal looks the same: an open yellow door in the room's east wall."""
_NONE, _CORRECT, _WRONG, _LAST_CORRECT = 0, 1, 2, 3
"""What walking onto a portal does (the twin's per-env table): nothing (no portal), the
next room, back to room 0, or a completed trial (the last room's correct portal)."""


def _check_rooms(num_rooms: int, hallway_length: int) -> None:
    if not isinstance(num_rooms, int | np.integer) or num_rooms < 1:
        raise ValueError(f"num_rooms={num_rooms!r} is not allowed: it must be an int >= 1")
    if not isinstance(hallway_length, int | np.integer) or hallway_length < 0:
        raise ValueError(
            f"hallway_length={hallway_length!r} is not allowed: it must be an int >= 0"
        )


def _check_trials(trials: int) -> int:
    if not isinstance(trials, int | np.integer) or trials < 1:
        raise ValueError(f"curriculum_trials={trials!r} is not allowed: it must be an int >= 1")
    return int(trials)


def _init_room_curriculum(
    env: Any, start: int | None, episodes: int, success: float, retreat: float, trials: int
) -> int:
    """Check and set the room curriculum's arguments (either implementation); the first level."""
    env.curriculum_trials = _check_trials(trials)
    num_rooms = env.geometry.num_rooms
    return init_curriculum(env, start, episodes, success, retreat, num_rooms, "num_rooms")


def _room_steps(env: Any) -> tuple[Any, Any]:
    """The room curriculum's advance (one room more, at most ``num_rooms``) and retreat (one
    room less, at least the start), for ints or tensors."""
    top, start = env.geometry.num_rooms, env.curriculum_start
    if isinstance(env.curriculum_level, torch.Tensor):
        return (
            lambda level: (level + 1).clamp(max=top),
            lambda level: (level - 1).clamp(min=start),
        )
    return (lambda level: min(level + 1, top), lambda level: max(level - 1, start))


@dataclass(frozen=True)
class PortalGeometry:
    """Where everything is: rooms of 3x3 cells in a row, west to east.

    Room r's interior spans x in ``[room_x[r], room_x[r] + 2]``, y in ``[1, 3]``; its
    marker (a floor tile of the room's colour) is at ``(room_x[r] + 1, 2)``, its portals
    in the east wall at ``(room_x[r] + 3, 1)`` (north, side 0) and ``(room_x[r] + 3, 3)``
    (south, side 1). Room r >= 1 is reached through a hallway of ``hallway_length`` cells
    starting at ``(hallway_x[r], 2)`` and a doorway in its west wall.
    """

    num_rooms: int
    hallway_length: int

    @property
    def room_x(self) -> list[int]:
        xs = [1]
        for _ in range(1, self.num_rooms):
            xs.append(xs[-1] + 4 + self.hallway_length + 1)
        return xs

    @property
    def hallway_x(self) -> list[int]:
        return [1] + [x + 4 for x in self.room_x[:-1]]

    @property
    def width(self) -> int:
        return self.room_x[-1] + 4

    def portal_target_x(self, room: int) -> int:
        """x where the correct portal of ``room`` leads (on row 2, facing east)."""
        return self.hallway_x[room + 1] if room + 1 < self.num_rooms else ENTRY[0]

    def portals(self) -> dict[tuple[int, int], tuple[int, int]]:
        """``{(x, y): (room, side)}`` of every portal."""
        return {
            (x + 3, PORTAL_Y[side]): (room, side)
            for room, x in enumerate(self.room_x)
            for side in (0, 1)
        }


def portal_layout(geometry: PortalGeometry) -> np.ndarray:
    """The ``[W, H, 3]`` encoded layout (it does not change between episodes)."""
    layout = empty_layout(geometry.width, HEIGHT)
    for room, x in enumerate(geometry.room_x):
        layout[x : x + 3, 1:4] = EMPTY_CELL
        layout[x + 1, MIDDLE_Y] = (MARKER_TYPE, COLOR_TO_IDX[MARKER_COLORS[room % 6]], 0)
        if room > 0:  # hallway and doorway
            layout[geometry.hallway_x[room] : x, MIDDLE_Y] = EMPTY_CELL
    for (x, y), _ in geometry.portals().items():
        layout[x, y] = PORTAL_CELL
    return layout


class PortalEnv(LetheMiniGridEnv):
    """
    ## Description

    A chain of `num_rooms` rooms (3x3 cells each, west to east). Each room has a marker of
    its own colour (a floor tile in its middle, in view on entry) and two portals in its
    east wall, north and south, that look the same (open yellow doors). Per episode one
    portal of each room is drawn as correct. Walking into the correct portal moves the
    agent to the next room, through a hallway of `hallway_length` empty cells that only
    costs time; the wrong one sends it back to the entry of room 0. Passing the correct
    portal of the last room gives reward 1 and also sends the agent back to room 0, for
    another trial. The first trial needs exploration; every later one can be perfect for
    an agent that remembers which portal worked in each room.

    Views are computed with `see_through_walls=True`: what lies behind a wall never
    depends on which portal is correct, so this hides nothing the task needs. Marker
    colours repeat after six rooms.

    ## Action Space

    | Num | Name    | Action       |
    |-----|---------|--------------|
    | 0   | left    | Turn left    |
    | 1   | right   | Turn right   |
    | 2   | forward | Move forward |

    ## Observation Space

    `Box(0, 255, (V, V, 3), uint8)`: MiniGrid's encoded egocentric view alone,
    `V = agent_view_size` (odd, >= 3, default 3).

    ## Rewards

    1 for each trial completed (the last room's correct portal), 0 otherwise. A completed
    trial and a wrong portal both put the agent at room 0's entry facing east, so in the last
    room only the reward tells which portal was right: a learner needs it as an input (the
    trainer's `--previous-action-reward`).

    ## Termination

    None: the episode is truncated after `max_steps` (default 400) steps.

    ## Info

    Every step `event` (see `envs.events`: correct portal, wrong portal). On the last step
    `trials` (completed), `wrong_portals` and `episode_length`.

    ## Reset options

    `correct_sides`: a list of `num_rooms` ints, 0 (north) or 1 (south), fixes the correct
    portals; otherwise they are drawn from `self.np_random`.

    ## Room curriculum

    With `curriculum_start=S` a trial first crosses only the first `S` rooms: at level `k`
    the correct portal of room `k - 1` completes it (reward 1, back to room 0) and the rooms
    beyond are never reached. An episode succeeds when it completes at least
    `curriculum_trials` trials (default 2: one after the first, which may be luck). After
    every `curriculum_episodes` (256) episodes drawn at the current level, the level goes up
    by one room (to at most `num_rooms`) if at least `curriculum_success` (0.9) of them
    succeeded, down by one (to at least `S`) if fewer than `curriculum_retreat` (0.6) did
    (`envs.curriculum`). A random policy completes no trial of `Lethe/Portal-v0` (4 rooms): a
    trial pays only at the last room, so the full task gives a learner nothing to start from.

    ## Registered Configurations

    - `Lethe/Portal-v0`: 4 rooms, hallways of 8 cells, 400 steps
    - `Lethe/Portal-Hard-v0`: 6 rooms, hallways of 16 cells, 1000 steps
    - `Lethe/Portal-Curriculum-v0`: Portal-v0 with the room curriculum from 1 room
    """

    layout_keys = ("correct_sides",)

    def __init__(
        self,
        num_rooms: int = 4,
        hallway_length: int = 8,
        max_steps: int = 400,
        agent_view_size: int = 3,
        curriculum_start: int | None = None,
        curriculum_episodes: int = 256,
        curriculum_success: float = 0.9,
        curriculum_retreat: float = 0.6,
        curriculum_trials: int = 2,
        render_mode: str | None = None,
    ) -> None:
        _check_rooms(num_rooms, hallway_length)
        check_max_steps(max_steps)
        self.geometry = PortalGeometry(int(num_rooms), int(hallway_length))
        self.curriculum_level = _init_room_curriculum(
            self,
            curriculum_start,
            curriculum_episodes,
            curriculum_success,
            curriculum_retreat,
            curriculum_trials,
        )
        self._layout_cells = portal_layout(self.geometry)
        self._portals = self.geometry.portals()
        self.correct_sides = [0] * self.geometry.num_rooms
        self.trials = self.wrong_portals = 0
        super().__init__(
            width=self.geometry.width,
            height=HEIGHT,
            max_steps=int(max_steps),
            agent_view_size=agent_view_size,
            render_mode=render_mode,
        )

    @staticmethod
    def _gen_mission() -> str:
        return "remember which portal worked in each room"

    def _layout(self, options: dict[str, Any]) -> np.ndarray:
        sides = options.get("correct_sides")
        num_rooms = self.geometry.num_rooms
        if sides is None:
            sides = [self._rand_int(0, 2) for _ in range(num_rooms)]
        sides = [int(s) for s in np.asarray(sides).reshape(-1)]
        if len(sides) != num_rooms or any(s not in (0, 1) for s in sides):
            raise ValueError(
                f"correct_sides={sides!r} is not allowed: {num_rooms} values, "
                "each 0 (north) or 1 (south)"
            )
        self.correct_sides = sides
        self._episode_level = self.curriculum_level  # rooms a trial crosses this episode
        self.trials = self.wrong_portals = 0
        self.agent_pos, self.agent_dir = ENTRY, 0
        return self._layout_cells

    def _task_step(self, moved: bool) -> tuple[float, bool, int, dict[str, Any]]:
        reward, event = 0.0, events.NONE
        portal = self._portals.get(tuple(self.agent_pos))
        if portal is not None:
            room, side = portal
            target_x = ENTRY[0]
            if side == self.correct_sides[room]:
                event = events.CORRECT_PORTAL
                if room == self._episode_level - 1:  # the trial's last room: back to room 0
                    reward, self.trials = 1.0, self.trials + 1
                else:
                    target_x = self.geometry.portal_target_x(room)
            else:
                event, self.wrong_portals = events.WRONG_PORTAL, self.wrong_portals + 1
            self.agent_pos, self.agent_dir = (target_x, MIDDLE_Y), 0
        final_info = {"trials": self.trials, "wrong_portals": self.wrong_portals}
        return reward, False, event, final_info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step; an episode that ends here counts toward the room curriculum."""
        obs, reward, terminated, truncated, info = super().step(action)
        if self.curriculum and (terminated or truncated):
            count_episode(self, info, self.trials >= self.curriculum_trials, *_room_steps(self))
        return obs, reward, terminated, truncated, info


class PortalVectorEnv(BatchedGridVectorEnv):
    """Batched twin of `PortalEnv`: ``num_envs`` room chains as torch tensors on ``device``.

    Same constructor arguments as `PortalEnv` plus ``num_envs``, ``device`` and
    ``check_actions``. Reset options and ``set_next_layouts`` take ``correct_sides``:
    ``[num_rooms]`` (all envs) or ``[N, num_rooms]`` ints. ``info``: ``event`` every step;
    ``trials``, ``wrong_portals`` and ``episode_length`` on the last step (with masks).
    All envs read one shared grid, since the layout never changes.
    """

    layout_keys = ("correct_sides",)
    final_info_keys = ("trials", "wrong_portals", "episode_length")

    def __init__(
        self,
        num_envs: int,
        num_rooms: int = 4,
        hallway_length: int = 8,
        max_steps: int = 400,
        agent_view_size: int = 3,
        device: str | torch.device = "cpu",
        check_actions: bool | None = None,
        curriculum_start: int | None = None,
        curriculum_episodes: int = 256,
        curriculum_success: float = 0.9,
        curriculum_retreat: float = 0.6,
        curriculum_trials: int = 2,
        render_mode: str | None = None,
    ) -> None:
        check_no_render(render_mode)
        _check_rooms(num_rooms, hallway_length)
        check_max_steps(max_steps)
        device = check_batch(num_envs, device)
        self.geometry = geometry = PortalGeometry(int(num_rooms), int(hallway_length))
        level = _init_room_curriculum(
            self,
            curriculum_start,
            curriculum_episodes,
            curriculum_success,
            curriculum_retreat,
            curriculum_trials,
        )
        init_batched_counts(self, level, num_envs, device)
        grid = BatchedGrid(num_envs, portal_layout(geometry), agent_view_size, device, shared=True)
        super().__init__(num_envs, grid, check_actions)
        n, rooms = num_envs, geometry.num_rooms
        self.max_steps = torch.full((n,), int(max_steps), dtype=torch.long, device=device)
        # Portal id per padded cell: 0 none, 1 + 2 * room + side.
        lut = torch.zeros(grid.base.numel(), dtype=torch.long)
        for (x, y), (room, side) in geometry.portals().items():
            lut[grid.local_index(x, y)] = 1 + 2 * room + side
        self._portal_id = lut.to(device)  # [Hp * Wp]
        ids = 1 + 2 * rooms  # portal ids per env, 0 included
        # Per portal id p >= 1: its room and side, and where its correct side leads.
        self._id_room = torch.arange(2 * rooms, device=device) // 2  # [2R]
        self._id_side = torch.arange(2 * rooms, device=device) % 2  # [2R]
        target_x = torch.tensor([geometry.portal_target_x(r) for r in range(rooms)])
        self._id_target = grid.local_index(target_x, MIDDLE_Y).to(device)[self._id_room]  # [2R]
        self._entry_local = grid.local_index(ENTRY[0], MIDDLE_Y)
        # Per env and portal id: outcome (_NONE, _CORRECT, _WRONG, _LAST_CORRECT) and the
        # local index the portal leads to, rebuilt per episode from correct_sides.
        self._outcome = torch.zeros(n, ids, dtype=torch.long, device=device)  # [N, 1 + 2R]
        self._dest = torch.zeros(n, ids, dtype=torch.long, device=device)  # [N, 1 + 2R]
        self._row = torch.arange(n, device=device) * ids  # [N] row start in the flat tables
        self._event_of = torch.tensor(
            [events.NONE, events.CORRECT_PORTAL, events.WRONG_PORTAL, events.CORRECT_PORTAL],
            device=device,
        )  # by outcome
        self._not_terminated = torch.zeros(n, dtype=torch.bool, device=device)
        self.correct_sides = torch.zeros(n, rooms, dtype=torch.long, device=device)
        self.trials = torch.zeros(n, dtype=torch.long, device=device)
        self.wrong_portals = torch.zeros(n, dtype=torch.long, device=device)

    def _draw_layouts(self) -> dict[str, torch.Tensor]:
        shape = (self.num_envs, self.geometry.num_rooms)
        sides = torch.randint(0, 2, shape, generator=self.generator, device=self.device)
        return {"correct_sides": sides}

    def _layout_shape(self, key: str) -> tuple[int, ...]:
        return (self.geometry.num_rooms,)

    def _check_layouts(self, layouts: dict[str, torch.Tensor]) -> None:
        sides = layouts.get("correct_sides")
        if sides is not None and bool(((sides != 0) & (sides != 1)).any()):
            bad = int(sides[(sides != 0) & (sides != 1)][0])
            raise ValueError(
                f"correct_sides value {bad} is not allowed: each is 0 (north) or 1 (south)"
            )

    def _apply_layouts(self, mask: torch.Tensor, layouts: dict[str, torch.Tensor]) -> None:
        self._apply_layouts_at(EnvSelection(mask), layouts)

    def _apply_layouts_at(self, sel: EnvSelection, layouts: dict[str, torch.Tensor]) -> None:
        sides = sel.take(layouts["correct_sides"])  # [k, R]
        level = self.curriculum_level.expand(sel.size)  # [k] rooms a trial crosses
        self._episode_level = sel.put(self._episode_level, level)
        correct = sides.index_select(1, self._id_room) == self._id_side  # [k, 2R]
        last = self._id_room == level[:, None] - 1  # [k, 2R] the trial's last room
        outcome = torch.where(correct, torch.where(last, _LAST_CORRECT, _CORRECT), _WRONG)
        dest = torch.where(correct & ~last, self._id_target, self._entry_local)  # [k, 2R]
        none = torch.zeros(sel.size, 1, dtype=torch.long, device=self.device)
        self._outcome = sel.put(self._outcome, torch.cat([none, outcome], 1))
        self._dest = sel.put(self._dest, torch.cat([none, dest], 1))
        self.correct_sides = sel.put(self.correct_sides, sides)
        self.trials = sel.fill(self.trials, 0)
        self.wrong_portals = sel.fill(self.wrong_portals, 0)
        self.grid.place_at(sel, ENTRY[0], ENTRY[1], 0)

    def _task_step(
        self, action: torch.Tensor, moved: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        grid = self.grid
        portal_id = self._portal_id.index_select(0, grid.local_pos)  # [N], 0: no portal
        flat = self._row + portal_id  # [N] into the flattened [N, 1 + 2R] tables
        outcome = self._outcome.view(-1).index_select(0, flat)  # [N]
        on_portal = portal_id > 0
        # Through a portal: to its destination (facing east), as one where on the position.
        dest = self._dest.view(-1).index_select(0, flat)
        grid.pos = torch.where(on_portal, dest, grid.pos)  # a shared grid: pos is local
        grid.dir = grid.dir.masked_fill(on_portal, 0)
        trial_done = outcome == _LAST_CORRECT
        self.trials = self.trials + trial_done
        self.wrong_portals = self.wrong_portals + (outcome == _WRONG)
        event = self._event_of.index_select(0, outcome)
        final_info = {"trials": self.trials, "wrong_portals": self.wrong_portals}
        return trial_done.float(), self._not_terminated, event, final_info

    def step(
        self, actions: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step of every env; episodes that end here count toward the room curriculum."""
        obs, reward, terminated, truncated, info = super().step(actions)
        if self.curriculum:
            success = info["trials"] >= self.curriculum_trials
            count_episodes(self, info, terminated | truncated, success, *_room_steps(self))
        return obs, reward, terminated, truncated, info
