"""Scripted reference agents, to test the tasks against known behaviour.

- random: about half of the Corridor episodes that reach an arm succeed;
- the Corridor oracle reads the hidden cue from the env: success on every length;
- the Portal oracle has perfect memory of which portal worked in each room (it reads the
  agent's position, never the correct sides): wrong portals only in the first trial.

Each works on the MiniGrid class (one action from ``env.unwrapped``); random and the
Corridor oracle also on the batched twin (``[N]`` actions from its tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs import events
from envs.corridor import CorridorEnv, CorridorVectorEnv, junction_x
from envs.grid import NUM_ACTIONS
from envs.portal import PORTAL_Y, PortalEnv

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
