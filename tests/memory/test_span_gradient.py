"""The task's gradient reaches the learned span through the soft ramp of the mask.

With the auxiliary losses off (``span_loss_coef`` and ``use_loss_coef`` 0) the only way the
span predictor learns is through the mask ``clamp(1 + (e - age) / R, 0, 1)`` of memories in
their ramp. ``sequence`` has two such paths: the memories written in the chunk, and the slots
carried in the (detached) state, whose span gradient is recomputed from the stored hidden with
the current parameters. Both are checked against ``step`` run through the whole episode with
the graph kept (one layer: the stored hidden does not depend on the span predictor, so the
two gradients are the same function's).
"""

from __future__ import annotations

import pytest
import torch

from memory import detach_state, make_memory

INPUT_DIM, BATCH, WARMUP = 3, 3, 8


def span_core() -> torch.nn.Module:
    """Spans near 0.25 * 8 = 2, ramp 4, room for every memory: many memories sit in the ramp."""
    torch.manual_seed(0)
    core = make_memory(
        "expire-span",
        INPUT_DIM,
        d_model=4,
        n_layers=1,
        n_heads=1,
        capacity=16,
        max_span=8,
        ramp=4,
        init_span_fraction=0.25,
        span_loss_coef=0.0,
        use_loss_coef=0.0,
    ).double()
    with torch.no_grad():  # spans differ by memory, and the output norm is not the identity
        for parameter in core.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return core


def span_gradients(core: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The span predictor's gradient of ``loss``, flattened (zeros where none flowed)."""
    predictor = core.layers[0].span_predictor
    grads = torch.autograd.grad(loss, list(predictor.parameters()), allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).flatten()
            for p, g in zip(predictor.parameters(), grads, strict=True)
        ]
    )


@pytest.mark.parametrize(
    ("warmup", "steps"),
    [(0, 8), (WARMUP, 1), (WARMUP, 6)],
    ids=["chunk-memories-only", "carried-slots-only", "slots-and-chunk"],
)
def test_task_loss_reaches_span_predictor_through_the_ramp(warmup: int, steps: int) -> None:
    """A loss on the outputs alone gives the span predictor the gradient of the step path.

    A one-step chunk's own memory has age 0 and mask 1 (no gradient): its span gradient comes
    from the carried slots alone, i.e. from the recomputed span. A chunk from a fresh state
    has no slots: its gradient comes from the chunk memories alone.
    """
    core = span_core()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(warmup + steps, BATCH, INPUT_DIM, dtype=torch.double, generator=generator)
    starts = torch.zeros(warmup + steps, BATCH, dtype=torch.bool)
    starts[0] = True
    projection = torch.randn(steps, BATCH, core.output_dim, dtype=torch.double, generator=generator)

    # Reference: step through the episode with the graph kept; loss on the last `steps` only.
    state, outputs = core.initial_state(BATCH), []
    for index in range(warmup + steps):
        y, state = core.step(x[index], state, starts[index])
        outputs.append(y)
        if index == warmup - 1:
            carried = detach_state(state)
    if warmup == 0:
        carried = core.initial_state(BATCH)
    expected = span_gradients(core, (torch.stack(outputs[warmup:]) * projection).sum())

    y, aux, _ = core.sequence(x[warmup:], carried, starts[warmup:])
    assert aux.item() == 0.0  # no auxiliary loss: the gradient is the task's alone
    got = span_gradients(core, (y * projection).sum())

    # Some memories are in their ramp when queried, else the comparison would be empty.
    keep = core.keep_mask(carried).mask if warmup else None
    if keep is not None:
        assert ((keep > 0) & (keep < 1)).any(), "no carried memory sits in its ramp"
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)
