"""Batched grid core in pure torch, shared by every Lethe layout.

A layout is described once, as MiniGrid describes a grid: a ``uint8`` array ``[W, H, 3]``
of ``(object type, colour, state)`` encodings (what ``minigrid.core.grid.Grid.encode``
returns and ``Grid.decode`` reads). The MiniGrid class decodes it into a ``Grid``; the
batched twin packs each cell into one ``int32`` (``type | colour << 8 | state << 16``) so
that one gather reads a whole egocentric view.

``BatchedGrid`` holds ``N`` grids (or one grid shared by all envs), the agents' positions
and directions, and does what MiniGrid's ``step`` and ``gen_obs`` do for actions 0-2:
turn, move forward onto cells that allow overlap, and the egocentric view with the agent
at the bottom centre. Views are computed as MiniGrid computes them with
``see_through_walls=True`` (no occlusion), which is what every Lethe task uses.

``BatchedGridVectorEnv`` is the ``gymnasium.vector.VectorEnv`` base of every twin:
seeding, options / layout injection, ``NEXT_STEP`` autoreset, step counting, truncation
and the ``info`` dict. A task adds its layout state and its rules in four hooks.
"""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from minigrid.core.constants import COLOR_TO_IDX, DIR_TO_VEC, OBJECT_TO_IDX

NUM_ACTIONS = 3
"""0 turn left, 1 turn right, 2 move forward (MiniGrid's first three actions)."""
ACTION_NAMES = ("left", "right", "forward")

EMPTY_CELL = (OBJECT_TO_IDX["empty"], 0, 0)
WALL_CELL = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)


def pack_cell(cell: tuple[int, int, int]) -> int:
    """Pack a MiniGrid ``(type, colour, state)`` encoding into one int (little-endian bytes)."""
    return int(cell[0]) | int(cell[1]) << 8 | int(cell[2]) << 16


def pack_layout(layout: np.ndarray) -> np.ndarray:
    """Pack a ``[W, H, 3]`` MiniGrid encoding into ``[H, W]`` int32 codes (row-major by y)."""
    codes = layout[..., 0].astype(np.int32) | layout[..., 1].astype(np.int32) << 8
    codes |= layout[..., 2].astype(np.int32) << 16
    return np.ascontiguousarray(codes.T)  # [H, W]


def empty_layout(width: int, height: int) -> np.ndarray:
    """A ``[W, H, 3]`` layout filled with walls, to carve a task into."""
    layout = np.empty((width, height, 3), dtype=np.uint8)
    layout[:] = WALL_CELL
    return layout


def check_view_size(agent_view_size: int) -> None:
    """Raise ``ValueError`` unless the view size is an odd int >= 3 (MiniGrid's rule)."""
    if (
        not isinstance(agent_view_size, int | np.integer)
        or agent_view_size < 3
        or agent_view_size % 2 == 0
    ):
        raise ValueError(
            f"agent_view_size={agent_view_size!r} is not allowed: it must be an odd int >= 3"
        )


def check_max_steps(max_steps: int) -> None:
    """Raise ``ValueError`` unless an episode may last at least one step."""
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} is not allowed: it must be >= 1")


def check_no_render(render_mode: str | None) -> None:
    """Raise ``ValueError`` for any ``render_mode``: the batched twins do not render
    (the MiniGrid classes of the same ids do)."""
    if render_mode is not None:
        raise ValueError(f"render_mode={render_mode!r} is not allowed: the twin does not render")


def _overlap_table() -> torch.Tensor:
    """Bool table indexed by ``type | state << 8``: can the agent step onto this cell?"""
    table = torch.zeros(1 << 16, dtype=torch.bool)
    for name in ("empty", "floor", "goal", "lava"):
        for state in range(3):
            table[OBJECT_TO_IDX[name] | state << 8] = True
    table[OBJECT_TO_IDX["door"]] = True  # state 0: an open door, as Door.can_overlap says
    return table


