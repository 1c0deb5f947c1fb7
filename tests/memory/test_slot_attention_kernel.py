"""The hand-written chunk attention against autograd on the plain formula."""

from __future__ import annotations

import torch

from memory.slot_attention import MaskedSlotAttention, log_soft_mask

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
    out = MaskedSlotAttention.apply(*args)
    want = reference(*args)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    grad = torch.randn_like(out)
    wrt = [a for a in args if a.requires_grad]
    got = torch.autograd.grad(out, wrt, grad)
    expected = torch.autograd.grad(want, wrt, grad)
    for mine, theirs in zip(got, expected, strict=True):
        # -inf entries of the masks have zero gradient in both.
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=0)


def test_gradcheck() -> None:
    args = inputs(torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(MaskedSlotAttention.apply, args)
