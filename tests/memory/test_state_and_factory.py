"""State helpers (save/load, indexing, devices) and ``make_memory`` validation."""

from __future__ import annotations

import io

import pytest
import torch

from memory import KINDS, detach_state, index_state, make_memory, state_to

SMALL = {
    "expire-span": {"d_model": 8, "n_heads": 2, "capacity": 4, "max_span": 8, "ramp": 2},
    "window": {"d_model": 8, "n_heads": 2, "window": 4},
    "full": {"d_model": 8, "n_heads": 2, "max_memory": 6},
    "gru": {"hidden_size": 6},
    "lstm": {"hidden_size": 6, "num_layers": 2},
}


def filled_state(kind: str, batch: int = 3):
    torch.manual_seed(0)
    core = make_memory(kind, 4, **SMALL[kind])
    x = torch.randn(7, batch, 4)
    starts = torch.zeros(7, batch, dtype=torch.bool)
    starts[0] = True
    y, aux, state = core.sequence(x, core.initial_state(batch), starts)
    assert y.shape == (7, batch, core.output_dim)
    return core, state


@pytest.mark.parametrize("kind", list(SMALL))
def test_state_round_trips_through_torch_save(kind: str) -> None:
    _, state = filled_state(kind)
    buffer = io.BytesIO()
    torch.save(detach_state(state), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only=True: the State classes are allow-listed
    assert type(loaded) is type(state)
    for got, want in zip(loaded, state, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("kind", list(SMALL))
def test_index_detach_and_move_keep_env_first(kind: str) -> None:
    core, state = filled_state(kind, batch=3)
    picked = index_state(state, torch.tensor([2, 0]))
    one = index_state(state, 1)
    for full, two, single in zip(state, picked, one, strict=True):
        assert two.shape[0] == 2 and single.shape[0] == 1
        assert torch.equal(two[0], full[2]) and torch.equal(single[0], full[1])
    assert all(not leaf.requires_grad for leaf in detach_state(state))
    moved = state_to(state, "cpu")
    # A sub-batch of the state drives a sub-batch of envs.
    y, _ = core.step(torch.randn(2, 4), index_state(moved, [0, 1]), torch.zeros(2, dtype=bool))
    assert y.shape == (2, core.output_dim)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", list(SMALL))
def test_cpu_and_cuda_agree(kind: str) -> None:
    core, state = filled_state(kind)
    x = torch.randn(9, 3, 4)
    starts = torch.rand(9, 3) < 0.2
    y_cpu, aux_cpu, _ = core.sequence(x, state, starts)
    core_gpu = core.to("cuda")
    y_gpu, aux_gpu, _ = core_gpu.sequence(x.cuda(), state_to(state, "cuda"), starts.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(aux_gpu.cpu(), aux_cpu, atol=1e-6, rtol=1e-4)


def test_zero_aux_for_cores_without_one() -> None:
    for kind in ("window", "full", "gru", "lstm"):
        torch.manual_seed(0)
        core = make_memory(kind, 4, **SMALL[kind])
        _, aux, _ = core.sequence(
            torch.randn(3, 2, 4), core.initial_state(2), torch.ones(3, 2, dtype=torch.bool)
        )
        assert aux.shape == () and aux.item() == 0.0


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match="'transformer'.*expire-span, window, full, gru, lstm"):
        make_memory("transformer", 4)


def test_unknown_option_names_it_and_lists_allowed() -> None:
    with pytest.raises(ValueError, match="dropout.*allowed: .*capacity"):
        make_memory("expire-span", 4, dropout=0.1)
    with pytest.raises(ValueError, match="capacity.*'window'.*allowed: .*window"):
        make_memory("window", 4, capacity=8)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("expire-span", {"capacity": 0}, "capacity must be an integer >= 1, got 0"),
        ("expire-span", {"ramp": 64, "max_span": 32}, "ramp=64 must be <= max_span=32"),
        ("expire-span", {"ramp": 33, "max_span": 32}, "ramp=33 must be <= max_span=32"),
        ("expire-span", {"d_model": 10, "n_heads": 4}, "n_heads=4 must divide d_model=10"),
        ("expire-span", {"init_span_fraction": 1.5}, r"init_span_fraction must be in \(0, 1\)"),
        ("expire-span", {"pre_div": 0.0}, "pre_div must be a finite number > 0"),
        ("expire-span", {"pre_div": float("inf")}, "pre_div must be a finite number > 0, got inf"),
        ("expire-span", {"use_margin": 0.5}, "use_margin must be a finite number >= 1, got 0.5"),
        ("expire-span", {"span_loss_coef": -1.0}, "span_loss_coef must be .* >= 0"),
        ("expire-span", {"span_noise": 1}, "span_noise must be True or False"),
        ("window", {"window": 0}, "window must be an integer >= 1"),
        ("full", {"max_memory": 2.5}, "max_memory must be an integer >= 1, got 2.5"),
        ("gru", {"hidden_size": -3}, "hidden_size must be an integer >= 1, got -3"),
        ("lstm", {"num_layers": 0}, "num_layers must be an integer >= 1"),
    ],
)
def test_bad_values_raise(kind: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_memory(kind, 4, **options)


def test_bad_input_dim_raises() -> None:
    with pytest.raises(ValueError, match="input_dim must be an integer >= 1, got 0"):
        make_memory("gru", 0)


def test_every_kind_is_buildable_with_defaults() -> None:
    for kind in KINDS:
        core = make_memory(kind, 4)
        assert core.output_dim > 0


def test_a_ramp_as_long_as_the_span_limit_is_allowed() -> None:
    core = make_memory("expire-span", 4, d_model=8, n_heads=2, capacity=4, max_span=8, ramp=8)
    assert core.output_dim > 0


def test_documented_defaults() -> None:
    """The module doc's defaults: expire-span spans start at ``init_span_fraction=0.1`` of
    ``max_span=1024``; a window core attends to the current step and ``window=64`` previous
    ones, so after 70 steps it holds the last 64."""
    torch.manual_seed(0)
    core = make_memory("expire-span", 4)
    _, state = core.step(torch.randn(2, 4), core.initial_state(2), torch.ones(2, dtype=torch.bool))
    spans = state.span[state.alive]  # 2 envs x 2 layers, one memory each
    torch.testing.assert_close(spans, torch.full((4,), 102.4))
    core = make_memory("window", 4)
    state = core.initial_state(1)
    with torch.no_grad():
        for t in range(70):
            _, state = core.step(torch.randn(1, 4), state, torch.tensor([t == 0]))
    held = state.write_step[0, 0][state.alive[0, 0]]
    assert sorted(held.tolist()) == list(range(6, 70))


def test_full_memory_keeps_max_memory_previous_steps() -> None:
    """``full`` with ``max_memory=K``: after K steps all K are held (the next query still
    attends to the first); one step more evicts the oldest."""
    k = 5
    core = make_memory("full", 4, d_model=8, n_heads=2, max_memory=k)
    state = core.initial_state(1)
    held = []
    with torch.no_grad():
        for t in range(k + 1):
            _, state = core.step(torch.randn(1, 4), state, torch.tensor([t == 0]))
            held.append(sorted(state.write_step[0, 0][state.alive[0, 0]].tolist()))
    assert held[k - 1] == list(range(k))
    assert held[k] == list(range(1, k + 1))
