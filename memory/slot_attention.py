"""Fixed-capacity slot memory attention: the machinery shared by expire-span, window and full.

Every layer ``l`` keeps, per env, ``capacity`` slots. Slot ``j`` holds the input hidden of
layer ``l`` at the step it was written (``write_step w_j``, counted from the episode start)
and a span ``e_j``. Its *expiry time* ``X_j = w_j + e_j + R`` (``R`` the ramp) is fixed when
it is written; the soft mask a query at step ``t`` applies to it is

    m_tj = clamp((X_j - t) / R, 0, 1)  ==  clamp(1 + (e_j - (t - w_j)) / R, 0, 1)

(the Expire-Span mask). The cores differ only in where the span comes from:

- expire-span: ``e_j = L * sigmoid(w . norm(h_j) / pre_div + b)``, learned, soft ramp ``R``;
- window: ``e_j = window``, ``R = 1``: a hard mask that keeps the last ``window`` steps;
- full: ``e_j = inf``: never expires; the capacity (``max_memory``) drops the oldest.

Step semantics (``SlotTransformer.step``), per layer and env, at episode step ``t``:

1. the query of step ``t`` attends to the alive slots with ``X_j > t`` plus step ``t`` itself
   (softmax restricted to those, multiplied by ``m``, renormalised);
2. then the memory of step ``t`` is offered to the slots: memories with ``X_j <= t + 1``
   (mask 0 from the next step on, i.e. remaining span ``<= -R``) are dropped, and if more than
   ``capacity`` remain, the one closest to expiry (smallest ``X``, ties: oldest write) goes.

Because ``X`` is fixed at write time, the set kept after step ``t`` is exactly the top
``capacity`` (by ``X``, then write step) among the episode's memories written by ``t`` with
``X > t + 1``. So in ``sequence`` memory ``j`` is visible to query ``t`` iff it is in the same
episode, written before ``t``, ``X_j > t`` and fewer than ``capacity`` memories written before
``t`` outrank it (or ``j`` is ``t`` itself). That count is a cumulative sum of an outranks
matrix over the chunk, so a whole chunk is one batched computation with no time loop.

Gradients in ``sequence``: slot memories carried in the state have their keys, values and spans
recomputed from the stored hidden with the current parameters (the value of the span is the
stored one, exactly; its gradient is the recomputed one's). This lets the span predictor learn
from memories written in earlier chunks, as in the paper's code.

Relative position: a learned per-head bias on a log-bucketed age ``t - w_j``. Age is stored
per memory, so it stays valid however many memories were dropped in between.

Implementation (equal to the formulas above up to float rounding): the renormalised
``softmax * m`` is computed as ``softmax(logits + log m)``; ``sequence`` keeps slot and chunk
keys as two blocks and runs the attention through ``MaskedSlotAttention`` (hand-written
backward, one ``[B, H, T, K]`` buffer); ``step`` applies the key and value projections to the
query and the attention-weighted sum instead of to every slot (``attend_step``). Age buckets
come from a precomputed table.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memory.base import Memory, register_state_type


@register_state_type
class SlotState(NamedTuple):
    """State of a slot-attention core (expire-span, window, full). ``L`` layers, ``S`` slots.

    Fields:
        hidden: ``[B, L, S, D]`` input hidden of each layer at the memory's write step.
        write_step: ``[B, L, S]`` int64, episode step at which the memory was written.
        span: ``[B, L, S]`` span ``e`` in steps (expire-span: predicted; window: ``window``;
            full: ``inf``).
        alive: ``[B, L, S]`` bool, whether the slot holds a memory.
        step: ``[B]`` int64, episode step of the next call (0 right after an episode start).
    """

    hidden: Tensor
    write_step: Tensor
    span: Tensor
    alive: Tensor
    step: Tensor


class KeepMask(NamedTuple):
    """What the next step would apply to each slot (for retention heatmaps).

    Fields (``[B, L, S]``): ``mask`` soft mask (0 for empty or expired slots), ``write_step``,
    ``span``, ``alive``. ``step [B]`` is the query step ``t`` the mask is for.
    """

    mask: Tensor
    write_step: Tensor
    span: Tensor
    alive: Tensor
    step: Tensor


MAX_BUCKET_TABLE = 1 << 20  # ages; a larger max_age computes buckets directly


def outranks(x_a: Tensor, w_a: Tensor, x_b: Tensor, w_b: Tensor) -> Tensor:
    """Whether memory a is kept before memory b: later expiry, ties broken by later write."""
    return (x_a > x_b) | ((x_a == x_b) & (w_a > w_b))


def sort_by_rank(expiry: Tensor, write_step: Tensor) -> Tensor:
    """Indices sorting the last dim by (expiry, write_step), both descending."""
    by_write = torch.argsort(write_step, dim=-1, descending=True, stable=True)
    by_expiry = torch.argsort(expiry.gather(-1, by_write), dim=-1, descending=True, stable=True)
    return by_write.gather(-1, by_expiry)


def age_bucket(age: Tensor, num_buckets: int, max_age: float) -> Tensor:
    """Map integer ages >= 0 to buckets: exact below ``num_buckets // 2``, log-spaced above."""
    exact = max(num_buckets // 2, 1)
    max_age = max(float(max_age), 2.0 * exact)
    age = age.clamp(min=0)
    log_part = torch.log(age.double().clamp(min=1) / exact) / math.log(max_age / exact)
    log_bucket = exact + (log_part * (num_buckets - exact)).long()
    return torch.where(age < exact, age, log_bucket.clamp(max=num_buckets - 1))


class MaskedSlotAttention(torch.autograd.Function):
    """Chunk attention over ``S`` slot keys then ``T`` chunk keys (``K = S + T``).

    ``softmax(q k^T + bias + log_mask) v`` per head, where ``bias`` is the head's position
    bias at the pair's age bucket (``slot_bucket [B, Q, S]``, ``chunk_bucket [Q, T]``: within
    an episode a chunk pair's age does not depend on the env) and ``log_mask`` is
    ``slot_mask [B, Q, S]`` / ``chunk_mask [B, Q, T]`` (``-inf`` where hidden). Scaling is the
    caller's (fold it into ``q``). The backward is written by hand: the only ``[B, H, Q, K]``
    tensors are the saved probabilities and the logits gradient (updated in place), and the
    position-bias gradient is one ``scatter_add`` instead of autograd's indexed accumulate.
    """

    @staticmethod
    def forward(
        ctx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: Tensor,
        slot_bucket: Tensor,
        chunk_bucket: Tensor,
        slot_mask: Tensor,
        chunk_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``q [B, H, Q, d]``, ``k``/``v [B, H, K, d]``, ``bias [H, n]`` -> ``out [B, H, Q, d]``
        and the attention ``probs [B, H, Q, K]`` (no gradient: what `SlotTransformer`'s use loss
        reads)."""
        # Head-major and contiguous once: every product below (and in backward) then reads
        # its operands in place, transposed or not, instead of copying per product.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch, heads, queries = q.shape[:3]
        n_slots = slot_bucket.shape[-1]
        logits = torch.matmul(q, k.transpose(-1, -2))  # [B, H, Q, K]
        slot_logits = logits[..., :n_slots]  # [B, H, Q, S]
        slot_index = slot_bucket[:, None].expand(batch, heads, queries, n_slots)
        slot_logits += bias[None, :, None].expand(batch, heads, queries, -1).gather(-1, slot_index)
        slot_logits += slot_mask[:, None]
        chunk_logits = logits[..., n_slots:]  # [B, H, Q, T]
        chunk_logits += bias[:, chunk_bucket]
        chunk_logits += chunk_mask.unsqueeze(1)
        probs = torch.softmax(logits, dim=-1)  # [B, H, Q, K]
        del logits, slot_logits, chunk_logits
        out = torch.matmul(probs, v)  # [B, H, Q, d]
        ctx.save_for_backward(q, k, v, probs, out, slot_bucket, chunk_bucket)
        ctx.n_buckets = bias.shape[-1]
        ctx.mark_non_differentiable(probs)
        return out, probs

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_probs: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, probs, out, slot_bucket, chunk_bucket = ctx.saved_tensors
        n_slots, n_buckets = slot_bucket.shape[-1], ctx.n_buckets
        batch, heads, queries = probs.shape[:3]
        need = ctx.needs_input_grad
        grad_out = grad_out.contiguous()
        grad_v = torch.matmul(probs.transpose(-1, -2), grad_out) if need[2] else None
        # d logits = p * (dp - sum_k p dp), and sum_k p dp = sum_d out * grad_out.
        grad_logits = torch.matmul(grad_out, v.transpose(-1, -2))  # [B, H, Q, K]
        grad_logits -= (grad_out * out).sum(-1, keepdim=True)
        grad_logits *= probs
        grad_q = torch.matmul(grad_logits, k) if need[0] else None
        grad_k = torch.matmul(grad_logits.transpose(-1, -2), q) if need[1] else None
        grad_slot = grad_logits[..., :n_slots]  # [B, H, Q, S]
        grad_chunk = grad_logits[..., n_slots:]  # [B, H, Q, T]
        grad_bias = None
        if need[3]:
            # Slots: per (env, head, query) a histogram over buckets, then summed: the
            # gradient is read in its own layout. Chunk pairs share one [Q, T] bucket table.
            slot_index = slot_bucket[:, None].expand(batch, heads, queries, n_slots)
            per_query = grad_logits.new_zeros(batch, heads, queries, n_buckets)
            grad_bias = per_query.scatter_add_(-1, slot_index, grad_slot).sum((0, 2))  # [H, n]
            head = torch.arange(heads, device=q.device)[:, None, None] * n_buckets  # [H, 1, 1]
            grad_bias.view(-1).scatter_add_(
                0, (head + chunk_bucket).flatten(), grad_chunk.sum(0).flatten()
            )
        grad_slot_mask = grad_slot.sum(1) if need[6] else None
        grad_chunk_mask = grad_chunk.sum(1) if need[7] else None
        return grad_q, grad_k, grad_v, grad_bias, None, None, grad_slot_mask, grad_chunk_mask


class RampLogMask(torch.autograd.Function):
    """The Expire-Span log mask of every (query, memory) pair, from the memories' spans.

    Forward: ``m_qk = clamp((X_k - t_q) / R, 0, 1)`` with ``X_k = w_k + e_k + R``, and
    ``log m_qk`` where ``visible`` and ``m_qk > 0``, ``-inf`` elsewhere (as `log_soft_mask`).
    Also returns which pairs are in the ramp (``visible``, ``0 < m < 1``).

    Backward, by hand: only pairs in the ramp depend on the span, with
    ``d log m_qk / d e_k = 1 / (X_k - t_q)``, so ``grad_e_k = sum_q grad_qk / (X_k - t_q)``
    over those pairs: one product and one sum instead of autograd's chain of ``[B, Q, K]``
    operations through the clamp, the log and the masking.
    """

    @staticmethod
    def forward(
        ctx, span: Tensor, write_step: Tensor, t_query: Tensor, visible: Tensor, ramp: float
    ) -> tuple[Tensor, Tensor]:
        """``span``/``write_step [B, K]``, ``t_query [B, Q, 1]``, ``visible [B, Q, K]``."""
        expiry = write_step.to(span.dtype) + span + ramp  # [B, K]
        remaining = expiry[:, None] - t_query.to(span.dtype)  # [B, Q, K]  X - t
        mask = (remaining / ramp).clamp(0.0, 1.0)
        positive = visible & (mask > 0)
        in_ramp = positive & (mask < 1)
        log_mask = torch.where(positive, mask, 1.0).log_().masked_fill_(~positive, -math.inf)
        ctx.save_for_backward(torch.where(in_ramp, remaining, math.inf))
        ctx.mark_non_differentiable(in_ramp)
        return log_mask, in_ramp

    @staticmethod
    def backward(ctx, grad_log_mask: Tensor, _grad_in_ramp: Tensor) -> tuple[Tensor | None, ...]:
        (remaining,) = ctx.saved_tensors  # X - t in the ramp, inf elsewhere
        grad_span = (grad_log_mask / remaining).sum(1) if ctx.needs_input_grad[0] else None
        return grad_span, None, None, None, None


def exclusive_cumsum(flags: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, T, N]`` bool -> ``[B, T, N]``: how many of rows ``0 .. t-1`` are set, per column."""
    return F.pad(flags[:, :-1].cumsum(1, dtype=dtype), (0, 0, 1, 0))


def log_soft_mask(mask: Tensor, visible: Tensor) -> Tensor:
    """``log(mask)`` where ``visible`` and ``mask > 0``, ``-inf`` elsewhere.

    ``softmax(l) * m`` renormalised equals ``softmax(l + log m)``; this is the additive form.
    The log never sees a zero, so its gradient stays finite.
    """
    positive = visible & (mask > 0)
    return torch.where(positive, mask, 1.0).log().masked_fill(~positive, -math.inf)


class SlotLayer(nn.Module):
    """One pre-norm layer: multi-head attention over slots + current step, then an FFN."""

    def __init__(
        self, d_model: int, n_heads: int, ff_mult: int, num_buckets: int, learn_span: bool
    ):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.norm_attn = nn.LayerNorm(d_model)
        self.proj_query = nn.Linear(d_model, d_model, bias=False)
        self.proj_key = nn.Linear(d_model, d_model, bias=False)
        self.proj_value = nn.Linear(d_model, d_model, bias=False)
        self.proj_out = nn.Linear(d_model, d_model, bias=False)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )
        self.position_bias = nn.Parameter(torch.zeros(n_heads, num_buckets))
        # Shared by the layer's heads, as in the paper; only expire-span learns spans.
        self.span_predictor = nn.Linear(d_model, 1) if learn_span else None

    def heads(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, H, N, d]`` (a view)."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(-2, -3)

    def attend_chunk(
        self,
        normed: Tensor,
        slot_normed: Tensor,
        slot_bucket: Tensor,
        chunk_bucket: Tensor,
        slot_mask: Tensor,
        chunk_mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Attention of a chunk over ``S`` slots and the chunk itself.

        ``normed [B, T, D]`` (queries, and keys after the slots), ``slot_normed [B, S, D]``;
        position buckets ``slot_bucket [B, T, S]``, ``chunk_bucket [T, T]``; log soft masks
        ``slot_mask [B, T, S]``, ``chunk_mask [B, T, T]`` (``-inf`` where hidden) -> ``[B, T, D]``,
        and the attention probabilities ``[B, H, T, S + T]`` (no gradient).
        """
        d_model = normed.shape[-1]
        scale = 1.0 / math.sqrt(self.head_dim)
        w_query, w_key, w_value = (
            self.proj_query.weight,
            self.proj_key.weight,
            self.proj_value.weight,
        )
        # One product per input, split (not sliced: a split's backward is one concatenation,
        # a slice's a zero-filled copy per slice).
        w_qkv = torch.cat([w_query * scale, w_key, w_value])  # [3D, D]
        q, chunk_k, chunk_v = F.linear(normed, w_qkv).split(d_model, -1)  # [B, T, D] each
        slot_k, slot_v = F.linear(slot_normed, torch.cat([w_key, w_value])).split(d_model, -1)
        q = self.heads(q)  # [B, H, T, d]
        k = self.heads(torch.cat([slot_k, chunk_k], 1))  # [B, H, K, d]
        v = self.heads(torch.cat([slot_v, chunk_v], 1))  # [B, H, K, d]
        out, probs = MaskedSlotAttention.apply(
            q, k, v, self.position_bias, slot_bucket, chunk_bucket, slot_mask, chunk_mask
        )  # [B, H, T, d], [B, H, T, K]
        return self.proj_out(out.transpose(1, 2).flatten(-2)), probs  # [B, T, D]

    def attend_step(
        self, normed: Tensor, slot_normed: Tensor, slot_add: Tensor, now_add: Tensor
    ) -> Tensor:
        """Attention of one step over ``S`` slots and itself, without projecting the slots.

        ``q . (W_k n) = (W_k^T q) . n`` and ``sum_j p_j W_v n_j = W_v sum_j p_j n_j`` per head,
        so the slots' normed hiddens are used as they are: ``S * D * H`` work per env instead
        of ``2 * S * D * D`` for their keys and values (equal up to float rounding).
        ``normed [B, D]``, ``slot_normed [B, S, D]``, ``slot_add [B, H, S]``, ``now_add [B, H]``
        -> ``[B, D]``. ``proj_out`` sees ``[B, 1, D]``, as one query.
        """
        batch, d_model = normed.shape
        heads, head_dim = self.n_heads, self.head_dim
        query = self.proj_query(normed).view(batch, heads, head_dim) / math.sqrt(head_dim)
        w_key = self.proj_key.weight.view(heads, head_dim, d_model)
        # [H, B, d] @ [H, d, D] -> [H, B, D] -> [B, H, D]: the query seen in the normed space.
        query_in = torch.bmm(query.transpose(0, 1), w_key).transpose(0, 1)
        logit_slots = torch.bmm(query_in, slot_normed.transpose(1, 2)) + slot_add  # [B, H, S]
        logit_now = (query_in * normed[:, None, :]).sum(-1) + now_add  # [B, H]
        probs = torch.softmax(torch.cat([logit_slots, logit_now[..., None]], -1), -1)
        n_slots = slot_normed.shape[1]
        # [B, H, D]: attention-weighted normed hidden per head.
        mixed = torch.baddbmm(
            probs[..., n_slots:] * normed[:, None, :], probs[..., :n_slots], slot_normed
        )
        w_value = self.proj_value.weight.view(heads, head_dim, d_model)
        out = torch.bmm(mixed.transpose(0, 1), w_value.transpose(1, 2))  # [H, B, d]
        return self.proj_out(out.transpose(0, 1).reshape(batch, 1, d_model))[:, 0]

    def feed_forward(self, h: Tensor) -> Tensor:
        return h + self.ff(self.norm_ff(h))


class SlotTransformer(Memory):
    """A stack of slot-attention layers; see the module docstring for the semantics.

    Subclasses choose the span source through ``span_source``: ``"learned"`` (expire-span,
    with ``max_span``, ``ramp``, ``init_span_fraction``, ``pre_div``), or ``"fixed"`` with
    ``fixed_span`` (window: ``window`` with ramp 1; full: ``inf``).
    """

    def __init__(
        self,
        input_dim: int,
        *,
        d_model: int,
        n_layers: int,
        n_heads: int,
        ff_mult: int,
        capacity: int,
        ramp: float,
        position_buckets: int,
        max_age: float,
        span_source: str,
        fixed_span: float = 0.0,
        max_span: float = 0.0,
        init_span_fraction: float = 0.1,
        pre_div: float = 1.0,
        span_loss_coef: float = 0.0,
        span_noise: bool = False,
        use_loss_coef: float = 0.0,
        use_margin: float = 1.25,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.d_model = d_model
        self.output_dim = d_model
        self.n_layers = n_layers
        self.capacity = capacity
        self.ramp = float(ramp)
        self.position_buckets = position_buckets
        self.max_age = max_age
        self.learn_span = span_source == "learned"
        self.fixed_span = float(fixed_span)
        self.max_span = float(max_span)
        self.pre_div = pre_div
        self.span_loss_coef = span_loss_coef
        self.span_noise = span_noise
        self.use_loss_coef = use_loss_coef
        self.use_margin = use_margin
        self.input_proj = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(
            SlotLayer(d_model, n_heads, ff_mult, position_buckets, self.learn_span)
            for _ in range(n_layers)
        )
        self.out_norm = nn.LayerNorm(d_model)
        # Bucket of every age up to the first that lands in the last bucket (all older ages
        # do too): an index instead of a float64 log per (query, memory) pair.
        exact = max(position_buckets // 2, 1)
        table_size = math.ceil(max(float(max_age), 2.0 * exact)) + 1
        table = None
        if table_size <= MAX_BUCKET_TABLE:
            table = age_bucket(torch.arange(table_size), position_buckets, max_age)
        self.register_buffer("age_bucket_table", table, persistent=False)
        if self.learn_span:
            # Spans start at init_span_fraction * L for every memory: zero weight, and the
            # bias at the logit of that fraction (the paper's code does the same).
            bias = -math.log(1.0 / init_span_fraction - 1.0)
            for layer in self.layers:
                nn.init.zeros_(layer.span_predictor.weight)
                nn.init.constant_(layer.span_predictor.bias, bias)

    # ------------------------------------------------------------------ spans and masks
    def predict_span(self, layer: SlotLayer, normed: Tensor) -> Tensor:
        """Span in steps for memories with normed hidden ``normed [..., D]`` -> ``[...]``."""
        if layer.span_predictor is None:
            return normed.new_full(normed.shape[:-1], self.fixed_span)
        logit = layer.span_predictor(normed if self.pre_div == 1 else normed / self.pre_div)
        logit = logit.squeeze(-1)
        return self.max_span * torch.sigmoid(logit)

    def expiry(self, write_step: Tensor, span: Tensor) -> Tensor:
        """``X = w + e + R``: the first step at which the memory's mask is 0."""
        return write_step.to(span.dtype) + span + self.ramp

    def soft_mask(self, expiry: Tensor, t: Tensor) -> Tensor:
        """``clamp((X - t) / R, 0, 1)``, the Expire-Span mask written with the expiry time."""
        return ((expiry - t.to(expiry.dtype)) / self.ramp).clamp(0.0, 1.0)

    def bucket(self, age: Tensor) -> Tensor:
        """Position bucket of integer ages (``age_bucket``, through the table when it exists)."""
        table = self.age_bucket_table
        if table is None:
            return age_bucket(age, self.position_buckets, self.max_age)
        return table[age.clamp(0, table.shape[0] - 1)]

    def use_loss(
        self,
        probs: Tensor,
        slot_age: Tensor,
        chunk_age: Tensor,
        span_slot: Tensor,
        span_chunk: Tensor,
    ) -> Tensor:
        """Keep what is read: ``coef * sum_qj r_qj * relu(margin * age_qj - e_j) / (B * T)``.

        ``r_qj = relu(a_qj - 1 / n_q)``: query ``q``'s attention to memory ``j`` (mean over
        heads, no gradient) above the uniform share of the ``n_q`` memories it sees;
        ``age_qj = t_q - w_j``. A memory read at age ``a`` is pulled to a span of at least
        ``margin * a``: a restoring force on a span while its memory is still read with room
        to spare, where the ramp gives none (it acts only within ``R`` steps of expiry).
        Diffuse attention reads nothing: counted, it pulled up every memory the slots held
        (each is read a little at every age), until long-lived corridor memories crowded the
        cue out of a 16-slot memory. ``probs [B, H, T, S + T]``, ``slot_age [B, T, S]``,
        ``chunk_age [T, T]``, spans ``[B, S]`` / ``[B, T]``.
        """
        attention = probs.mean(1)  # [B, T, S + T]
        seen = (attention > 0).sum(-1, keepdim=True).clamp(min=1)  # [B, T, 1]
        read = (attention - 1.0 / seen).clamp(min=0.0)
        n_slots = slot_age.shape[-1]
        margin = self.use_margin
        short_slot = (margin * slot_age.to(span_slot.dtype) - span_slot[:, None]).relu()
        short_chunk = (margin * chunk_age.to(span_chunk.dtype) - span_chunk[:, None]).relu()
        total = (read[..., :n_slots] * short_slot).sum() + (read[..., n_slots:] * short_chunk).sum()
        return self.use_loss_coef * total / read.shape[0] / read.shape[1]

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> SlotState:
        """Empty slots for ``batch_size`` envs."""
        device = self._param_device() if device is None else device
        shape = (batch_size, self.n_layers, self.capacity)
        return SlotState(
            hidden=torch.zeros(*shape, self.d_model, dtype=self._param_dtype(), device=device),
            write_step=torch.zeros(shape, dtype=torch.long, device=device),
            span=torch.zeros(shape, dtype=self._param_dtype(), device=device),
            alive=torch.zeros(shape, dtype=torch.bool, device=device),
            step=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def keep_mask(self, state: SlotState) -> KeepMask:
        """Soft mask the next ``step`` applies to each slot, per layer ``[B, L, S]``.

        Call it on the state passed into ``step`` at agent step ``t = state.step``; if that
        step starts an episode, every slot is cleared instead. All alive slots with
        ``X > t`` are visible to the next query, so this is the complete retention picture.
        """
        t = state.step[:, None, None]  # [B, 1, 1]
        x = self.expiry(state.write_step, state.span)  # [B, L, S]
        mask = self.soft_mask(x, t) * (state.alive & (x > t.to(x.dtype)))
        return KeepMask(mask, state.write_step, state.span, state.alive, state.step)

    # ------------------------------------------------------------------ step
    def step(self, x: Tensor, state: SlotState, episode_start: Tensor) -> tuple[Tensor, SlotState]:
        """One step for every env (see the module docstring for the slot rules).

        What depends only on the state (slot masks, position buckets) is computed for all
        layers at once, and so is the slot update after the last layer: only the attention
        and the feed-forward run per layer.
        """
        batch = x.shape[0]
        capacity, n_layers = self.capacity, self.n_layers
        start = episode_start.to(torch.bool)
        alive = state.alive & ~start[:, None, None]  # [B, L, S]
        t = torch.where(start, torch.zeros_like(state.step), state.step)  # [B]
        t_f = t.to(self._param_dtype())
        t_slot = t[:, None, None]  # [B, 1, 1]
        slot_expiry = self.expiry(state.write_step, state.span)  # [B, L, S]
        slot_visible = alive & (slot_expiry > t_f[:, None, None])  # [B, L, S]
        slot_log_mask = log_soft_mask(self.soft_mask(slot_expiry, t_slot), slot_visible)
        slot_bucket = self.bucket(t_slot - state.write_step)  # [B, L, S]
        now_bucket = self.bucket(t.new_zeros(()))  # age 0

        h = self.input_proj(x)  # [B, D]
        inputs, spans_now = [], []
        for index, layer in enumerate(self.layers):
            normed = layer.norm_attn(h)  # [B, D]
            slot_normed = layer.norm_attn(state.hidden[:, index])  # [B, S, D]
            span_now = self.predict_span(layer, normed)  # [B]
            bias = layer.position_bias  # [H, buckets]
            slot_add = bias[:, slot_bucket[:, index]].transpose(0, 1)  # [B, H, S]
            slot_add = slot_add + slot_log_mask[:, index, None, :]
            # The step's own memory: mask clamp((e + R) / R, 0, 1) = 1 (e >= 0), log mask 0.
            now_add = bias[:, now_bucket].expand(batch, -1)  # [B, H]
            attn = layer.attend_step(normed, slot_normed, slot_add, now_add)  # [B, D]
            inputs.append(h)
            spans_now.append(span_now)
            h = layer.feed_forward(h + attn)  # [B, D]

        # Offer step t's memory to every layer: drop what is dead from t+1 on, then evict the
        # lowest-ranked memory of layers over capacity.
        span_now = torch.stack(spans_now, 1)  # [B, L]
        expiry_now = self.expiry(t[:, None], span_now)  # [B, L]
        expiry_all = torch.cat([slot_expiry, expiry_now[..., None]], -1)  # [B, L, S+1]
        write_all = torch.cat([state.write_step, t_slot.expand(-1, n_layers, 1)], -1)
        alive_all = torch.cat([alive, alive.new_ones(batch, n_layers, 1)], -1)  # [B, L, S+1]
        keep = alive_all & (expiry_all > t_f[:, None, None] + 1)  # [B, L, S+1]
        over = keep.sum(-1, keepdim=True) > capacity  # [B, L, 1]
        lowest = torch.where(keep, expiry_all, torch.inf).amin(-1, keepdim=True)  # [B, L, 1]
        candidate = keep & (expiry_all == lowest)
        write_rank = torch.where(candidate, write_all, torch.iinfo(torch.long).max)
        oldest = write_rank.argmin(-1, keepdim=True)  # [B, L, 1]
        slot_index = torch.arange(capacity + 1, device=x.device)  # [S+1]
        keep = keep & ~((slot_index == oldest) & over)
        place = keep[..., capacity:]  # [B, L, 1] the new memory stays
        first_free = (~keep[..., :capacity]).int().argmax(-1, keepdim=True)  # exists if place
        write_here = (slot_index[:capacity] == first_free) & place  # [B, L, S]
        # Hidden: copy the state once and write one row per layer and env (the free slot gets
        # the new memory where it stays, any other row is rewritten with itself).
        row = first_free[..., None].expand(-1, -1, 1, self.d_model)  # [B, L, 1, D]
        new_row = torch.where(
            place[..., None], torch.stack(inputs, 1)[:, :, None], state.hidden.gather(2, row)
        )  # [B, L, 1, D]
        new_state = SlotState(
            hidden=state.hidden.scatter(2, row, new_row),
            write_step=torch.where(write_here, t_slot, state.write_step),
            span=torch.where(write_here, span_now[..., None], state.span),
            alive=keep[..., :capacity] | write_here,
            step=t + 1,
        )
        return self.out_norm(h), new_state

    # ------------------------------------------------------------------ sequence
    def sequence(
        self, x: Tensor, state: SlotState, episode_starts: Tensor, *, return_state: bool = True
    ) -> tuple[Tensor, Tensor, SlotState | None]:
        """A chunk ``x [T, B, D]`` in one batched pass; equals ``T`` calls of ``step``.

        Returns ``(y [T, B, D], aux_loss, state)``; ``aux_loss`` is the Expire-Span span loss
        (zero for window and full); ``state`` is ``None`` with ``return_state=False`` (the
        top-``capacity`` selection after the chunk is skipped). With ``span_noise`` and in
        training mode, masks use spans clamped at ``u * L``, ``u ~ U(0, 1)`` per call; slot
        bookkeeping uses the true spans.

        Keys are the ``S`` state slots then the ``T`` chunk steps. Query/key pairs are kept in
        two blocks, slots ``[B, T, S]`` and chunk ``[B, T, T]``; inside an episode the age of a
        chunk key is ``tau_q - tau_k``, so the chunk's position bias is one ``[H, T, T]`` table
        (pairs across episodes are hidden, whatever their bias).
        """
        steps, batch = x.shape[:2]
        capacity, n_slots = self.capacity, self.capacity
        device = x.device
        dtype = self._param_dtype()
        starts = episode_starts.to(torch.bool).T  # [B, T]
        tau = torch.arange(steps, device=device)  # [T]
        # Episode index within the chunk (0 = the episode carried by the state) and step t.
        episode = starts.long().cumsum(-1)  # [B, T]
        last_start = torch.where(starts, tau, -1).cummax(-1).values  # [B, T]
        t = torch.where(last_start >= 0, tau - last_start, state.step[:, None] + tau)  # [B, T]
        t_f = t.to(dtype)
        t_query = t_f[:, :, None]  # [B, T, 1]
        first_episode = episode == 0  # [B, T] the carried slots belong to this episode
        count_dtype = torch.int16 if n_slots + steps < 2**15 else torch.int32

        # Chunk-chunk structure [B, T(q), T(k)], shared by the layers.
        same_episode = episode[:, :, None] == episode[:, None, :]  # [B, T, T]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=device).tril()  # [T, T]
        current = torch.eye(steps, dtype=torch.bool, device=device)  # [T, T]
        chunk_pairs = same_episode & causal  # [B, T, T] same episode, written by the query
        chunk_age = (tau[:, None] - tau[None, :]).clamp(min=0)  # [T, T] age within an episode
        chunk_bucket = self.bucket(chunk_age)  # [T, T]

        noise = None
        if self.learn_span and self.span_noise and self.training:
            noise = torch.rand((), device=device, dtype=dtype) * self.max_span

        h = self.input_proj(x).transpose(0, 1)  # [B, T, D]
        aux = x.new_zeros(())
        new_hidden, new_write, new_span, new_alive = [], [], [], []
        t_end = t[:, -1]  # [B]
        episode_end = episode[:, -1]  # [B]
        for index, layer in enumerate(self.layers):
            hid_l = state.hidden[:, index]  # [B, S, D]
            alive_l = state.alive[:, index]  # [B, S]
            slot_write = state.write_step[:, index]  # [B, S]
            normed = layer.norm_attn(h)  # [B, T, D]
            slot_normed = layer.norm_attn(hid_l)  # [B, S, D]
            span_chunk = self.predict_span(layer, normed)  # [B, T]
            span_slot = state.span[:, index]  # [B, S]
            if self.learn_span:
                # Value of the stored span, gradient of the span recomputed with current params.
                recomputed = self.predict_span(layer, slot_normed)
                span_slot = span_slot + (recomputed - recomputed.detach())
            slot_x = self.expiry(slot_write, span_slot).detach()  # [B, S] decisions: no grad
            chunk_x = self.expiry(t, span_chunk).detach()  # [B, T]

            # How many memories written before query t outrank memory j (same episode only):
            # alive slots among themselves (a rank), then chunk memories, counted cumulatively.
            order = sort_by_rank(
                torch.where(alive_l, slot_x, -torch.inf), torch.where(alive_l, slot_write, -1)
            )  # [B, S]
            slot_rank = torch.empty_like(order).scatter_(
                -1, order, torch.arange(n_slots, device=device).expand(batch, -1)
            )  # [B, S] alive slots outranking each alive slot
            writer_x, writer_w = chunk_x[:, :, None], t[:, :, None]  # [B, T(writer), 1]
            slot_over_chunk = (
                alive_l[:, :, None]
                & outranks(slot_x[:, :, None], slot_write[:, :, None], chunk_x[:, None], t[:, None])
            ).sum(1) * first_episode  # [B, T] carried slots outranking chunk memory j
            chunk_over_slot = first_episode[:, :, None] & outranks(
                writer_x, writer_w, slot_x[:, None], slot_write[:, None]
            )  # [B, T(writer), S]
            chunk_over_chunk = same_episode & outranks(
                writer_x, writer_w, chunk_x[:, None], t[:, None]
            )  # [B, T(writer), T(j)]
            # Written strictly before the query: exclusive cumulative counts over writers, in a
            # small integer type (cumsum over a middle dim is slow in int64).
            slot_outranked = slot_rank.to(count_dtype)[:, None] + exclusive_cumsum(
                chunk_over_slot, count_dtype
            )  # [B, T, S]
            chunk_outranked = slot_over_chunk.to(count_dtype)[:, None] + exclusive_cumsum(
                chunk_over_chunk, count_dtype
            )  # [B, T, T]
            slot_visible = (
                alive_l[:, None]
                & first_episode[:, :, None]
                & (slot_x[:, None] > t_query)
                & (slot_outranked < capacity)
            )  # [B, T, S]
            chunk_visible = (
                chunk_pairs
                & (chunk_x[:, None] > t_query)
                & (current | (chunk_outranked < capacity))
            )  # [B, T, T]

            mask_span = span_slot, span_chunk
            if noise is not None:
                mask_span = span_slot.clamp(max=noise), span_chunk.clamp(max=noise)
            slot_log_mask, _ = RampLogMask.apply(
                mask_span[0], slot_write, t_query, slot_visible, self.ramp
            )  # [B, T, S]
            chunk_log_mask, _ = RampLogMask.apply(
                mask_span[1], t, t_query, chunk_visible, self.ramp
            )  # [B, T, T]
            slot_age = t[:, :, None] - slot_write[:, None]  # [B, T, S]
            attn, probs = layer.attend_chunk(
                normed,
                slot_normed,
                self.bucket(slot_age),
                chunk_bucket,
                slot_log_mask,
                chunk_log_mask,
            )  # [B, T, D]
            if self.learn_span and self.span_loss_coef > 0:
                # The paper's auxiliary loss, alpha * sum_i e_i / T per layer, over every
                # memory written in the chunk (each once). It must reach memories that the
                # capacity evicts before their ramp: nothing else ever shortens their spans.
                aux = aux + self.span_loss_coef * span_chunk.mean()
            if self.learn_span and self.use_loss_coef > 0:
                aux = aux + self.use_loss(probs, slot_age, chunk_age, span_slot, span_chunk)

            layer_input, h = h, layer.feed_forward(h + attn)
            if not return_state:
                continue
            # State after the chunk: top-capacity of the last episode's live memories.
            write_k = torch.cat([slot_write, t], 1)  # [B, K]
            fixed_x = torch.cat([slot_x, chunk_x], 1)  # [B, K]
            episode_k = torch.cat([episode.new_zeros(batch, n_slots), episode], 1)  # [B, K]
            exists_k = torch.cat([alive_l, alive_l.new_ones(batch, steps)], 1)  # [B, K]
            eligible = (
                exists_k
                & (episode_k == episode_end[:, None])
                & (fixed_x > (t_end[:, None] + 1).to(dtype))
            )  # [B, K]
            ranked = sort_by_rank(
                torch.where(eligible, fixed_x, -torch.inf), torch.where(eligible, write_k, -1)
            )[:, :capacity]  # [B, S]
            keep = eligible.gather(1, ranked)  # [B, S]
            hidden_k = torch.cat([hid_l, layer_input], 1)  # [B, K, D]
            gathered = hidden_k.gather(1, ranked[..., None].expand(-1, -1, self.d_model))
            span_k = torch.cat([span_slot, span_chunk], 1)  # [B, K]
            new_hidden.append(gathered * keep[..., None])
            new_write.append(write_k.gather(1, ranked) * keep)
            new_span.append(torch.where(keep, span_k.gather(1, ranked), 0.0))
            new_alive.append(keep)
        if not return_state:
            return self.out_norm(h).transpose(0, 1), aux, None
        new_state = SlotState(
            hidden=torch.stack(new_hidden, 1),
            write_step=torch.stack(new_write, 1),
            span=torch.stack(new_span, 1),
            alive=torch.stack(new_alive, 1),
            step=t_end + 1,
        )
        return self.out_norm(h).transpose(0, 1), aux, new_state
