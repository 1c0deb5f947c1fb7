"""The hand-written chunk attention and log mask against autograd on the plain formulas."""

from __future__ import annotations

import torch

from memory.slot_attention import MaskedSlotAttention, RampLogMask, log_soft_mask

B, H, Q, S, D, N = 2, 3, 5, 4, 2, 6  # batch, heads, queries (= chunk keys), slots, head dim


def inputs(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.double, generator=generator).requires_grad_()

    q, k, v = rand(B, H, Q, D), rand(B, H, S + Q, D), rand(B, H, S + Q, D)
    bias = rand(H, N)
    slot_bucket = torch.randint(0, N, (B, Q, S), generator=generator)
    chunk_bucket = torch.randint(0, N, (Q, Q), generator=generator)
    visible = torch.rand(B, Q, S + Q, generator=generator) < 0.7
    visible[..., S:] |= torch.eye(Q, dtype=torch.bool)  # every query sees itself
    soft = torch.rand(B, Q, S + Q, dtype=torch.double, generator=generator) * 0.9 + 0.1
    log_mask = log_soft_mask(soft, visible).detach()
    slot_mask = log_mask[..., :S].clone().requires_grad_()
    chunk_mask = log_mask[..., S:].clone().requires_grad_()
    return q, k, v, bias, slot_bucket, chunk_bucket, slot_mask, chunk_mask


def reference(q, k, v, bias, slot_bucket, chunk_bucket, slot_mask, chunk_mask):
    """Autograd through the plain formula: logits + bias + log mask, softmax, values."""
    bucket = torch.cat([slot_bucket, chunk_bucket.expand(B, -1, -1)], -1)  # [B, Q, K]
    add = bias[:, bucket].transpose(0, 1) + torch.cat([slot_mask, chunk_mask], -1)[:, None]
    return torch.softmax(q @ k.transpose(-1, -2) + add, -1) @ v


def test_matches_plain_formula_and_its_gradients() -> None:
    args = inputs(torch.Generator().manual_seed(0))
    out, probs = MaskedSlotAttention.apply(*args)
    want = reference(*args)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(probs @ args[2], want, atol=1e-12, rtol=0)  # the weights used
    assert not probs.requires_grad
    grad = torch.randn_like(out)
    wrt = [a for a in args if a.requires_grad]
    got = torch.autograd.grad(out, wrt, grad)
    expected = torch.autograd.grad(want, wrt, grad)
    for mine, theirs in zip(got, expected, strict=True):
        # -inf entries of the masks have zero gradient in both.
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=0)


def test_gradcheck() -> None:
    args = inputs(torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda *a: MaskedSlotAttention.apply(*a)[0], args)


RAMP = 4.0


def span_inputs(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Spans and write steps of ``S`` memories, queries at steps that put pairs on every side
    of the ramp (before it, inside it, expired), some pairs hidden."""
    span = (torch.rand(B, S, dtype=torch.double, generator=generator) * 12).requires_grad_()
    write = torch.randint(0, 4, (B, S), generator=generator)
    t_query = torch.arange(Q * 4).view(1, -1, 1).expand(B, -1, 1)  # [B, 4Q, 1], t 0 .. 4Q-1
    visible = torch.rand(B, Q * 4, S, generator=generator) < 0.8
    return span, write, t_query, visible


def plain_log_mask(span, write, t_query, visible):
    mask = ((write.double() + span + RAMP)[:, None] - t_query.double()) / RAMP
    return log_soft_mask(mask.clamp(0.0, 1.0), visible)


def test_ramp_log_mask_matches_plain_formula_and_its_gradient() -> None:
    span, write, t_query, visible = span_inputs(torch.Generator().manual_seed(2))
    log_mask, in_ramp = RampLogMask.apply(span, write, t_query, visible, RAMP)
    want = plain_log_mask(span, write, t_query, visible)
    torch.testing.assert_close(log_mask, want, atol=0, rtol=0)
    mask = want.exp()
    assert torch.equal(in_ramp, visible & (mask > 0) & (mask < 1))
    assert in_ramp.any() and (visible & (mask == 1)).any() and (visible & (mask == 0)).any()
    grad = torch.randn_like(log_mask).masked_fill(~torch.isfinite(want), 0.0)
    (got,) = torch.autograd.grad(log_mask, span, grad)
    (expected,) = torch.autograd.grad(want, span, grad)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert got.abs().sum() > 0


def test_ramp_log_mask_gradcheck() -> None:
    span, write, t_query, visible = span_inputs(torch.Generator().manual_seed(3))
    # gradcheck perturbs spans by 1e-6: keep every pair away from the ramp's ends, where the
    # clamp has a kink (the fractional part of the remaining span in [0.1, 0.9]).
    with torch.no_grad():
        span.copy_(span.floor() + 0.1 + 0.8 * span.frac())

    def finite(span: torch.Tensor) -> torch.Tensor:
        log_mask, _ = RampLogMask.apply(span, write, t_query, visible, RAMP)
        return log_mask.masked_fill(~torch.isfinite(log_mask), 0.0)

    assert torch.autograd.gradcheck(finite, (span,))
