"""``sequence`` must equal ``T`` calls of ``step`` (the PPO first-epoch ratio depends on it)."""

from __future__ import annotations

import pytest
import torch

from memory import SlotState, make_memory

INPUT_DIM, BATCH, WARMUP, STEPS = 5, 4, 13, 40

# Small capacities and spans so that eviction and expiry both happen inside the chunk.
KINDS = {
    "expire-span": {
        "d_model": 8,
        "n_heads": 2,
        "capacity": 3,
        "max_span": 12,
        "ramp": 2,
        "init_span_fraction": 0.1,
        "span_loss_coef": 1.0,
    },
    "window": {"d_model": 8, "n_heads": 2, "window": 3},
    "full": {"d_model": 8, "n_heads": 2, "max_memory": 5},
    "gru": {"hidden_size": 7, "num_layers": 2},
    "lstm": {"hidden_size": 7, "num_layers": 2},
}


def build(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    core = make_memory(kind, INPUT_DIM, **KINDS[kind]).double()
    with torch.no_grad():  # move away from the init so spans, biases and gates all vary
        for parameter in core.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return core


def warm_state(core, generator: torch.Generator):
    """A non-empty, mid-episode state: WARMUP steps after an episode start."""
    state = core.initial_state(BATCH)
    for index in range(WARMUP):
        x = torch.randn(BATCH, INPUT_DIM, dtype=torch.double, generator=generator)
        _, state = core.step(x, state, torch.full((BATCH,), index == 0))
    return state


def canonical(state: SlotState, layer: int, env: int) -> list[tuple]:
    """Alive slots of one layer and env as a set, sorted by write step (slot order is free)."""
    alive = state.alive[env, layer]
    rows = zip(
        state.write_step[env, layer][alive].tolist(),
        state.span[env, layer][alive].tolist(),
        state.hidden[env, layer][alive].tolist(),
        strict=True,
    )
    return sorted(rows)


def count_drops(core, states: list[SlotState], starts: torch.Tensor) -> tuple[int, int]:
    """(evictions, expiries) seen between consecutive step states, layer 0."""
    evicted = expired = 0
    for before, after, start in zip(states[:-1], states[1:], starts, strict=True):
        for env in range(BATCH):
            if start[env]:
                continue
            kept = set(after.write_step[env, 0][after.alive[env, 0]].tolist())
            t = int(after.step[env]) - 1
            for slot in range(core.capacity):
                if not before.alive[env, 0, slot]:
                    continue
                write = int(before.write_step[env, 0, slot])
                if write in kept:
                    continue
                expiry = write + float(before.span[env, 0, slot]) + core.ramp
                if expiry <= t + 1:
                    expired += 1
                else:
                    evicted += 1
    return evicted, expired


@torch.no_grad()
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_sequence_equals_steps(kind: str, train_mode: bool) -> None:
    core = build(kind)
    core.train(train_mode)
    generator = torch.Generator().manual_seed(1)
    state = warm_state(core, generator)
    x = torch.randn(STEPS, BATCH, INPUT_DIM, dtype=torch.double, generator=generator)
    starts = torch.rand(STEPS, BATCH, generator=generator) < 0.08
    starts[0, 0] = True  # one env starts at the chunk's first step
    starts[17, 1] = True  # and starts inside the chunk for another
    starts[:, 2] = False  # env 2 carries its state through the whole chunk

    stepped, states, step_state = [], [state], state
    for index in range(STEPS):
        y, step_state = core.step(x[index], step_state, starts[index])
        stepped.append(y)
        states.append(step_state)
    y_seq, aux, seq_state = core.sequence(x, state, starts)

    torch.testing.assert_close(y_seq, torch.stack(stepped), atol=1e-5, rtol=0)
    assert aux.shape == ()
    # What an update calls: the same outputs and loss, the state after the chunk skipped
    # (attention cores) or returned as it comes (recurrent cores).
    y_update, aux_update, _ = core.sequence(x, state, starts, return_state=False)
    assert torch.equal(y_update, y_seq) and torch.equal(aux_update, aux)
    if isinstance(state, SlotState):
        evicted, expired = count_drops(core, states, starts)
        if kind in ("expire-span", "full"):
            assert evicted > 0
        if kind in ("expire-span", "window"):
            assert expired > 0
        assert torch.equal(seq_state.step, step_state.step)
        for layer in range(core.n_layers):
            for env in range(BATCH):
                got = canonical(seq_state, layer, env)
                want = canonical(step_state, layer, env)
                assert [row[0] for row in got] == [row[0] for row in want]
                torch.testing.assert_close(
                    torch.tensor([row[1] for row in got] + sum((row[2] for row in got), [])),
                    torch.tensor([row[1] for row in want] + sum((row[2] for row in want), [])),
                    atol=1e-5,
                    rtol=0,
                )
    else:
        for got, want in zip(seq_state, step_state, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("kind", list(KINDS))
def test_episode_start_isolates_the_past(kind: str) -> None:
    """From an episode start on, outputs do not depend on earlier inputs or the state."""
    core = build(kind)
    outputs = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        state = warm_state(core, generator)
        x = torch.randn(20, BATCH, INPUT_DIM, dtype=torch.double, generator=generator)
        x[6:] = torch.randn(
            14, BATCH, INPUT_DIM, dtype=torch.double, generator=(torch.Generator().manual_seed(99))
        )
        starts = torch.zeros(20, BATCH, dtype=torch.bool)
        starts[6] = True
        y, _, _ = core.sequence(x, state, starts)
        stepped = []
        for index in range(20):
            y_step, state = core.step(x[index], state, starts[index])
            stepped.append(y_step)
        outputs.append((y[6:], torch.stack(stepped)[6:]))
    (seq_a, step_a), (seq_b, step_b) = outputs
    torch.testing.assert_close(seq_a, seq_b, atol=1e-12, rtol=0)
    torch.testing.assert_close(step_a, step_b, atol=1e-12, rtol=0)
