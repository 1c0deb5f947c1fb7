"""The egocentric view, worked out by hand from MiniGrid's conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.corridor import CorridorEnv, CorridorVectorEnv

EMPTY, WALL, GREEN_BALL = [1, 0, 0], [2, 5, 0], [6, 1, 0]


def start_view_by_hand() -> np.ndarray:
    """Corridor of length 3, green cue, agent at (1, 2) facing east, view 3.

    MiniGrid's image is indexed [vx, vy]: vy = 2 is the agent's row (vx = 1 the agent,
    shown empty), vy decreases ahead; vx = 0 is the agent's left (north when facing east).
    World cell of (vx, vy) facing east: x = 1 + (2 - vy), y = 2 + (vx - 1).
    """
    image = np.zeros((3, 3, 3), np.uint8)
    image[0, 2] = GREEN_BALL  # (1, 1): the cue in its alcove
    image[1, 2] = EMPTY  # the agent's own cell
    image[2, 2] = WALL  # (1, 3)
    for vy in (0, 1):  # two cells ahead: walls north and south, corridor in the middle
        image[0, vy], image[1, vy], image[2, vy] = WALL, EMPTY, WALL
    return image


def test_start_view_minigrid():
    obs, info = CorridorEnv(length=3).reset(seed=0, options={"cue": 0})
    np.testing.assert_array_equal(obs, start_view_by_hand())
    assert info["event"] == 1  # the cue is in view


def test_start_view_twin():
    obs, info = CorridorVectorEnv(2, max_length=9).reset(options={"length": [3, 9], "cue": 0})
    for i in range(2):
        np.testing.assert_array_equal(obs[i].numpy(), start_view_by_hand())
    assert info["event"].tolist() == [1, 1]


@pytest.mark.parametrize("make", ["minigrid", "twin"])
def test_junction_view_facing_east(make):
    """At the junction (x = length + 1 = 4) facing east: the arms are the empty cells on
    both sides (vx = 0 north, vx = 2 south), everything ahead is wall."""
    expected = np.zeros((3, 3, 3), np.uint8)
    expected[:, 0] = expected[:, 1] = WALL
    expected[0, 2] = expected[1, 2] = expected[2, 2] = EMPTY
    if make == "minigrid":
        env = CorridorEnv(length=3)
        env.reset(seed=0, options={"cue": 1})
        for _ in range(3):
            obs, reward, *_ = env.step(2)
        obs = np.asarray(obs)
    else:
        env = CorridorVectorEnv(1, max_length=20)
        env.reset(options={"length": 3, "cue": 1})
        for _ in range(3):
            obs, reward, *_ = env.step(torch.tensor([2]))
        obs = obs[0].numpy()
    np.testing.assert_array_equal(obs, expected)
