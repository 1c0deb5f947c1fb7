"""Scripted reference agents, to test the tasks against known behaviour.

- random: about half of the Corridor episodes that reach an arm succeed;
- the Corridor oracle reads the hidden cue from the env: success on every length;
- the Portal oracle has perfect memory of which portal worked in each room (it reads the
  agent's position, never the correct sides): wrong portals only in the first trial.

Each works on the MiniGrid class (one action from ``env.unwrapped``) and on the batched
twin (``[N]`` actions from its tensors, no Python loop over envs): ``random_actions``,
``corridor_oracle_actions`` and ``BatchedPortalOracle``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs import events
from envs.corridor import CorridorEnv, CorridorVectorEnv, junction_x
from envs.grid import NUM_ACTIONS
from envs.portal import PORTAL_Y, PortalEnv, PortalVectorEnv

EAST, SOUTH, WEST, NORTH = 0, 1, 2, 3


def steer(direction: Any, desired: Any) -> Any:
    """Action that turns toward ``desired`` or moves forward when facing it (int or tensor)."""
    turn = (desired - direction) % 4
    if isinstance(turn, torch.Tensor):
        return torch.where(turn == 0, 2, torch.where(turn == 1, 1, 0))
    return 2 if turn == 0 else 1 if turn == 1 else 0


def random_action(rng: np.random.Generator) -> int:
    """A uniformly random action."""
    return int(rng.integers(NUM_ACTIONS))


def random_actions(env: Any, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random ``[N]`` actions on a batched twin's device."""
    shape = (env.num_envs,)
    return torch.randint(0, NUM_ACTIONS, shape, generator=generator, device=env.device)


def corridor_oracle_action(env: CorridorEnv) -> int:
    """Walk east to the junction, then into the arm the (hidden) cue names."""
    x, _ = env.agent_pos
    desired = EAST if x < junction_x(env.length) else (NORTH if env.cue == 0 else SOUTH)
    return steer(env.agent_dir, desired)


def corridor_oracle_actions(env: CorridorVectorEnv) -> torch.Tensor:
    """Batched ``corridor_oracle_action``: ``[N]`` actions from the twin's tensors."""
    grid = env.grid
    arm = torch.where(env.cue == 0, NORTH, SOUTH)
    desired = torch.where(grid.x < junction_x(env.length), EAST, arm)
    return steer(grid.dir, desired)


class PortalOracle:
    """Perfect memory of Portal: tries the north portal of an unknown room, remembers the
    outcome of every portal it took, and takes the known correct one afterwards.

    Call ``reset()`` at each episode start, ``act(env)`` for an action and
    ``observe(info)`` with the step's info (it reads the ``event``).
    """

    def __init__(self) -> None:
        self.known: dict[int, int] = {}
        self._last: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget everything (a new episode draws new correct portals)."""
        self.known.clear()
        self._last = None

    def act(self, env: PortalEnv) -> int:
        """Next action from the agent's position (privileged, but no correct sides)."""
        geometry = env.geometry
        x, y = env.agent_pos
        room = max(r for r in range(geometry.num_rooms) if geometry.hallway_x[r] <= x)
        side = self.known.get(room, 0)
        room_x = geometry.room_x[room]
        if x < room_x + 2:
            desired = EAST  # along row 2 through the hallway and the room
        elif y != PORTAL_Y[side]:
            desired = NORTH if y > PORTAL_Y[side] else SOUTH
        else:
            desired = EAST  # into the portal
        action = steer(env.agent_dir, desired)
        stepping_in = action == 2 and x == room_x + 2 and y == PORTAL_Y[side]
        self._last = (room, side) if stepping_in else None
        return action

    def observe(self, info: dict[str, Any]) -> None:
        """Remember which side worked (or did not) in the room just left."""
        if self._last is None:
            return
        room, side = self._last
        if info["event"] == events.CORRECT_PORTAL:
            self.known[room] = side
        elif info["event"] == events.WRONG_PORTAL:
            self.known[room] = 1 - side


class BatchedPortalOracle:
    """`PortalOracle` for all envs of a `PortalVectorEnv` at once, on the twin's device.

    Same policy: try the north portal of a room it knows nothing about, remember the
    outcome, take the known correct one afterwards. It reads only the agents' positions,
    never the correct sides. Call ``act(env)`` for ``[N]`` actions, then
    ``observe(info, terminated | truncated)`` with the step's outputs: it learns from
    ``info["event"]`` and forgets an env's memory when its episode ends (the twin resets
    it on the next step).
    """

    def __init__(self, env: PortalVectorEnv) -> None:
        geometry, n, dev = env.geometry, env.num_envs, env.device
        self._hallway_x = torch.tensor(geometry.hallway_x, device=dev)  # [R]
        self._room_x = torch.tensor(geometry.room_x, device=dev)  # [R]
        self.known = torch.full((n, geometry.num_rooms), -1, dtype=torch.long, device=dev)
        """``[N, R]``: the correct side of each room (0 north, 1 south), -1 unknown."""
        self._last_room = torch.zeros(n, dtype=torch.long, device=dev)
        self._last_side = torch.zeros(n, dtype=torch.long, device=dev)
        self._stepping_in = torch.zeros(n, dtype=torch.bool, device=dev)

    def reset(self) -> None:
        """Forget everything in every env (after ``env.reset``)."""
        self.known.fill_(-1)
        self._stepping_in.zero_()

    def act(self, env: PortalVectorEnv) -> torch.Tensor:
        """``[N]`` actions from the agents' positions (privileged, but no correct sides)."""
        grid = env.grid
        x, y = grid.x, grid.y  # [N]
        room = (x[:, None] >= self._hallway_x).sum(1) - 1  # [N] the room (or its hallway)
        side = self.known.gather(1, room[:, None])[:, 0].clamp(min=0)  # unknown: north
        portal_y = PORTAL_Y[0] + (PORTAL_Y[1] - PORTAL_Y[0]) * side
        inner_x = self._room_x.index_select(0, room) + 2  # the cell west of the portals
        turn_to = torch.where(y > portal_y, NORTH, SOUTH)
        desired = torch.where((x < inner_x) | (y == portal_y), EAST, turn_to)
        action = steer(grid.dir, desired)
        self._stepping_in = (action == 2) & (x == inner_x) & (y == portal_y)
        self._last_room, self._last_side = room, side
        return action

    def observe(self, info: dict[str, torch.Tensor], done: torch.Tensor) -> None:
        """Remember which side worked (or did not) where an agent just took a portal, and
        forget the envs whose episode ended (``done`` ``[N]`` bool)."""
        event = info["event"]
        learned = torch.where(
            event == events.CORRECT_PORTAL, self._last_side, 1 - self._last_side
        )  # [N]
        learn = self._stepping_in & (
            (event == events.CORRECT_PORTAL) | (event == events.WRONG_PORTAL)
        )
        row = self.known.gather(1, self._last_room[:, None])[:, 0]
        row = torch.where(learn, learned, row)
        self.known.scatter_(1, self._last_room[:, None], row[:, None])
        self.known.masked_fill_(done[:, None], -1)