class EnvSelection:
    """The envs an episode starts in: a mask ``[N]`` and, on the sparse path, their index.

    Dense (``index is None``): every op runs over all ``N`` envs with ``torch.where``, no
    host sync (the CUDA path). Sparse: ``index`` ``[k]`` lists the masked envs (found with
    ``nonzero``, cheap on CPU) and ops touch only those ``k`` rows. Values passed to
    ``put`` have ``size`` rows either way, so a hook is written once for both.
    """

    __slots__ = ("mask", "index", "size")

    def __init__(self, mask: torch.Tensor, index: torch.Tensor | None = None) -> None:
        self.mask = mask  # [N] bool
        self.index = index  # [k] long, or None (dense)
        self.size = mask.shape[0] if index is None else index.shape[0]

    @classmethod
    def sparse(cls, mask: torch.Tensor) -> EnvSelection:
        """Selection of the masked envs by index (one ``nonzero``: a host sync on CUDA)."""
        return cls(mask, mask.nonzero().view(-1))

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rows ``[size, ...]`` of a per-env tensor ``[N, ...]`` (all of them when dense)."""
        return tensor if self.index is None else tensor.index_select(0, self.index)

    def put(self, dst: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """New tensor: ``dst`` ``[N, ...]`` with the selected rows set to ``values``."""
        if self.index is None:
            return torch.where(self.mask.view(-1, *([1] * (dst.dim() - 1))), values, dst)
        return dst.index_copy(0, self.index, values.to(dst.dtype))

    def fill(self, dst: torch.Tensor, value: float | int | bool) -> torch.Tensor:
        """New tensor: ``dst`` ``[N, ...]`` with the selected rows set to ``value``."""
        if self.index is None:
            return dst.masked_fill(self.mask.view(-1, *([1] * (dst.dim() - 1))), value)
        return dst.index_fill(0, self.index, value)


def check_batch(num_envs: int, device: str | torch.device) -> torch.device:
    """The device of a batch of `num_envs` envs, or a one-line `ValueError`: ``num_envs``
    must be an int >= 1, and the device one this torch can use (a CUDA device needs CUDA)."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} is not allowed: it must be an int >= 1")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: CUDA is not available here; allowed: 'cpu'")
    return device


