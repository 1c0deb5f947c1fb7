"""Expire-Span semantics checked against numbers worked out by hand."""

from __future__ import annotations

import math

import torch

from memory import SlotState, make_memory


def hand_state(write_step, span, alive, step, d_model=2, hidden=None) -> SlotState:
    """One env, one layer, slots given as lists."""
    n_slots = len(write_step)
    if hidden is None:
        hidden = torch.zeros(n_slots, d_model, dtype=torch.double)
    return SlotState(
        hidden=torch.as_tensor(hidden, dtype=torch.double).view(1, 1, n_slots, d_model),
        write_step=torch.tensor(write_step).view(1, 1, n_slots),
        span=torch.tensor(span, dtype=torch.double).view(1, 1, n_slots),
        alive=torch.tensor(alive).view(1, 1, n_slots),
        step=torch.tensor([step]),
    )


# Ramp R = 4, query at t = 10.  m = clamp(1 + (span - age) / R, 0, 1):
#   w=2, e=5:   age 8  -> 1 + (5 - 8) / 4  = 0.25
#   w=6, e=3:   age 4  -> 1 + (3 - 4) / 4  = 0.75
#   w=9, e=0.5: age 1  -> 1 + (0.5 - 1)/4  = 0.875
#   w=0, e=5:   age 10 -> 1 + (5 - 10)/4 < 0 -> 0 (expired)
#   w=5, e=6:   age 5  -> 1 + (6 - 5) / 4 > 1 -> 1
#   dead slot           -> 0
WRITES = [2, 6, 9, 0, 5, 7]
SPANS = [5.0, 3.0, 0.5, 5.0, 6.0, 9.0]
ALIVE = [True, True, True, True, True, False]
HAND_MASK = [0.25, 0.75, 0.875, 0.0, 1.0, 0.0]


def small_core(**options):
    options = {
        "d_model": 2,
        "n_layers": 1,
        "n_heads": 1,
        "capacity": 6,
        "ramp": 4,
        "max_span": 16,
        **options,
    }
    return make_memory("expire-span", 2, **options).double()


