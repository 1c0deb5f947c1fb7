"""Property test of the memory interface: any kind, shape, episode starts and options.

For random ``make_memory`` options (valid and invalid: zero or negative sizes, heads that do
not divide the width, a ramp longer than the span, bools and floats where ints belong, unknown
names), random shapes ``(T, B, D)``, a random warm-up and random episode-start patterns, either

- ``make_memory`` raises ``ValueError`` (never another exception), or
- the core works, and ``sequence`` equals ``T`` calls of ``step`` (float64, 1e-5): the outputs,
  and the state after the chunk (slot order aside).
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from memory import KINDS, SlotState, make_memory

#: option name -> strategy of valid values (small: fast); see `memory_case` for the couplings
VALID: dict[str, st.SearchStrategy[Any]] = {
    "d_model": st.sampled_from([2, 4, 6, 8]),
    "n_layers": st.integers(1, 2),
    "n_heads": st.just(1),  # replaced by a divisor of d_model
    "ff_mult": st.integers(1, 2),
    "position_buckets": st.integers(1, 8),
    "capacity": st.integers(1, 6),
    "max_span": st.integers(1, 16),
    "ramp": st.integers(1, 8),  # capped at max_span
    "init_span_fraction": st.floats(0.05, 0.95),
    "pre_div": st.floats(0.5, 4.0),
    "span_loss_coef": st.floats(0.0, 1.0),
    "span_noise": st.booleans(),
    "use_loss_coef": st.floats(0.0, 1.0),
    "use_margin": st.floats(1.0, 2.0),
    "window": st.integers(1, 6),
    "max_memory": st.integers(1, 6),
    "hidden_size": st.integers(1, 6),
    "num_layers": st.integers(1, 2),
}
#: option name -> values `make_memory` must refuse with a ValueError
INVALID: dict[str, list[Any]] = {
    "init_span_fraction": [0.0, 1.0, -0.5, float("nan"), "0.1"],
    "pre_div": [0.0, -1.0, float("inf"), float("nan")],
    "span_loss_coef": [-1.0, float("nan")],
    "span_noise": [1, "yes"],
    "use_loss_coef": [-1.0, float("nan"), float("inf")],
    "use_margin": [0.5, float("nan"), float("inf"), "2"],
    **{
        name: [0, -1, True, 2.0, "4"]
        for name in VALID
        if name
        not in ("init_span_fraction", "pre_div", "span_loss_coef", "span_noise", "use_loss_coef")
        + ("use_margin",)
    },
}


@st.composite
def memory_case(draw: st.DrawFn) -> dict[str, Any]:
    """A kind, options (valid, or with one fault), shapes, train/eval mode, episode starts."""
    kind = draw(st.sampled_from(["expire-span", *sorted(KINDS)]))  # the flagship twice
    allowed = sorted(KINDS[kind])
    names = set(draw(st.lists(st.sampled_from(allowed), unique=True, max_size=6)))
    attention = kind in ("expire-span", "window", "full")
    if attention:
        names |= {"d_model", "n_heads"}  # the default width 64 is slow
    if kind == "expire-span":
        names |= {"max_span", "ramp"}  # short spans: memories expire inside the chunk
    if kind in ("gru", "lstm"):
        names.add("hidden_size")
    options = {name: draw(VALID[name]) for name in sorted(names)}
    if attention:
        divisors = [h for h in range(1, options["d_model"] + 1) if options["d_model"] % h == 0]
        options["n_heads"] = draw(st.sampled_from(divisors))
    if kind == "expire-span":
        options["ramp"] = min(options["ramp"], options["max_span"])
    input_dim = draw(st.sampled_from([1, 2, 3, 5]))

    fault = draw(st.sampled_from(["none"] * 6 + ["value", "coupling", "unknown", "input_dim"]))
    if fault == "value":
        name = draw(st.sampled_from(allowed))
        options[name] = draw(st.sampled_from(INVALID[name]))
    elif fault == "coupling" and kind == "expire-span" and draw(st.booleans()):
        options["ramp"] = options["max_span"] + 1
    elif fault == "coupling" and attention:
        options["n_heads"] = options["d_model"] + 1  # does not divide the width
    elif fault == "coupling":
        fault = "none"  # gru / lstm: no coupled options
    elif fault == "unknown":
        options[draw(st.sampled_from(["no_such_option", "window" if not attention else "h"]))] = 1
    elif fault == "input_dim":
        input_dim = draw(st.sampled_from([0, -2, True, 3.0]))

    steps, batch = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    starts = draw(st.lists(st.booleans(), min_size=steps * batch, max_size=steps * batch))
    return {
        "kind": kind,
        "options": options,
        "input_dim": input_dim,
        "fault": fault,
        "steps": steps,
        "batch": batch,
        "warmup": draw(st.integers(0, 8)),
        "starts": torch.tensor(starts, dtype=torch.bool).reshape(steps, batch),
        "train": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def canonical(state: SlotState, layer: int, env: int) -> list[tuple[Any, ...]]:
    """Alive slots of one layer and env, sorted by write step (slot order is free)."""
    alive = state.alive[env, layer]
    return sorted(
        zip(
            state.write_step[env, layer][alive].tolist(),
            state.span[env, layer][alive].tolist(),
            state.hidden[env, layer][alive].tolist(),
            strict=True,
        )
    )


def assert_same_state(got: Any, want: Any) -> None:
    if isinstance(want, SlotState):
        assert torch.equal(got.step, want.step)
        layers, batch = want.alive.shape[1], want.alive.shape[0]
        for layer in range(layers):
            for env in range(batch):
                a, b = canonical(got, layer, env), canonical(want, layer, env)
                assert [row[0] for row in a] == [row[0] for row in b]
                flat_a = [row[1] for row in a] + [v for row in a for v in row[2]]
                flat_b = [row[1] for row in b] + [v for row in b for v in row[2]]
                torch.testing.assert_close(
                    torch.tensor(flat_a, dtype=torch.float64),
                    torch.tensor(flat_b, dtype=torch.float64),
                    atol=1e-5,
                    rtol=0,
                )
    else:
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@settings(
    max_examples=40,
    deadline=None,
    database=None,  # no .hypothesis directory in the repo
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=memory_case())
def test_make_memory_raises_value_error_or_sequence_equals_steps(case: dict[str, Any]) -> None:
    with torch.no_grad():
        check(case)


def test_every_option_is_drawn() -> None:
    """A new option of `make_memory` must be added to `OPTION_VALUES`."""
    assert set(VALID) == set(INVALID) == {name for opts in KINDS.values() for name in opts}


def check(case: dict[str, Any]) -> None:
    """ValueError from `make_memory`, or `sequence` == steps for the drawn case."""
    try:
        core = make_memory(case["kind"], case["input_dim"], **case["options"])
    except ValueError as error:
        message = str(error)
        assert case["fault"] != "none", f"valid options refused: {message}"
        assert message and "\n" not in message
        event(f"ValueError for a {case['fault']} fault")
        return
    assert case["fault"] == "none", f"{case['fault']} fault accepted: {case}"
    event(f"{case['kind']}: sequence checked")
    torch.manual_seed(case["seed"])
    core = core.double()
    for parameter in core.parameters():  # away from the init: spans, biases and gates vary
        parameter.add_(0.3 * torch.randn_like(parameter))
    # Span noise is a training-time perturbation of `sequence` alone: compare in eval mode.
    core.train(case["train"] and not case["options"].get("span_noise", False))

    batch, steps, dim = case["batch"], case["steps"], case["input_dim"]
    state = core.initial_state(batch)
    for index in range(case["warmup"]):
        _, state = core.step(
            torch.randn(batch, dim, dtype=torch.float64), state, torch.full((batch,), index == 0)
        )
    x = torch.randn(steps, batch, dim, dtype=torch.float64)
    starts = case["starts"]

    y_seq, aux, seq_state = core.sequence(x, state, starts)
    stepped, step_state = [], state
    for index in range(steps):
        y, step_state = core.step(x[index], step_state, starts[index])
        stepped.append(y)
    assert y_seq.shape == (steps, batch, core.output_dim)
    assert aux.shape == () and torch.isfinite(aux)
    assert torch.isfinite(y_seq).all()
    torch.testing.assert_close(y_seq, torch.stack(stepped), atol=1e-5, rtol=0)
    assert_same_state(seq_state, step_state)
