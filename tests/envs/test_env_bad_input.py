"""Bad input raises ValueError naming the bad value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.corridor import CorridorEnv, CorridorVectorEnv
from envs.portal import PortalEnv, PortalVectorEnv

ALL_CLASSES = [CorridorEnv, PortalEnv]


def twin(cls, **kwargs):
    return cls(4, **kwargs)


@pytest.mark.parametrize("action", [3, -1])
def test_minigrid_action_outside_the_space(action):
    env = CorridorEnv(length=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"action {action} .*0 \(left\), 1 \(right\), 2"):
        env.step(action)


@pytest.mark.parametrize("cls", [CorridorVectorEnv, PortalVectorEnv])
def test_twin_action_outside_the_space(cls):
    env = twin(cls)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 3 .*0 \(left\), 1 \(right\), 2"):
        env.step(torch.tensor([0, 1, 3, 2]))


@pytest.mark.parametrize("cls", [CorridorVectorEnv, PortalVectorEnv])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": -2}, r"num_envs=-2 is not allowed: it must be an int >= 1"),
        ({"num_envs": 0}, r"num_envs=0 is not allowed"),
        ({"num_envs": 2.5}, r"num_envs=2.5 is not allowed"),
        ({"num_envs": 2, "device": "tpu9"}, r"device='tpu9' is not a torch device"),
    ],
)
def test_twin_bad_batch(cls, kwargs, message):
    """Checked before any tensor is made (torch.zeros(-2) would say something else)."""
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_twin_on_cuda_without_cuda():
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available here"):
        CorridorVectorEnv(2, device="cuda")


def test_twin_takes_numpys_ints():
    assert CorridorVectorEnv(np.int64(2)).num_envs == 2


@pytest.mark.parametrize("shape", [(5,), (4, 1), ()])
def test_twin_wrong_action_shape(shape):
    env = twin(CorridorVectorEnv)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape .*expected \(4,\)"):
        env.step(torch.zeros(shape, dtype=torch.long))


def test_twin_float_actions():
    env = twin(CorridorVectorEnv)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="dtype"):
        env.step(torch.zeros(4))


@pytest.mark.parametrize("make", [CorridorEnv, lambda **k: CorridorVectorEnv(2, **k)])
@pytest.mark.parametrize("kwargs", [{"length": 0}, {"length": -3}, {"max_length": 0}])
def test_length_below_one(make, kwargs):
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=rf"={value} .*int >= 1"):
        make(**kwargs)


def test_length_option_below_one():
    with pytest.raises(ValueError, match=r"length=0 .*>= 1"):
        CorridorEnv().reset(options={"length": 0})
    with pytest.raises(ValueError, match=r"length=0 .*\[1, max_length=50\]"):
        CorridorVectorEnv(2).reset(options={"length": [5, 0]})


def test_twin_length_option_beyond_its_grid():
    with pytest.raises(ValueError, match=r"length=11 .*\[1, max_length=10\]"):
        CorridorVectorEnv(2, max_length=10).set_next_layouts(length=11)


@pytest.mark.parametrize("make", [CorridorEnv, lambda **k: CorridorVectorEnv(2, **k)])
def test_bad_step_slack(make):
    with pytest.raises(ValueError, match=r"slack_steps=-1 .*int >= 0"):
        make(slack_steps=-1)
    with pytest.raises(ValueError, match=r"slack_steps=2\.5 .*int >= 0"):
        make(slack_steps=2.5)
    with pytest.raises(ValueError, match=r"max_steps=9 and slack_steps=2 .*one step limit"):
        make(max_steps=9, slack_steps=2)


@pytest.mark.parametrize("make", [CorridorEnv, lambda **k: CorridorVectorEnv(2, **k)])
@pytest.mark.parametrize("name", ["length", "min_length", "max_length"])
def test_bad_length_is_named_as_given(make, name):
    with pytest.raises(ValueError, match=rf"^{name}=-1 is not allowed"):
        make(**{name: -1})


@pytest.mark.parametrize("make", [CorridorEnv, lambda **k: CorridorVectorEnv(2, **k)])
@pytest.mark.parametrize("value", [-0.5, float("nan")])
def test_bad_progress_reward(make, value):
    with pytest.raises(ValueError, match=rf"progress_reward={value} .*>= 0"):
        make(progress_reward=value)


def test_min_above_max_length():
    with pytest.raises(ValueError, match="min_length=9 > max_length=4"):
        CorridorEnv(min_length=9, max_length=4)


@pytest.mark.parametrize("make", [CorridorEnv, lambda **k: CorridorVectorEnv(2, **k)])
def test_min_length_one_above_max_length(make):
    """The boundary: no length lies in [5, 4]."""
    with pytest.raises(ValueError, match="min_length=5 > max_length=4"):
        make(min_length=5, max_length=4)


@pytest.mark.parametrize(
    "make",
    [
        CorridorEnv,
        lambda **k: CorridorVectorEnv(2, **k),
        PortalEnv,
        lambda **k: PortalVectorEnv(2, **k),
    ],
)
def test_max_steps_zero(make):
    """An episode must be allowed at least one step."""
    with pytest.raises(ValueError, match=r"max_steps=0 .*>= 1"):
        make(max_steps=0)


@pytest.mark.parametrize("make", [PortalEnv, lambda **k: PortalVectorEnv(2, **k)])
@pytest.mark.parametrize("num_rooms", [0, -1])
def test_num_rooms_below_one(make, num_rooms):
    with pytest.raises(ValueError, match=rf"num_rooms={num_rooms} .*int >= 1"):
        make(num_rooms=num_rooms)


@pytest.mark.parametrize("make", [PortalEnv, lambda **k: PortalVectorEnv(2, **k)])
def test_negative_hallway_length(make):
    """Hallways may be empty (0 cells) but not shorter."""
    with pytest.raises(ValueError, match=r"hallway_length=-1 .*int >= 0"):
        make(hallway_length=-1)


@pytest.mark.parametrize("make", [CorridorEnv, PortalEnv, lambda **k: CorridorVectorEnv(2, **k)])
@pytest.mark.parametrize("view", [4, 1, 2, 0])
def test_even_or_small_view(make, view):
    with pytest.raises(ValueError, match=rf"agent_view_size={view} .*odd int >= 3"):
        make(agent_view_size=view)


def test_bad_reset_options():
    with pytest.raises(
        ValueError, match=r"unknown reset options \['colour'\].*\['cue', 'length'\]"
    ):
        CorridorEnv().reset(options={"colour": 1})
    with pytest.raises(ValueError, match=r"cue=2 .*0 \(green, north\) or 1 \(red, south\)"):
        CorridorEnv().reset(options={"cue": 2})
    with pytest.raises(ValueError, match=r"correct_sides=\[0, 1\] .*4 values"):
        PortalEnv().reset(options={"correct_sides": [0, 1]})
    with pytest.raises(ValueError, match=r"correct_sides of shape \(2,\) .*expected \(4,\)"):
        PortalVectorEnv(2).reset(options={"correct_sides": [0, 1]})
    with pytest.raises(ValueError, match=r"correct_sides value 2 .*0 \(north\) or 1 \(south\)"):
        PortalVectorEnv(2).reset(options={"correct_sides": [0, 1, 2, 0]})
