"""Lethe environments: MiniGrid tasks that need memory, each with a batched torch twin.

Importing this package registers the ``Lethe/*`` ids with Gymnasium (entry points are
strings, so nothing heavy is imported until an env is made)::

    gymnasium.make("Lethe/Corridor-v0")                      # MiniGrid class, numpy
    gymnasium.make("envs:Lethe/Corridor-v0")                 # same, without importing envs
    gymnasium.make_vec("Lethe/Corridor-v0", num_envs=4096,
                       vectorization_mode="vector_entry_point", device="cuda")  # torch twin
"""

from __future__ import annotations

import gymnasium

_CORRIDOR = ("envs.corridor:CorridorEnv", "envs.corridor:CorridorVectorEnv")
_PORTAL = ("envs.portal:PortalEnv", "envs.portal:PortalVectorEnv")

REGISTERED_IDS: dict[str, tuple[tuple[str, str], dict[str, int]]] = {
    "Lethe/Corridor-v0": (_CORRIDOR, {"min_length": 5, "max_length": 50}),
    "Lethe/Corridor-S-v0": (_CORRIDOR, {"min_length": 5, "max_length": 10}),
    "Lethe/Corridor-L100-v0": (_CORRIDOR, {"length": 100}),
    "Lethe/Corridor-L500-v0": (_CORRIDOR, {"length": 500}),
    "Lethe/Corridor-L1000-v0": (_CORRIDOR, {"length": 1000}),
    "Lethe/Corridor-Curriculum-v0": (
        _CORRIDOR,
        {"min_length": 5, "max_length": 50, "curriculum_start": 10},
    ),
    "Lethe/Corridor-L100-Curriculum-v0": (_CORRIDOR, {"length": 100, "curriculum_start": 10}),
    "Lethe/Corridor-L1000-Curriculum-v0": (_CORRIDOR, {"length": 1000, "curriculum_start": 10}),
    "Lethe/Portal-v0": (_PORTAL, {"num_rooms": 4, "hallway_length": 8, "max_steps": 400}),
    "Lethe/Portal-Curriculum-v0": (
        _PORTAL,
        {"num_rooms": 4, "hallway_length": 8, "max_steps": 400, "curriculum_start": 1},
    ),
    "Lethe/Portal-Hard-v0": (_PORTAL, {"num_rooms": 6, "hallway_length": 16, "max_steps": 1000}),
}
"""Every id this package registers: ``id -> ((entry_point, vector_entry_point), kwargs)``."""

CURRICULUM_TASKS: dict[str, str] = {
    "Lethe/Corridor-Curriculum-v0": "Lethe/Corridor-v0",
    "Lethe/Corridor-L100-Curriculum-v0": "Lethe/Corridor-L100-v0",
    "Lethe/Corridor-L1000-Curriculum-v0": "Lethe/Corridor-L1000-v0",
    "Lethe/Portal-Curriculum-v0": "Lethe/Portal-v0",
}
"""The task each curriculum id teaches: where an agent trained on it is evaluated.

``Lethe/Corridor-Curriculum-v0``'s last level draws Corridor-v0's lengths (5 to 50); the long
ones end at lengths L/2 to L and are evaluated at the fixed length L; the Portal's last level
(all 4 rooms) is Portal-v0."""


def task_of(env_id: str) -> str:
    """The id an agent trained on ``env_id`` is evaluated on: itself, or the task a
    curriculum id teaches (`CURRICULUM_TASKS`)."""
    return CURRICULUM_TASKS.get(env_id, env_id)


def register_all() -> None:
    """Register every ``Lethe/*`` id (done once at import; re-running is harmless)."""
    for env_id, ((entry_point, vector_entry_point), kwargs) in REGISTERED_IDS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=vector_entry_point,
            kwargs=dict(kwargs),
        )


register_all()
