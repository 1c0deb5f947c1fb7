"""Lethe/Corridor: remember a cue across a long corridor (a T-maze)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from envs import events
from envs.curriculum import count_episode, count_episodes, init_batched_counts, init_curriculum
from envs.grid import (
    EMPTY_CELL,
    WALL_CELL,
    BatchedGrid,
    BatchedGridVectorEnv,
    EnvSelection,
    check_batch,
    check_max_steps,
    check_no_render,
    empty_layout,
    pack_cell,
)
from envs.minigrid_base import LetheMiniGridEnv

# ---- the layout, shared by both implementations -------------------------------------
HEIGHT = 5
CORRIDOR_Y = 2
START_X = 1
CUE_POS = (1, 1)
CUE_COLORS = ("green", "red")
"""Cue value 0: a green ball, the north arm is right; cue value 1: red, the south arm."""
BALL = OBJECT_TO_IDX["ball"]


def cue_cell(cue: int) -> tuple[int, int, int]:
    """MiniGrid encoding of the cue ball for cue value 0 (green) or 1 (red)."""
    return (BALL, COLOR_TO_IDX[CUE_COLORS[cue]], 0)


def junction_x(length: Any) -> Any:
    """x of the junction: ``length`` cells east of the start (int or tensor)."""
    return length + START_X


def correct_arm_y(cue: Any) -> Any:
    """y of the arm the cue names: 1 (north) for cue 0, 3 (south) for cue 1."""
    return 1 + 2 * cue


SHORTEST_EPISODE_EXTRA = 2
"""The shortest episode is ``length + 2`` steps: ``length`` forward to the junction, a turn,
one step into an arm."""


def episode_max_steps(length: Any, slack_steps: int | None) -> Any:
    """Step limit of an episode of ``length`` (int or tensor): the shortest episode plus
    ``slack_steps``, or ``4 * length + 20`` without a slack."""
    if slack_steps is None:
        return 4 * length + 20
    return length + SHORTEST_EPISODE_EXTRA + slack_steps


def _check_slack_steps(slack_steps: int | None, max_steps: int | None) -> int | None:
    if slack_steps is None:
        return None
    if max_steps is not None:
        raise ValueError(
            f"max_steps={max_steps!r} and slack_steps={slack_steps!r} are not allowed "
            "together: give one step limit"
        )
    if not isinstance(slack_steps, int | np.integer) or slack_steps < 0:
        raise ValueError(f"slack_steps={slack_steps!r} is not allowed: it must be an int >= 0")
    return int(slack_steps)


def corridor_width(length: Any) -> Any:
    """Grid width for a corridor of ``length``: walls at x = 0 and x = junction + 1."""
    return length + 3


def static_layout(length: int) -> np.ndarray:
    """``[W, H, 3]`` cells that do not depend on the episode's choices: walls and the
    open corridor row from the start to the junction."""
    layout = empty_layout(corridor_width(length), HEIGHT)
    layout[START_X : junction_x(length) + 1, CORRIDOR_Y] = EMPTY_CELL
    return layout


def dynamic_cells(
    length: Any, view_size: int
) -> list[tuple[Any, int, tuple[int, int, int] | None]]:
    """Cells that depend on the episode: ``[(x, y, cell)]``, ``cell=None`` for the cue.

    The cue alcove north of the start, the two arms beside the junction, and the walls
    that close the corridor as far east as a view can reach (the batched twin's grid is as
    wide as its longest corridor; MiniGrid shows walls beyond its grid's edge).
    """
    jx = junction_x(length)
    cells: list[tuple[Any, int, tuple[int, int, int] | None]] = [
        (CUE_POS[0], CUE_POS[1], None),
        (jx, 1, EMPTY_CELL),
        (jx, 3, EMPTY_CELL),
    ]
    cells += [(jx + k, CORRIDOR_Y, WALL_CELL) for k in range(1, view_size)]
    return cells


def corridor_layout(length: int, cue: int) -> np.ndarray:
    """The whole ``[W, H, 3]`` encoded layout of one episode."""
    layout = static_layout(length)
    for x, y, cell in dynamic_cells(length, view_size=3):
        if x < layout.shape[0]:  # walls beyond the grid's edge come with MiniGrid's slice
            layout[x, y] = cue_cell(cue) if cell is None else cell
    return layout


def _check_lengths(length: int | None, min_length: int, max_length: int) -> tuple[int, int]:
    given = (("length", length),) if length is not None else ()
    given += (("min_length", min_length), ("max_length", max_length))
    for name, value in given:  # the name the caller used for the bad value
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= 1")
    if length is not None:
        min_length = max_length = length
    if min_length > max_length:
        raise ValueError(
            f"min_length={min_length} > max_length={max_length}: min_length must be <= max_length"
        )
    return int(min_length), int(max_length)


def _check_progress_reward(progress_reward: float) -> float:
    if not progress_reward >= 0:
        raise ValueError(f"progress_reward={progress_reward!r} is not allowed: it must be >= 0")
    return float(progress_reward)


# ---- the length curriculum, shared by both implementations ---------------------------
CURRICULUM_GROWTH = (5, 4)
"""Each advance multiplies the curriculum level by 5/4 (rounded up), up to ``max_length``;
each retreat by 4/5 (rounded down), down to the start level."""


def curriculum_bounds(level: Any, min_length: int) -> tuple[Any, Any]:
    """Lengths drawn at curriculum ``level`` (int or tensor): uniform in
    ``[min(min_length, ceil(level / 2)), level]``, so that a level's lengths straddle the
    spans the previous level taught (the final level too: a span held at the edge of a
    single length slips below it and never comes back)."""
    half = (level + 1) // 2
    if isinstance(level, torch.Tensor):
        return half.clamp(max=min_length), level
    return min(min_length, half), level


def next_curriculum_level(level: Any, max_length: int) -> Any:
    """The level after an advance: ``ceil(level * 5 / 4)``, at most ``max_length``."""
    num, den = CURRICULUM_GROWTH
    grown = (level * num + den - 1) // den
    if isinstance(grown, torch.Tensor):
        return grown.clamp(max=max_length)
    return min(grown, max_length)


def previous_curriculum_level(level: Any, start: int) -> Any:
    """The level after a retreat: ``floor(level * 4 / 5)``, at least ``start``."""
    num, den = CURRICULUM_GROWTH
    shrunk = level * den // num
    if isinstance(shrunk, torch.Tensor):
        return shrunk.clamp(min=start)
    return max(shrunk, start)


def _init_length_curriculum(
    env: Any, start: int | None, episodes: int, success: float, retreat: float
) -> int:
    """Check and set the length curriculum's arguments (either implementation)."""
    return init_curriculum(env, start, episodes, success, retreat, env.max_length, "max_length")


def _length_steps(env: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The curriculum's advance and retreat for a Corridor (either implementation)."""
    return (
        lambda level: next_curriculum_level(level, env.max_length),
        lambda level: previous_curriculum_level(level, env.curriculum_start),
    )


class CorridorEnv(LetheMiniGridEnv):
    """
    ## Description

    A T-maze that tests memory. The agent starts at the west end of a one-cell-wide
    corridor, facing east. In an alcove north of its start cell lies a cue: a ball, green
    or red (drawn per episode). The corridor runs `length` cells east to a junction with
    one arm to the north and one to the south. Stepping into an arm ends the episode. The
    cue names the arm to take (green: north, red: south); the arms look the same, and
    the cue is only in view during the first steps, so only memory tells them apart.

    Views are computed with `see_through_walls=True` (MiniGrid's flag): with the walls of
    a one-cell corridor this changes nothing the task needs, and it keeps the batched twin
    exact and fast. The layout is described once (`corridor_layout`), for both this class
    and `CorridorVectorEnv`.

    ## Action Space

    | Num | Name    | Action       |
    |-----|---------|--------------|
    | 0   | left    | Turn left    |
    | 1   | right   | Turn right   |
    | 2   | forward | Move forward |

    ## Observation Space

    `Box(0, 255, (V, V, 3), uint8)`: MiniGrid's encoded egocentric view alone, each cell
    `(OBJECT_IDX, COLOR_IDX, STATE)`, agent at the bottom centre, `V = agent_view_size`
    (odd, >= 3, default 3).

    ## Rewards

    1 for entering the arm the cue names, 0 for the other. Plus `progress_reward / length`
    for each new easternmost cell reached (a full traversal earns `progress_reward`,
    default 0.1; 0 turns it off).

    ## Termination

    The episode ends when the agent enters an arm (terminated), or after `max_steps`
    steps (truncated; default `4 * length + 20`). `slack_steps=K` instead limits each
    episode to the shortest one plus `K` (`length + 2 + K`: walk, turn, step into the arm):
    with a generous limit an agent without memory can carry the cue in its own walk (a
    window-16 policy learned to turn left and right every ~15 steps for one colour and read
    the turns back from its window), which a slack shorter than that code's turns rules out.

    ## Info

    Every step `event` (see `envs.events`: cue visible, junction reached, correct arm,
    wrong arm). On the last step `success` (bool) and `episode_length`.

    ## Length curriculum

    With `curriculum_start=S` the env teaches its lengths gradually (Expire-Span's spans
    only learn at the edge of what they already keep: a span never grows across a gap it
    has never bridged). Episode lengths are drawn at a *level*, starting at `S`: uniformly
    in `[min(min_length, ceil(level / 2)), level]`. After every `curriculum_episodes`
    episodes drawn at the current level, the level advances to `ceil(level * 5 / 4)` (at
    most `max_length`) if at least `curriculum_success` of them succeeded, or goes back to
    `floor(level * 4 / 5)` (at least `S`) if fewer than `curriculum_retreat` did (default 0.6,
    0: never): a memory that lost what it kept (a span that collapsed) is walked back to
    lengths it can bridge, instead of failing at its level for good. The last level,
    `max_length`, keeps its spread of lengths (a span learnt at the edge of one fixed
    length slips below it, and then nothing brings it back): train on the curriculum and
    evaluate on the task it teaches (`envs.task_of`, the default of `train_rl.py
    --eval-env`). Each env instance counts its own
    episodes (the batched twin: all of its envs together); `curriculum_level` is the
    current level. Injected lengths are used as given.

    ## Reset options

    `length` (int >= 1) and `cue` (0 green / north, 1 red / south) fix the episode's
    random choices; missing ones are drawn from `self.np_random`.

    ## Registered Configurations

    - `Lethe/Corridor-v0`: length drawn in [5, 50]
    - `Lethe/Corridor-S-v0`: length drawn in [5, 10] (for fast learning tests)
    - `Lethe/Corridor-L100-v0`, `Lethe/Corridor-L500-v0`, `Lethe/Corridor-L1000-v0`
    - `Lethe/Corridor-Curriculum-v0`: Corridor-v0's lengths through the curriculum from
      level 10 (lengths 5 to 10) up to 50 (lengths 5 to 50, Corridor-v0's own)
    - `Lethe/Corridor-L100-Curriculum-v0`, `Lethe/Corridor-L1000-Curriculum-v0`: the length
      curriculum from level 10 (lengths 5 to 10) up to 100 / 1000 (lengths 50 to 100 /
      500 to 1000), to train for `Lethe/Corridor-L100-v0` / `Lethe/Corridor-L1000-v0`
    """

    @staticmethod
    def _gen_mission() -> str:
        return "remember the cue and take the arm it names"

    layout_keys = ("length", "cue")

    def __init__(
        self,
        length: int | None = None,
        min_length: int = 5,
        max_length: int = 50,
        max_steps: int | None = None,
        progress_reward: float = 0.1,
        agent_view_size: int = 3,
        curriculum_start: int | None = None,
        curriculum_episodes: int = 256,
        curriculum_success: float = 0.9,
        curriculum_retreat: float = 0.6,
        render_mode: str | None = None,
        slack_steps: int | None = None,
    ) -> None:
        self.min_length, self.max_length = _check_lengths(length, min_length, max_length)
        if max_steps is not None:
            check_max_steps(max_steps)
        self.fixed_max_steps = max_steps
        self.slack_steps = _check_slack_steps(slack_steps, max_steps)
        self.progress_reward = _check_progress_reward(progress_reward)
        self.curriculum_level = _init_length_curriculum(
            self, curriculum_start, curriculum_episodes, curriculum_success, curriculum_retreat
        )
        self.length, self.cue, self.best_x = self.max_length, 0, START_X
        super().__init__(
            width=corridor_width(self.max_length),
            height=HEIGHT,
            max_steps=max_steps or episode_max_steps(self.max_length, self.slack_steps),
            agent_view_size=agent_view_size,
            render_mode=render_mode,
        )

    def _layout(self, options: dict[str, Any]) -> np.ndarray:
        length = options.get("length")
        if length is None:
            low, high = self.min_length, self.max_length
            if self.curriculum:
                low, high = curriculum_bounds(self.curriculum_level, low)
            length = self._rand_int(low, high + 1)
        self._episode_level = self.curriculum_level
        cue = options.get("cue")
        if cue is None:
            cue = self._rand_int(0, 2)
        if int(length) < 1:
            raise ValueError(f"length={length!r} is not allowed: it must be an int >= 1")
        if int(cue) not in (0, 1):
            raise ValueError(f"cue={cue!r} is not allowed: 0 (green, north) or 1 (red, south)")
        self.length, self.cue, self.best_x = int(length), int(cue), START_X
        self.max_steps = self.fixed_max_steps or episode_max_steps(self.length, self.slack_steps)
        self.agent_pos, self.agent_dir = (START_X, CORRIDOR_Y), 0
        return corridor_layout(self.length, self.cue)

    def _task_step(self, moved: bool) -> tuple[float, bool, int, dict[str, Any]]:
        x, y = self.agent_pos
        reward, event = 0.0, events.NONE
        if x > self.best_x:
            reward, self.best_x = self.progress_reward / self.length, x
        in_arm = y != CORRIDOR_Y
        success = in_arm and y == correct_arm_y(self.cue)
        if in_arm:
            event = events.CORRECT_ARM if success else events.WRONG_ARM
            reward += float(success)
        elif moved and x == junction_x(self.length):
            event = events.JUNCTION_REACHED
        return reward, in_arm, event, {"success": success}

    def _observe_event(self, image: np.ndarray) -> int:
        return events.CUE_VISIBLE if bool((image[..., 0] == BALL).any()) else events.NONE

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step; an episode that ends here counts toward the length curriculum."""
        obs, reward, terminated, truncated, info = super().step(action)
        if self.curriculum and (terminated or truncated):
            count_episode(self, info, bool(info.get("success", False)), *_length_steps(self))
        return obs, reward, terminated, truncated, info


class CorridorVectorEnv(BatchedGridVectorEnv):
    """Batched twin of `CorridorEnv`: ``num_envs`` corridors as torch tensors on ``device``.

    Same constructor arguments as `CorridorEnv` plus ``num_envs``, ``device`` and
    ``check_actions`` (validate action values; default on CPU only, since on CUDA it costs
    a device sync). The grid is as wide as ``max_length``; shorter corridors are padded.
    Reset options and ``set_next_layouts`` take ``length`` and ``cue``, each a scalar or
    one value per env. ``info``: ``event`` every step; ``success`` and ``episode_length``
    on the last step (with ``_success`` / ``_episode_length`` masks). The length curriculum
    (see `CorridorEnv`) counts the episodes of all ``num_envs`` together and runs on the
    device: ``curriculum_level`` is a 0-dim tensor, read without a host sync per step.
    """

    layout_keys = ("length", "cue")
    final_info_keys = ("success", "episode_length")

    def __init__(
        self,
        num_envs: int,
        length: int | None = None,
        min_length: int = 5,
        max_length: int = 50,
        max_steps: int | None = None,
        progress_reward: float = 0.1,
        agent_view_size: int = 3,
        curriculum_start: int | None = None,
        curriculum_episodes: int = 256,
        curriculum_success: float = 0.9,
        curriculum_retreat: float = 0.6,
        device: str | torch.device = "cpu",
        check_actions: bool | None = None,
        render_mode: str | None = None,
        slack_steps: int | None = None,
    ) -> None:
        check_no_render(render_mode)
        self.min_length, self.max_length = _check_lengths(length, min_length, max_length)
        if max_steps is not None:
            check_max_steps(max_steps)
        self.fixed_max_steps = max_steps
        self.slack_steps = _check_slack_steps(slack_steps, max_steps)
        self.progress_reward = _check_progress_reward(progress_reward)
        device = check_batch(num_envs, device)
        level = _init_length_curriculum(
            self, curriculum_start, curriculum_episodes, curriculum_success, curriculum_retreat
        )
        init_batched_counts(self, level, num_envs, device)
        # The base grid holds the corridor row at its longest; the per-episode cells cut
        # each env's corridor to its own length.
        grid = BatchedGrid(
            num_envs,
            static_layout(self.max_length),
            agent_view_size,
            device,
        )
        super().__init__(num_envs, grid, check_actions)
        n = num_envs
        self._cue_codes = torch.tensor([pack_cell(cue_cell(c)) for c in (0, 1)], device=device)
        # The per-episode cells (see dynamic_cells) sit at local index a + b * length, with
        # b = 0 for the cue and 1 for the cells east of the junction.
        at0 = dynamic_cells(0, agent_view_size)
        at1 = dynamic_cells(1, agent_view_size)
        self._dyn_a = torch.tensor([grid.local_index(x, y) for x, y, _ in at0], device=device)
        self._dyn_b = torch.tensor(
            [x1 - x0 for (x0, *_), (x1, *_) in zip(at0, at1, strict=True)], device=device
        )
        self._dyn_codes = torch.tensor(
            [0 if cell is None else pack_cell(cell) for *_, cell in at0],
            dtype=torch.int32,
            device=device,
        )  # [K], the cue's code (index 0) is filled in per episode
        self.length = torch.full((n,), self.max_length, dtype=torch.long, device=device)
        self.cue = torch.zeros(n, dtype=torch.long, device=device)
        self.best_x = torch.full((n,), START_X, dtype=torch.long, device=device)
        self.cell_reward = torch.zeros(n, dtype=torch.float32, device=device)
        self._junction_x = junction_x(self.length)  # [N]
        self._arm_y = correct_arm_y(self.cue)  # [N]
        self._dyn_local = self._dyn_a + self._dyn_b * self.length[:, None]  # [N, K]

    def _draw_layouts(self) -> dict[str, torch.Tensor]:
        shape, gen, dev = (self.num_envs,), self.generator, self.device
        if self.curriculum:  # bounds on the device: uniform floats scaled, no host sync
            low, high = curriculum_bounds(self.curriculum_level, self.min_length)
            u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64)
            length = low + (u * (high - low + 1)).long().clamp(max=high - low)
        else:
            length = torch.randint(
                self.min_length, self.max_length + 1, shape, generator=gen, device=dev
            )
        return {"length": length, "cue": torch.randint(0, 2, shape, generator=gen, device=dev)}

    def _check_layouts(self, layouts: dict[str, torch.Tensor]) -> None:
        if "length" in layouts:
            length = layouts["length"]
            bad = (length < 1) | (length > self.max_length)
            if bool(bad.any()):
                raise ValueError(
                    f"length={int(length[bad][0])} is not allowed: it must be in "
                    f"[1, max_length={self.max_length}] (the twin's grid is fixed at max_length)"
                )
        if "cue" in layouts:
            cue = layouts["cue"]
            bad = (cue != 0) & (cue != 1)
            if bool(bad.any()):
                raise ValueError(
                    f"cue={int(cue[bad][0])} is not allowed: 0 (green, north) or 1 (red, south)"
                )

    def _apply_layouts(self, mask: torch.Tensor, layouts: dict[str, torch.Tensor]) -> None:
        self._apply_layouts_at(EnvSelection(mask), layouts)

    def _apply_layouts_at(self, sel: EnvSelection, layouts: dict[str, torch.Tensor]) -> None:
        grid = self.grid
        length = sel.take(layouts["length"])  # [k]
        cue = sel.take(layouts["cue"])  # [k]
        # Put back the base cells under the old episode's per-episode cells, then write
        # the new ones.
        old_local = sel.take(self._dyn_local)  # [k, K]
        grid.write_at(sel, old_local, grid.base[old_local])
        new_local = self._dyn_a + self._dyn_b * length[:, None]  # [k, K]
        codes = self._dyn_codes.repeat(sel.size, 1)  # [k, K]
        codes[:, 0] = self._cue_codes.index_select(0, cue)
        grid.write_at(sel, new_local, codes)
        self._dyn_local = sel.put(self._dyn_local, new_local)
        self.length, self.cue = sel.put(self.length, length), sel.put(self.cue, cue)
        self._junction_x = sel.put(self._junction_x, junction_x(length))
        self._arm_y = sel.put(self._arm_y, correct_arm_y(cue))
        self.best_x = sel.fill(self.best_x, START_X)
        per_cell = (self.progress_reward / length.double()).float()  # float64 as MiniGrid's
        self.cell_reward = sel.put(self.cell_reward, per_cell)
        if self.fixed_max_steps:
            self.max_steps = sel.fill(self.max_steps, self.fixed_max_steps)
        else:
            self.max_steps = sel.put(self.max_steps, episode_max_steps(length, self.slack_steps))
        grid.place_at(sel, START_X, CORRIDOR_Y, 0)
        if self.curriculum:
            self._episode_level = sel.put(
                self._episode_level, self.curriculum_level.expand(sel.size)
            )

    def step(
        self, actions: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step of every env; episodes that end here count toward the curriculum."""
        obs, reward, terminated, truncated, info = super().step(actions)
        if self.curriculum:
            count_episodes(
                self, info, terminated | truncated, info["success"], *_length_steps(self)
            )
        return obs, reward, terminated, truncated, info

    def _task_step(
        self, action: torch.Tensor, moved: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        grid = self.grid
        local = grid.local_pos  # [N]
        x, y = grid._x_of.index_select(0, local), grid._y_of.index_select(0, local)
        reward = torch.where(x > self.best_x, self.cell_reward, 0.0)  # [N] f32
        self.best_x = torch.maximum(self.best_x, x)
        in_arm = y != CORRIDOR_Y
        success = y == self._arm_y  # only arms lie off the corridor row
        reward += success
        # In an arm: CORRECT_ARM (5) or WRONG_ARM (6); else JUNCTION_REACHED on arrival.
        at_junction = moved & (x == self._junction_x)  # arms are at the junction's x too
        event = torch.where(
            in_arm,
            events.WRONG_ARM - success.long(),
            at_junction.long() * events.JUNCTION_REACHED,
        )
        return reward, in_arm, event, {"success": success}

    def _observe_event(self, codes: torch.Tensor) -> torch.Tensor:
        seen = (BatchedGrid.object_type(codes) == BALL).any(dim=1)
        return seen.long() * events.CUE_VISIBLE