def one_episode(steps: int, envs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs ``[steps, envs, 2]`` and episode starts at step 0 only."""
    starts = torch.zeros(steps, envs, dtype=torch.bool)
    starts[0] = True
    return torch.randn(steps, envs, 2, dtype=torch.double), starts


def test_keep_mask_matches_hand_worked_values() -> None:
    core = small_core()
    keep = core.keep_mask(hand_state(WRITES, SPANS, ALIVE, step=10))
    torch.testing.assert_close(keep.mask[0, 0], torch.tensor(HAND_MASK, dtype=torch.double))
    assert keep.write_step[0, 0].tolist() == WRITES


def test_attention_is_softmax_times_mask_renormalised() -> None:
    """Equal logits, so the attention weights are m_j / sum m over what is visible."""
    core = small_core()
    layer = core.layers[0]
    with torch.no_grad():
        core.input_proj.weight.copy_(torch.eye(2))
        core.input_proj.bias.zero_()
        layer.proj_key.weight.zero_()  # every logit 0: weights come from the mask alone
        layer.proj_value.weight.copy_(torch.eye(2))
        layer.norm_attn.eps = 0.0  # LayerNorm([a, -a]) = [sign a, -sign a] exactly
    # Values (first coordinate after the norm): +1 for [1, -1], -1 for [-1, 1].
    signs = [1, -1, 1, 1, -1, 1]
    hidden = [[s, -s] for s in signs]
    captured = {}
    layer.proj_out.register_forward_hook(lambda mod, inp, out: captured.update(v=inp[0]))
    state = hand_state(WRITES, SPANS, ALIVE, step=10, hidden=hidden)
    x = torch.tensor([[1.0, -1.0]], dtype=torch.double)  # current step: value +1, mask 1
    core.step(x, state, torch.tensor([False]))
    # (0.25 - 0.75 + 0.875 + 1 * (-1) + 1 * (+1)) / (0.25 + 0.75 + 0.875 + 1 + 1) = 3 / 31
    assert math.isclose(captured["v"][0, 0, 0].item(), 3 / 31, abs_tol=1e-12)


def signed_core(capacity: int, **options):
    """L = 17. Spans by token: [1, -1] gets 17 * sigmoid(ln 3) = 12.75, [-1, 1] gets 4.25."""
    core = small_core(capacity=capacity, ramp=2, max_span=17, **options)
    layer = core.layers[0]
    with torch.no_grad():
        core.input_proj.weight.copy_(torch.eye(2))
        core.input_proj.bias.zero_()
        layer.norm_attn.eps = 0.0
        layer.span_predictor.weight.copy_(torch.tensor([[math.log(3.0), 0.0]]))
        layer.span_predictor.bias.zero_()
    return core


def run_tokens(core, signs):
    state = core.initial_state(1)
    history = []
    for index, sign in enumerate(signs):
        x = torch.tensor([[sign, -sign]], dtype=torch.double)
        _, state = core.step(x, state, torch.tensor([index == 0]))
        alive = state.alive[0, 0]
        history.append(sorted(state.write_step[0, 0][alive].tolist()))
    return state, history


@torch.no_grad()
def test_memory_past_span_plus_ramp_is_dropped() -> None:
    # All spans 4.25, ramp 2: memory w has mask 0 from t >= w + 6.25 on, so after step t the
    # slots hold w > t - 5.25: six memories, although there is room for ten. Memory 4 still
    # had mask 1 + (4.25 - 6) / 2 = 0.125 at t = 10, and would have -0.375 -> 0 at t = 11.
    core = signed_core(capacity=10)
    state, history = run_tokens(core, [-1.0] * 11)
    torch.testing.assert_close(state.span[0, 0][state.alive[0, 0]], torch.full((6,), 4.25).double())
    assert history[10] == [5, 6, 7, 8, 9, 10]
    assert history[9] == [4, 5, 6, 7, 8, 9]
    assert history[3] == [0, 1, 2, 3]


@torch.no_grad()
def test_full_slots_evict_the_memory_closest_to_expiry() -> None:
    # Capacity 2, ramp 2. Step 0 has span 12.75 (expiry X = 0 + 12.75 + 2 = 14.75); later
    # steps span 4.25 (X = w + 6.25). Step 2: {0: 14.75, 1: 7.25, 2: 8.25} -> evict 1.
    # Step t: {0, t-1: t + 5.25, t} -> evict t-1 while t + 5.25 < 14.75, i.e. t <= 9.
    # Step 10: {0: 14.75, 9: 15.25, 10: 16.25} -> memory 0 goes, although not expired yet.
    core = signed_core(capacity=2)
    _, history = run_tokens(core, [1.0] + [-1.0] * 12)
    assert history[1] == [0, 1]
    assert history[2] == [0, 2]
    assert history[9] == [0, 9]
    assert history[10] == [9, 10]
    assert history[12] == [11, 12]


def test_aux_loss_matches_hand_value_and_reaches_span_predictor() -> None:
    # The paper's loss, coef * sum_i e_i / T per layer (and / B), over every memory written in
    # the chunk. Zero predictor weight at init: every span is 0.1 * L = 2 -> loss 2 * coef.
    core = small_core(max_span=20, ramp=4, init_span_fraction=0.1, span_loss_coef=0.5)
    x, starts = one_episode(6, 3)
    _, aux, _ = core.sequence(x, core.initial_state(3), starts)
    assert math.isclose(aux.item(), 0.5 * 2.0, rel_tol=1e-6)  # init bias is float32
    aux.backward()
    predictor = core.layers[0].span_predictor
    # Longer spans raise the loss: the bias gradient is coef * de/dz = coef * e * (1 - e / L).
    assert math.isclose(predictor.bias.grad.item(), 0.5 * 2.0 * 0.9, rel_tol=1e-6)
    assert predictor.weight.grad.abs().sum() > 0


def test_aux_loss_reaches_memories_evicted_before_their_ramp() -> None:
    # Capacity 2, spans 8: every memory is evicted long before its ramp, so no mask depends on
    # a span; the span predictor still gets the aux loss's gradient.
    core = small_core(capacity=2, max_span=16, ramp=4, init_span_fraction=0.5, span_loss_coef=1.0)
    x, starts = one_episode(12, 2)
    y, aux, _ = core.sequence(x, core.initial_state(2), starts)
    y.sum().backward(retain_graph=True)
    predictor = core.layers[0].span_predictor
    assert predictor.bias.grad is None or predictor.bias.grad.item() == 0.0
    aux.backward()
    assert predictor.bias.grad.item() > 0


def test_span_predictor_starts_at_the_init_fraction() -> None:
    core = small_core(max_span=100, init_span_fraction=0.25)
    x = torch.randn(3, 2, 2, dtype=torch.double)
    _, _, state = core.sequence(x, core.initial_state(2), torch.ones(3, 2, dtype=torch.bool))
    torch.testing.assert_close(state.span[state.alive], torch.full((2,), 25.0).double())


@torch.no_grad()
def test_pre_div_divides_the_span_logit() -> None:
    """``pre_div`` (CLI ``--span-pre-div``) flattens the span predictor: with the same
    weights, token [1, -1] has logit ln 3 and span 17 * sigmoid(ln 3 / pre_div)."""
    spans = {}
    for pre_div in (1.0, 2.0):
        core = signed_core(capacity=4, pre_div=pre_div)
        state, _ = run_tokens(core, [1.0])
        spans[pre_div] = state.span[0, 0][state.alive[0, 0]].item()
    assert math.isclose(spans[1.0], 12.75, rel_tol=1e-6)  # ln 3 is copied in float32
    assert math.isclose(spans[2.0], 17 / (1 + math.exp(-math.log(3.0) / 2)), rel_tol=1e-6)


def test_span_noise_only_in_training_sequence() -> None:
    core = small_core(
        span_noise=True, capacity=16, max_span=16, ramp=2, d_model=4, init_span_fraction=0.9
    )
    x, starts = one_episode(12, 3)
    state = core.initial_state(3)
    core.eval()
    y_eval, _, _ = core.sequence(x, state, starts)
    stepped, step_state = [], state
    for index in range(12):
        y, step_state = core.step(x[index], step_state, starts[index])
        stepped.append(y)
    torch.testing.assert_close(y_eval, torch.stack(stepped), atol=1e-9, rtol=0)
    core.train()
    # Spans are 14.4; a draw u < 0.9 clamps them at 16 u for the masks, and changes outputs.
    changed = []
    for seed in range(4):
        torch.manual_seed(seed)
        y_train, _, _ = core.sequence(x, state, starts)
        changed.append(bool((y_train - y_eval).abs().max() > 1e-6))
    assert any(changed)


def test_use_loss_matches_hand_value_and_pulls_read_spans_up() -> None:
    # Zero query projection: a memory's logit is its age's position bias, 0 except log 3 at
    # ages 4 and 5. Query t=4 sees ages 4..0: weights 3/7, 1/7 x 4, the uniform share 1/5, so
    # only j=0 is read, by 3/7 - 1/5 = 8/35. Query t=5 sees ages 5..0: 3/10, 3/10, 1/10 x 4
    # against 1/6, so j=0 and j=1 are read by 2/15 each. Earlier queries see ages <= 3 alike:
    # nothing read. Spans 0.5 * 20 = 10; with margin 3 a pair pays relu(3 * age - 10):
    # (t=4, j=0) 2, (t=5, j=0) 5, (t=5, j=1) 2.
    core = small_core(
        max_span=20, init_span_fraction=0.5, span_loss_coef=0.0, use_loss_coef=0.3, use_margin=3.0
    )
    layer = core.layers[0]
    torch.nn.init.zeros_(layer.proj_query.weight)
    with torch.no_grad():
        layer.position_bias[:, 4:6] = math.log(3.0)  # exact buckets below 16
    x, starts = one_episode(6, 1)
    _, aux, _ = core.sequence(x, core.initial_state(1), starts)
    total = 2 * 8 / 35 + 5 * 2 / 15 + 2 * 2 / 15
    assert math.isclose(aux.item(), 0.3 * total / 6, rel_tol=1e-6)
    aux.backward()
    # Longer spans lower it: d/de = -coef * (sum of the paying pairs' reads) / (B * T), and
    # de/dz = e * (1 - e / L) = 5 at the bias.
    reads = 8 / 35 + 2 / 15 + 2 / 15
    bias_grad = layer.span_predictor.bias.grad.item()
    assert math.isclose(bias_grad, -0.3 * reads / 6 * 5.0, rel_tol=1e-6)


def test_use_loss_ignores_attention_spread_evenly() -> None:
    # The same chunk with no position bias: every query reads its memories alike.
    core = small_core(max_span=20, init_span_fraction=0.5, span_loss_coef=0.0, use_loss_coef=0.3)
    torch.nn.init.zeros_(core.layers[0].proj_query.weight)
    x, starts = one_episode(6, 1)
    _, aux, _ = core.sequence(x, core.initial_state(1), starts)
    assert aux.item() == 0.0


def test_use_loss_off_by_default_and_sequence_still_equals_steps() -> None:
    core = small_core(capacity=3, max_span=8, init_span_fraction=0.3, span_loss_coef=0.0)
    x, starts = one_episode(10, 2)
    _, aux, _ = core.sequence(x, core.initial_state(2), starts)
    assert aux.item() == 0.0  # span_loss_coef 0 here, use_loss_coef 0 by default
    core = small_core(
        capacity=3, max_span=8, init_span_fraction=0.3, span_loss_coef=0.0, use_loss_coef=1.0
    )
    y, aux, _ = core.sequence(x, core.initial_state(2), starts)
    assert aux.item() > 0
    state, stepped = core.initial_state(2), []
    for index in range(10):
        out, state = core.step(x[index], state, starts[index])
        stepped.append(out)
    torch.testing.assert_close(y, torch.stack(stepped), atol=1e-9, rtol=0)
