"""The observation encoders: which one each space gets, and what each reads from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.policy import (
    DiscreteEncoder,
    GridEncoder,
    PixelEncoder,
    VectorEncoder,
    encoder_for,
)


@pytest.mark.parametrize(
    ("space", "kind"),
    [
        (spaces.Discrete(4), DiscreteEncoder),
        (spaces.Discrete(3, start=-1), DiscreteEncoder),
        (spaces.Box(0, 255, (7, 7, 3), np.uint8), GridEncoder),  # MiniGrid's symbolic view
        (spaces.Box(0, 255, (16, 16, 4), np.uint8), GridEncoder),
        (spaces.Box(0, 255, (17, 17, 3), np.uint8), PixelEncoder),  # larger: an image
        (spaces.Box(0, 255, (8, 8, 5), np.uint8), PixelEncoder),  # more than 4 channels
        (spaces.Box(0, 255, (64, 64, 3), np.uint8), PixelEncoder),
        (spaces.Box(0.0, 1.0, (7, 7, 3), np.float32), VectorEncoder),  # floats: not categories
        (spaces.Box(-1.0, 1.0, (5,), np.float32), VectorEncoder),
        (spaces.Box(0, 255, (5, 4), np.uint8), VectorEncoder),
    ],
)
def test_each_space_gets_its_encoder(space, kind):
    encoder = encoder_for(space)
    assert type(encoder) is kind
    batch = torch.as_tensor(np.stack([space.sample() for _ in range(6)])).reshape(
        2, 3, *space.shape
    )
    assert encoder(batch).shape == (2, 3, encoder.output_dim)  # leading dims kept


def test_grid_cells_embed_each_channel_in_its_own_table():
    """Value v in channel c is row ``256 c + v``: object 1 and colour 1 are different codes."""
    encoder = GridEncoder(spaces.Box(0, 255, (1, 2, 3), np.uint8))
    grid = torch.tensor([[[1, 0, 2], [0, 1, 255]]], dtype=torch.uint8)
    rows = encoder.embed.weight[[1, 256, 512 + 2, 0, 256 + 1, 512 + 255]]
    assert torch.equal(encoder(grid), rows.reshape(-1))
    swapped = torch.tensor([[[0, 1, 2], [1, 0, 255]]], dtype=torch.uint8)
    assert not torch.allclose(encoder(grid), encoder(swapped))


def test_pixels_are_scaled_to_the_unit_interval():
    encoder = PixelEncoder(spaces.Box(0, 255, (20, 20, 3), np.uint8))
    white = torch.full((2, 20, 20, 3), 255, dtype=torch.uint8)
    grey = torch.full((2, 20, 20, 3), 51, dtype=torch.uint8)
    assert torch.allclose(encoder(white), encoder.net(torch.ones(2, 3, 20, 20)))
    assert torch.allclose(encoder(grey), encoder.net(torch.full((2, 3, 20, 20), 0.2)))


def test_discrete_observations_with_a_start_use_every_row_once():
    """``Discrete(3, start=-1)``: -1, 0, 1 are rows 0, 1, 2 of the embedding."""
    encoder = DiscreteEncoder(spaces.Discrete(3, start=-1))
    got = encoder(torch.tensor([[-1, 0, 1]]))
    assert torch.equal(got[0], encoder.embed.weight)


def test_vector_observations_are_flattened_floats_over_the_event_dims():
    encoder = VectorEncoder(spaces.Box(0, 9, (2, 3), np.int64))
    x = torch.arange(24).reshape(4, 2, 3)
    got = encoder(x)
    assert got.dtype == torch.float32 and torch.equal(got, x.reshape(4, 6).float())
