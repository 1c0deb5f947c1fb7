"""A2C's loss, worked out by hand: advantage-weighted log-probabilities, value regression,
the entropy as a bonus and the memory's aux loss added, all over the unmasked steps."""

import pytest
import torch

from agents.a2c import a2c_loss
from agents.config import AlgoConfig
from agents.losses import Evaluation


def test_a2c_loss_terms_and_total():
    # two valid steps and a masked one (a reset step) that would change every term
    column = lambda *x: torch.tensor(x, dtype=torch.float64).reshape(-1, 1)  # noqa: E731
    new = Evaluation(
        logprobs=column(-0.5, -2.0, -9.0),
        entropy=column(0.6, 0.8, 5.0),
        values=column(1.0, 0.0, 7.0),
        aux_loss=torch.tensor(0.25, dtype=torch.float64),
    )
    advantages, returns = column(2.0, -1.0, 3.0), column(0.0, 2.0, 0.0)
    mask = torch.tensor([True, True, False]).reshape(3, 1)
    config = AlgoConfig(ent_coef=0.1, vf_coef=0.5)
    loss, (policy_loss, value_loss, entropy) = a2c_loss(new, advantages, returns, mask, config)
    # policy: -mean(2 * -0.5, -1 * -2.0) = -mean(-1, 2) = -0.5
    assert policy_loss.item() == pytest.approx(-0.5)
    # value: 0.5 * mean(1^2, 2^2) = 1.25
    assert value_loss.item() == pytest.approx(1.25)
    assert entropy.item() == pytest.approx(0.7)
    assert loss.item() == pytest.approx(-0.5 - 0.1 * 0.7 + 0.5 * 1.25 + 0.25)