class BatchedGrid:
    """``N`` grids with one agent each, as tensors on one device.

    Every env starts from ``layout`` (``[W, H, 3]`` MiniGrid encoding). With ``shared``
    all envs read one copy (a layout that never changes); otherwise each env owns a copy
    that ``write`` can change per episode (a batch of layouts of different sizes is padded
    to the largest by its task, which writes walls where a smaller layout ends).

    Coordinates are MiniGrid's: ``x`` east, ``y`` south, direction 0 east, 1 south, 2 west,
    3 north. The stored grid is padded by ``view_size - 1`` walls on every side, so a view
    gather never leaves the tensor; MiniGrid likewise shows walls outside its grid.

    The agent is stored as ``pos``, its flat index into ``cells`` (``x`` and ``y`` are read
    from it through lookup tables), and ``dir``; ``passable`` mirrors ``cells`` with "can
    the agent step here", so a move is one gather. Lookups use ``index_select``, several
    times faster than advanced indexing on CPU.
    """

    def __init__(
        self,
        num_envs: int,
        layout: np.ndarray,
        view_size: int,
        device: torch.device,
        shared: bool = False,
    ) -> None:
        check_view_size(view_size)
        width, height = layout.shape[0], layout.shape[1]
        self.num_envs, self.width, self.height, self.view_size = num_envs, width, height, view_size
        self.device = device
        self.pad = view_size - 1
        self.padded_width = width + 2 * self.pad
        self.padded_height = height + 2 * self.pad
        cells_per_env = self.padded_width * self.padded_height
        self.wall_code = pack_cell(WALL_CELL)
        self.empty_code = pack_cell(EMPTY_CELL)
        padded = np.full((self.padded_height, self.padded_width), self.wall_code, np.int32)
        p = self.pad
        padded[p : p + height, p : p + width] = pack_layout(layout)
        self.base = torch.as_tensor(padded.reshape(-1), device=device)  # [Hp * Wp]
        self._overlap = _overlap_table().to(device)
        self.base_passable = self.can_overlap(self.base)  # [Hp * Wp]
        self.shared = shared
        if shared:
            # Every env reads the same cells: no copy per env, no per-env offset.
            self.cells = self.base  # [Hp * Wp]
            self.passable = self.base_passable  # [Hp * Wp]
            self.env_offset = torch.zeros(num_envs, dtype=torch.long, device=device)
        else:
            self.cells = self.base.repeat(num_envs)  # [N * Hp * Wp]
            self.passable = self.base_passable.repeat(num_envs)  # [N * Hp * Wp]
            self.env_offset = torch.arange(num_envs, device=device) * cells_per_env
        # Layout coordinates of each padded cell, to read x and y from a local index.
        ys, xs = np.divmod(np.arange(cells_per_env), self.padded_width)
        self._x_of = torch.as_tensor(xs - self.pad, device=device)  # [Hp * Wp]
        self._y_of = torch.as_tensor(ys - self.pad, device=device)  # [Hp * Wp]
        one = torch.ones(num_envs, dtype=torch.long, device=device)
        self.pos = self.env_offset + self.local_index(one, one)  # [N] flat index into cells
        self.dir = torch.zeros(num_envs, dtype=torch.long, device=device)  # [N]
        dir_vec = torch.as_tensor(np.stack(DIR_TO_VEC), dtype=torch.long)  # [4, 2]
        # Flat offset of the cell in front, per direction.
        self._front = (dir_vec[:, 1] * self.padded_width + dir_vec[:, 0]).to(device)  # [4]
        self._turn = torch.tensor([3, 1, 0], dtype=torch.long, device=device)  # left, right, fwd
        # View cell (vx, vy) of direction d shows world cell
        #   agent + dir_vec * (V - 1 - vy) + right_vec * (vx - V // 2),  right_vec = (-dy, dx),
        # the inverse of MiniGridEnv.get_view_coords. Flattened in (vx, vy) order, like the
        # observation's first two axes.
        v = view_size
        vx, vy = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
        fwd, lat = (v - 1 - vy).reshape(-1), (vx - v // 2).reshape(-1)
        offsets = [
            (dy * fwd + dx * lat) * self.padded_width + (dx * fwd - dy * lat)
            for dx, dy in DIR_TO_VEC
        ]
        self._view_offset = torch.as_tensor(np.stack(offsets), device=device)  # [4, V*V]
        self._agent_cell = (v // 2) * v + (v - 1)  # flat (vx, vy) index of the agent

    # -- coordinates ----------------------------------------------------------------------
    def local_index(self, x: Any, y: Any) -> Any:
        """Index of layout cell ``(x, y)`` into one env's padded grid (int or any shape)."""
        return (y + self.pad) * self.padded_width + (x + self.pad)

    def flat_index(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Index into ``cells`` of cell ``(x, y)``; ``x``, ``y`` are ``[N]`` or ``[N, K]``."""
        offset = self.env_offset if x.dim() == 1 else self.env_offset[:, None]
        return offset + self.local_index(x, y)

    @property
    def local_pos(self) -> torch.Tensor:
        """``[N]`` index of each agent's cell into its own env's padded grid."""
        return self.pos if self.shared else self.pos - self.env_offset

    @property
    def x(self) -> torch.Tensor:
        """``[N]`` x of each agent (a new tensor)."""
        return self._x_of.index_select(0, self.local_pos)

    @property
    def y(self) -> torch.Tensor:
        """``[N]`` y of each agent (a new tensor)."""
        return self._y_of.index_select(0, self.local_pos)

    def can_overlap(self, codes: torch.Tensor) -> torch.Tensor:
        """Bool, same shape as packed ``codes``: can the agent step onto these cells?"""
        return self._overlap[(codes & 0xFF) | ((codes >> 8) & 0xFF00)]

    # -- writing ----------------------------------------------------------------------------
    def write(self, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor):
        """Set cells ``(x, y)`` (``[N, K]``) to ``codes`` for envs where ``mask`` (``[N]``) holds.

        Unmasked envs write back what they hold, so no boolean indexing (and no device
        sync) is needed. The ``K`` cells of one env must be distinct.
        """
        self.write_at(EnvSelection(mask), self.local_index(x, y), codes)

    def write_at(self, sel: EnvSelection, local: torch.Tensor, codes: torch.Tensor) -> None:
        """Set the cells at local indices ``local`` (``[sel.size, K]``, distinct per env) of
        the selected envs to ``codes`` (``[sel.size, K]`` packed)."""
        if self.shared:
            raise ValueError("write is not allowed on a shared grid: pass shared=False")
        passable = self.can_overlap(codes)  # [size, K]
        if sel.index is None:
            for table, new in ((self.cells, codes), (self.passable, passable)):
                rows = table.view(self.num_envs, -1)  # [N, Hp * Wp]
                old = rows.gather(1, local)
                rows.scatter_(1, local, torch.where(sel.mask[:, None], new, old))
            return
        flat = (self.env_offset.index_select(0, sel.index)[:, None] + local).view(-1)
        self.cells.index_copy_(0, flat, codes.reshape(-1).to(self.cells.dtype))
        self.passable.index_copy_(0, flat, passable.reshape(-1))

    def place(self, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor):
        """Move the agents of masked envs to ``(x, y)`` facing ``direction`` (all ``[N]``)."""
        self.place_at(EnvSelection(mask), x, y, direction)

    def place_at(self, sel: EnvSelection, x: Any, y: Any, direction: Any) -> None:
        """Move the selected agents to ``(x, y)`` facing ``direction`` (ints, or tensors
        ``[sel.size]``)."""
        self.place_local(sel, self.local_index(x, y), direction)

    def place_local(self, sel: EnvSelection, local: Any, direction: Any) -> None:
        """Move the selected agents to local cell index ``local`` facing ``direction``
        (ints, or tensors ``[sel.size]``)."""
        size, dev = (sel.size,), self.device
        local = torch.as_tensor(local, device=dev).expand(size)
        direction = torch.as_tensor(direction, device=dev).expand(size)
        pos = local if self.shared else sel.take(self.env_offset) + local
        self.pos = sel.put(self.pos, pos)
        self.dir = sel.put(self.dir, direction)

    # -- stepping ---------------------------------------------------------------------------
    def move(self, action: torch.Tensor) -> torch.Tensor:
        """Apply actions ``[N]`` (0 left, 1 right, 2 forward); return ``[N]`` bool "moved"."""
        target = self.pos + self._front.index_select(0, self.dir)  # [N]
        moved = self.passable.index_select(0, target) & (action == 2)
        self.pos = torch.where(moved, target, self.pos)
        self.dir = (self.dir + self._turn.index_select(0, action)).bitwise_and_(3)
        return moved

    def view_codes(self) -> torch.Tensor:
        """Packed codes of each agent's egocentric view, ``[N, V*V]`` in (vx, vy) order."""
        index = self._view_offset.index_select(0, self.dir).add_(self.pos[:, None])  # [N, V*V]
        codes = self.cells.index_select(0, index.view(-1)).view(index.shape)
        # MiniGrid shows the agent's own cell as empty (it carries nothing).
        codes[:, self._agent_cell] = self.empty_code
        return codes

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Unpack view codes ``[N, V*V]`` into MiniGrid's ``[N, V, V, 3]`` uint8 image."""
        v = self.view_size
        # One strided copy per channel: several times faster on CPU than one copy of the
        # [..., :3] slice, whose innermost loop would run over 3 bytes.
        src = codes.view(torch.uint8).view(-1, 4)  # [N * V*V, 4]
        image = torch.empty(src.shape[0], 3, dtype=torch.uint8, device=codes.device)
        for channel in range(3):
            image[:, channel] = src[:, channel]
        return image.view(-1, v, v, 3)

    @staticmethod
    def object_type(codes: torch.Tensor) -> torch.Tensor:
        """MiniGrid object type of packed codes."""
        return codes & 0xFF


def _to_tensor(
    value: Any, num_envs: int, shape: tuple[int, ...], device: torch.device, name: str
) -> torch.Tensor:
    """Option value as a long tensor ``[N, *shape]``: one value for all envs or one per env."""
    tensor = torch.as_tensor(value, device=device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(f"option {name!r} must hold integers, got dtype {tensor.dtype}")
    if tuple(tensor.shape) == shape:
        tensor = tensor.expand(num_envs, *shape)  # one value for every env
    elif tuple(tensor.shape) != (num_envs, *shape):
        raise ValueError(
            f"{name} of shape {tuple(tensor.shape)} is not allowed: expected {shape} "
            f"(all envs) or {(num_envs, *shape)} (one per env)"
        )
    return tensor.long().contiguous()


class BatchedGridVectorEnv(gym.vector.VectorEnv):
    """Base of every batched twin: a ``VectorEnv`` of ``N`` grid worlds on one device.

    Observations ``[N, V, V, 3]`` uint8, rewards ``[N]`` float32, flags ``[N]`` bool and
    ``info`` values ``[N]`` tensors, all on ``device``. Autoreset is ``NEXT_STEP``: the step
    after an episode ends ignores that env's action, resets it and returns the new first
    observation with reward 0 and both flags False.

    A task subclass sets ``layout_keys`` and implements ``_draw_layouts``,
    ``_apply_layouts``, ``_task_step`` and ``_observe_event``.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    layout_keys: tuple[str, ...] = ()
    final_info_keys: tuple[str, ...] = ("episode_length",)

    def __init__(
        self,
        num_envs: int,
        grid: BatchedGrid,
        check_actions: bool | None = None,
    ) -> None:
        check_batch(num_envs, grid.device)
        self.num_envs = num_envs
        self.grid = grid
        self.device = grid.device
        v = grid.view_size
        self.single_observation_space = spaces.Box(0, 255, (v, v, 3), np.uint8)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = spaces.Box(0, 255, (num_envs, v, v, 3), np.uint8)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, NUM_ACTIONS))
        # Checking action values needs the values on the host: free on CPU, a sync on CUDA.
        self.check_actions = self.device.type == "cpu" if check_actions is None else check_actions
        # Auto-reset only the envs that finished (found with nonzero, cheap on CPU), or all
        # envs with torch.where (no host sync: the CUDA path). Both give the same results.
        self.sparse_reset = self.device.type == "cpu"
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence().entropy % (2**63)))
        n, dev = num_envs, self.device
        self.step_count = torch.zeros(n, dtype=torch.long, device=dev)
        self.max_steps = torch.ones(n, dtype=torch.long, device=dev)
        self.needs_reset = torch.zeros(n, dtype=torch.bool, device=dev)
        self._all = torch.ones(n, dtype=torch.bool, device=dev)
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_mask = torch.zeros(n, dtype=torch.bool, device=dev)

    # -- hooks a task implements -------------------------------------------------------
    def _draw_layouts(self) -> dict[str, torch.Tensor]:
        """Random per-env layout choices for every env, from ``self.generator``."""
        raise NotImplementedError

    def _layout_shape(self, key: str) -> tuple[int, ...]:
        """Shape of one env's value of layout option ``key`` (default: a scalar)."""
        return ()

    def _check_layouts(self, layouts: dict[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` for injected layout values the task cannot build."""

    def _apply_layouts(self, mask: torch.Tensor, layouts: dict[str, torch.Tensor]) -> None:
        """Start new episodes in masked envs: write the layout, place the agent, set
        ``self.max_steps`` and reset task counters."""
        raise NotImplementedError

    def _apply_layouts_at(self, sel: EnvSelection, layouts: dict[str, torch.Tensor]) -> None:
        """``_apply_layouts`` for the envs of ``sel`` (``layouts`` values are ``[N, ...]``).

        Override it to touch only the selected rows (``sel.take`` / ``sel.put``, see
        `EnvSelection`); the default calls ``_apply_layouts`` with the mask."""
        self._apply_layouts(sel.mask, layouts)

    def _task_step(
        self, action: torch.Tensor, moved: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """After the move: ``(reward [N] f32, terminated [N] bool, event [N] long,
        final_info)``, ``final_info`` holding the task's ``[N]`` end-of-episode values."""
        raise NotImplementedError

    def _observe_event(self, codes: torch.Tensor) -> torch.Tensor:
        """Event code ``[N]`` read from the view codes ``[N, V*V]`` (e.g. cue visible)."""
        return torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    # -- layouts ------------------------------------------------------------------------
    def _parse_layouts(self, options: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.layout_keys))
        if unknown:
            raise ValueError(
                f"unknown reset options {unknown}: allowed are {sorted(self.layout_keys)}"
            )
        layouts = {
            key: _to_tensor(value, self.num_envs, self._layout_shape(key), self.device, key)
            for key, value in options.items()
        }
        self._check_layouts(layouts)
        return layouts

    def set_next_layouts(self, **layouts: Any) -> None:
        """Inject the layout of each env's next auto-reset episode (same keys as ``reset``
        options, values per env). Replaces earlier pending layouts; used once per env."""
        parsed = self._parse_layouts(layouts)
        self._pending = parsed
        self._pending_mask = self._all.clone()

    def _start_episodes(self, sel: EnvSelection, layouts: dict[str, torch.Tensor]) -> None:
        # Draw for every env on every call, even when none starts an episode: the random
        # stream then does not depend on the reset path (sparse or dense).
        drawn = self._draw_layouts()
        drawn.update(layouts)
        if self._pending:
            use_pending = sel.mask & self._pending_mask
            for key, value in self._pending.items():
                pick = use_pending.view(-1, *([1] * (value.dim() - 1)))
                drawn[key] = torch.where(pick, value, drawn[key])
            self._pending_mask = self._pending_mask & ~sel.mask
        if sel.size == 0:
            return
        self._apply_layouts_at(sel, drawn)
        self.step_count = sel.fill(self.step_count, 0)

    def _select(self, mask: torch.Tensor) -> EnvSelection:
        return EnvSelection.sparse(mask) if self.sparse_reset else EnvSelection(mask)

    # -- gymnasium API ------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Start a new episode in every env. ``options`` maps layout keys to per-env values."""
        if seed is not None:
            self.generator.manual_seed(int(seed))
        layouts = self._parse_layouts(options)
        self._start_episodes(self._select(self._all), layouts)
        self.needs_reset = torch.zeros_like(self.needs_reset)
        codes = self.grid.view_codes()
        return self.grid.encode(codes), {"event": self._observe_event(codes), "_event": self._all}

    def _as_actions(self, actions: Any) -> torch.Tensor:
        action = torch.as_tensor(actions, device=self.device)
        if action.shape != (self.num_envs,):
            raise ValueError(
                f"actions of shape {tuple(action.shape)} are not allowed: expected "
                f"({self.num_envs},), one action per env"
            )
        if action.is_floating_point() or action.dtype == torch.bool:
            raise ValueError(f"actions of dtype {action.dtype} are not allowed: use integers")
        action = action.long()
        if self.check_actions:
            bad = (action < 0) | (action >= NUM_ACTIONS)
            if bool(bad.any()):
                value = int(action[bad][0])
                raise ValueError(
                    f"action {value} is outside Discrete({NUM_ACTIONS}): allowed are "
                    "0 (left), 1 (right), 2 (forward)"
                )
        return action

    def step(
        self, actions: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step of every env; envs whose episode ended on the last step reset instead."""
        action = self._as_actions(actions)  # [N]
        resetting = self.needs_reset  # [N]
        step_count = self.step_count + 1  # [N], a new tensor: reported as episode_length
        self.step_count = step_count
        moved = self.grid.move(action)
        reward, terminated, event, final_info = self._task_step(action, moved)
        truncated = step_count >= self.max_steps
        final_info["episode_length"] = step_count
        self._start_episodes(self._select(resetting), {})
        codes = self.grid.view_codes()  # [N, V*V]
        obs = self.grid.encode(codes)  # [N, V, V, 3]
        live = ~resetting
        reward = torch.where(live, reward, 0.0)
        terminated = terminated & live
        truncated = truncated & live
        event = torch.maximum(event.masked_fill(resetting, 0), self._observe_event(codes))
        done = terminated | truncated
        self.needs_reset = done
        info: dict[str, torch.Tensor] = {"event": event, "_event": self._all}
        for key, value in final_info.items():
            info[key] = value
            info["_" + key] = done
        return obs, reward, terminated, truncated, info
