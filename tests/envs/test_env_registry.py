"""Walk the registry: every Lethe/* id passes both env checkers and is deterministic."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs import REGISTERED_IDS
from envs.grid import BatchedGridVectorEnv
from envs.portal import PortalEnv

LETHE_IDS = sorted(i for i in gymnasium.registry if i.startswith("Lethe/"))


def test_every_declared_id_is_registered():
    outside = sorted(i for i in REGISTERED_IDS if not i.startswith("Lethe/"))
    assert not outside, f"ids registered in envs/ belong in the Lethe/ namespace: {outside}"
    assert set(LETHE_IDS) == set(REGISTERED_IDS)
    assert {"Lethe/Corridor-v0", "Lethe/Portal-v0", "Lethe/Corridor-L1000-v0"} <= set(LETHE_IDS)


#: what the README's table of environments promises: corridor lengths (shortest, longest)
DOCUMENTED_LENGTHS = {
    "Lethe/Corridor-v0": (5, 50),
    "Lethe/Corridor-S-v0": (5, 10),
    "Lethe/Corridor-L100-v0": (100, 100),
    "Lethe/Corridor-L500-v0": (500, 500),
    "Lethe/Corridor-L1000-v0": (1000, 1000),
}


@pytest.mark.parametrize(("env_id", "lengths"), DOCUMENTED_LENGTHS.items())
def test_corridors_have_their_documented_lengths(env_id, lengths):
    env = gymnasium.make(env_id).unwrapped
    assert (env.min_length, env.max_length) == lengths
    twin = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    assert (twin.min_length, twin.max_length) == lengths


def test_portals_have_their_documented_rooms():
    """Portal-v0: 4 rooms; Portal-Hard-v0: 6 rooms and longer hallways (README's table)."""
    portal = gymnasium.make("Lethe/Portal-v0").unwrapped.geometry
    hard = gymnasium.make("Lethe/Portal-Hard-v0").unwrapped.geometry
    assert (portal.num_rooms, hard.num_rooms) == (4, 6)
    assert hard.hallway_length > portal.hallway_length


def middle_row_passages(env) -> list[int]:
    """Lengths of the one-cell-wide passages on a Portal's middle row (y = 2): runs of
    empty cells with walls both north and south. Between two rooms that is the hallway
    plus the doorway in the next room's west wall."""
    grid = env.unwrapped.grid

    def is_wall(x, y):
        cell = grid.get(x, y)
        return cell is not None and cell.type == "wall"

    runs, run = [], 0
    for x in range(grid.width):
        if grid.get(x, 2) is None and is_wall(x, 1) and is_wall(x, 3):
            run += 1
        elif run:
            runs.append(run)
            run = 0
    return runs


@pytest.mark.parametrize(
    ("make", "rooms", "hallway"),
    [
        (lambda: gymnasium.make("Lethe/Portal-v0"), 4, 8),
        (lambda: gymnasium.make("Lethe/Portal-Hard-v0"), 6, 16),
        (lambda: PortalEnv(num_rooms=3, hallway_length=0), 3, 0),
        (lambda: PortalEnv(num_rooms=2, hallway_length=1), 2, 1),
    ],
    ids=["Portal-v0", "Portal-Hard-v0", "no-hallway", "hallway-1"],
)
def test_portal_hallways_have_their_documented_length(make, rooms, hallway):
    """Each pair of consecutive rooms is joined by ``hallway_length`` hallway cells and a
    doorway (PortalEnv's docstring: Portal-v0 hallways of 8 cells, Portal-Hard-v0 16)."""
    env = make()
    env.reset(seed=0)
    assert middle_row_passages(env) == [hallway + 1] * (rooms - 1)


def test_portal_hard_markers_all_have_different_colours():
    """Marker colours repeat only after six rooms: the six rooms of Portal-Hard-v0 are all
    told apart by their markers (floor tiles on the middle row)."""
    env = gymnasium.make("Lethe/Portal-Hard-v0")
    env.reset(seed=0)
    grid = env.unwrapped.grid
    cells = (grid.get(x, 2) for x in range(grid.width))
    colours = [cell.color for cell in cells if cell is not None and cell.type == "floor"]
    assert len(colours) == 6 and len(set(colours)) == 6


@pytest.mark.parametrize("env_id", LETHE_IDS)
def test_env_checkers(env_id):
    env = gymnasium.make(env_id)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (3, 3, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that a 3x3 image is small for a CNN
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)
    env.close()


@pytest.mark.parametrize("env_id", LETHE_IDS)
def test_deterministic_under_seed(env_id):
    def rollout(seed):
        env = gymnasium.make(env_id)
        obs, info = env.reset(seed=seed)
        out = [obs.copy(), info["event"]]
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
            out += [obs.copy(), reward, terminated, truncated, info["event"]]
        return out

    for x, y in zip(rollout(7), rollout(7), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("env_id", LETHE_IDS)
def test_vector_entry_point_gives_the_twin(env_id):
    vec = gymnasium.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(vec, BatchedGridVectorEnv)
    obs, info = vec.reset(seed=0)
    assert obs.shape == (3, 3, 3, 3) and obs.dtype == torch.uint8
    obs, reward, terminated, truncated, info = vec.step(torch.tensor([0, 1, 2]))
    assert reward.shape == (3,) and info["event"].shape == (3,)


def test_rgb_array_render():
    env = gymnasium.make("Lethe/Corridor-S-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


def test_module_prefixed_id_works_in_a_fresh_interpreter():
    code = (
        "import gymnasium, sys;"
        "e = gymnasium.make('envs:Lethe/Corridor-v0');"
        "print(e.reset(seed=0)[0].shape);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="."
    )
    assert out.stdout.splitlines()[0] == "(3, 3, 3)"


def test_import_envs_is_cheap():
    code = "import sys, envs; print('torch' in sys.modules, 'minigrid' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
