"""The curriculum rule of the Lethe tasks, shared by the MiniGrid classes and their twins.

A task with a curriculum draws its episodes at a *level* (the Corridor: its longest length;
the Portal: how many rooms a trial crosses). After every ``curriculum_episodes`` episodes
drawn at the current level, the level goes up (the task's ``grow``) if at least
``curriculum_success`` of them succeeded, down (``shrink``, not below the start) if fewer than
``curriculum_retreat`` did. Episodes drawn at an earlier level do not count.

Each env keeps ``curriculum_level``, ``_episode_level`` (the level its current episode was
drawn at) and the block's counts ``_level_episodes`` / ``_level_successes``: Python ints in
the MiniGrid classes (`count_episode`), tensors on the device in the twins
(`count_episodes`: no host sync). ``curriculum_last`` is the task's last level (the level
without a curriculum). An episode that ends reports the level it was drawn at as
``info["curriculum_level"]``: episodes under way when the level moves end at their old
level, so a learner's figures "at the last level" count by it (`agents.rollout`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def init_curriculum(
    env: Any,
    start: int | None,
    episodes: int,
    success: float,
    retreat: float,
    max_level: int,
    max_name: str,
) -> int:
    """Check the curriculum arguments and set them on ``env`` (either implementation);
    returns the first level (``max_level`` without a curriculum). ``max_name`` names the
    argument that bounds the level in error messages. The block's counts start as Python
    ints (a twin replaces them with tensors: `init_batched_counts`)."""
    env.curriculum = start is not None
    env.curriculum_last = int(max_level)
    env._episode_level, env._level_episodes, env._level_successes = 0, 0, 0
    env.curriculum_start = max_level
    env.curriculum_episodes, env.curriculum_success = episodes, success
    env.curriculum_retreat = retreat
    if start is None:
        return env.curriculum_start
    if not isinstance(start, int | np.integer) or not 1 <= start <= max_level:
        raise ValueError(
            f"curriculum_start={start!r} is not allowed: it must be an int in "
            f"[1, {max_name}={max_level}] (or None: no curriculum)"
        )
    if not isinstance(episodes, int | np.integer) or episodes < 1:
        raise ValueError(f"curriculum_episodes={episodes!r} is not allowed: it must be an int >= 1")
    if not 0 < success <= 1:
        raise ValueError(f"curriculum_success={success!r} is not allowed: it must be in (0, 1]")
    if not 0 <= retreat < success:
        raise ValueError(
            f"curriculum_retreat={retreat!r} is not allowed: it must be in "
            f"[0, curriculum_success={success})"
        )
    env.curriculum_start = int(start)
    return env.curriculum_start


def count_episode(
    env: Any,
    info: dict[str, Any],
    success: bool,
    grow: Callable[[int], int],
    shrink: Callable[[int], int],
) -> None:
    """One ended episode of a MiniGrid env: report the level it was drawn at in its ``info``,
    count it, and move the level after a full block."""
    info["curriculum_level"] = env._episode_level
    if env._episode_level != env.curriculum_level:
        return  # drawn at an earlier level
    env._level_episodes += 1
    env._level_successes += success
    if env._level_episodes >= env.curriculum_episodes:
        if env._level_successes >= env.curriculum_success * env._level_episodes:
            env.curriculum_level = grow(env.curriculum_level)
        elif env._level_successes < env.curriculum_retreat * env._level_episodes:
            env.curriculum_level = shrink(env.curriculum_level)
        env._level_episodes, env._level_successes = 0, 0


def count_episodes(
    env: Any,
    info: dict[str, torch.Tensor],
    done: torch.Tensor,
    success: torch.Tensor,
    grow: Callable[[torch.Tensor], torch.Tensor],
    shrink: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """`count_episode` for all envs of a twin at once, as tensor ops on the device.

    ``done`` / ``success``: ``[N]`` bool, the episodes that end at this step and which of
    them succeeded. The twin's envs share one level and one block. ``info`` gets
    ``curriculum_level``, the level each ending episode was drawn at (a copy: the next resets
    overwrite ``_episode_level``), masked by ``_curriculum_level = done``.
    """
    info["curriculum_level"] = env._episode_level.clone()
    info["_curriculum_level"] = done
    counted = done & (env._episode_level == env.curriculum_level)
    episodes = env._level_episodes + counted.sum()
    successes = env._level_successes + (counted & success).sum()
    full = episodes >= env.curriculum_episodes
    advance = full & (successes >= env.curriculum_success * episodes)
    retreat = full & ~advance & (successes < env.curriculum_retreat * episodes)
    level = env.curriculum_level
    env.curriculum_level = torch.where(
        advance, grow(level), torch.where(retreat, shrink(level), level)
    )
    env._level_episodes = torch.where(full, 0, episodes)
    env._level_successes = torch.where(full, 0, successes)


def init_batched_counts(env: Any, level: int, num_envs: int, device: torch.device) -> None:
    """The twin's curriculum state as tensors on ``device``: one level, one block, and the
    level each env's episode was drawn at."""
    env.curriculum_level = torch.tensor(level, dtype=torch.long, device=device)
    env._level_episodes = torch.zeros((), dtype=torch.long, device=device)
    env._level_successes = torch.zeros((), dtype=torch.long, device=device)
    env._episode_level = torch.zeros(num_envs, dtype=torch.long, device=device)
