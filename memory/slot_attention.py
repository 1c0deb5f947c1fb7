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
        """``[..., N, D] -> [..., H, N, d]``."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(-2, -3)

    def attend(
        self, query_in: Tensor, key_in: Tensor, visible: Tensor, soft_mask: Tensor, bias: Tensor
    ) -> Tensor:
        """Masked attention. ``query_in [B, Q, D]``, ``key_in [B, K, D]`` (both normed),
        ``visible``/``soft_mask [B, Q, K]``, ``bias [B, H, Q, K]`` -> ``[B, Q, D]``."""
        q = self.heads(self.proj_query(query_in))  # [B, H, Q, d]
        k = self.heads(self.proj_key(key_in))  # [B, H, K, d]
        v = self.heads(self.proj_value(key_in))  # [B, H, K, d]
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias  # [B, H, Q, K]
        logits = logits.masked_fill(~visible.unsqueeze(1), float("-inf"))
        # softmax over the visible set, times the soft mask, renormalised. The query's own step
        # always has m = 1, so the sum is positive; the clamp only guards underflow.
        weights = torch.softmax(logits, dim=-1) * soft_mask.unsqueeze(1)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)
        out = (weights @ v).transpose(-2, -3).flatten(-2)  # [B, Q, D]
        return self.proj_out(out)

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
        self.input_proj = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(
            SlotLayer(d_model, n_heads, ff_mult, position_buckets, self.learn_span)
            for _ in range(n_layers)
        )
        self.out_norm = nn.LayerNorm(d_model)
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
        logit = layer.span_predictor(normed / self.pre_div).squeeze(-1)
        return self.max_span * torch.sigmoid(logit)

    def expiry(self, write_step: Tensor, span: Tensor) -> Tensor:
        """``X = w + e + R``: the first step at which the memory's mask is 0."""
        return write_step.to(span.dtype) + span + self.ramp

    def soft_mask(self, expiry: Tensor, t: Tensor) -> Tensor:
        """``clamp((X - t) / R, 0, 1)``, the Expire-Span mask written with the expiry time."""
        return ((expiry - t.to(expiry.dtype)) / self.ramp).clamp(0.0, 1.0)

    def position_bias(self, layer: SlotLayer, age: Tensor) -> Tensor:
        """``age [B, Q, K]`` -> per-head bias ``[B, H, Q, K]``."""
        bucket = age_bucket(age, self.position_buckets, self.max_age)  # [B, Q, K]
        return layer.position_bias[:, bucket].movedim(0, 1)

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
        """One step for every env (see the module docstring for the slot rules)."""
        batch = x.shape[0]
        capacity = self.capacity
        start = episode_start.to(torch.bool)
        alive = state.alive & ~start[:, None, None]  # [B, L, S]
        t = torch.where(start, torch.zeros_like(state.step), state.step)  # [B]
        t_f = t.to(self._param_dtype())
        h = self.input_proj(x)  # [B, D]
        slot_index = torch.arange(capacity, device=x.device)
        new_hidden, new_write, new_span, new_alive = [], [], [], []
        for index, layer in enumerate(self.layers):
            hid_l = state.hidden[:, index]  # [B, S, D]
            write_l = state.write_step[:, index]  # [B, S]
            span_l = state.span[:, index]  # [B, S]
            alive_l = alive[:, index]  # [B, S]
            normed = layer.norm_attn(h)  # [B, D]
            slot_normed = layer.norm_attn(hid_l)  # [B, S, D]
            span_now = self.predict_span(layer, normed)  # [B]

            keys = torch.cat([slot_normed, normed[:, None]], dim=1)  # [B, S+1, D]
            write_all = torch.cat([write_l, t[:, None]], dim=1)  # [B, S+1]
            expiry_all = self.expiry(write_all, torch.cat([span_l, span_now[:, None]], 1))
            alive_all = torch.cat([alive_l, alive_l.new_ones(batch, 1)], dim=1)  # [B, S+1]
            visible = alive_all & (expiry_all > t_f[:, None])  # [B, S+1]
            mask = self.soft_mask(expiry_all, t[:, None])  # [B, S+1]
            age = (t[:, None] - write_all)[:, None]  # [B, 1, S+1]
            bias = self.position_bias(layer, age)  # [B, H, 1, S+1]
            attn = layer.attend(normed[:, None], keys, visible[:, None], mask[:, None], bias)
            h_next = layer.feed_forward(h + attn[:, 0])  # [B, D]

            # Offer step t's memory: drop what is dead from t+1 on, then evict over capacity.
            keep = alive_all & (expiry_all > t_f[:, None] + 1)  # [B, S+1]
            over = keep.sum(-1) > capacity  # [B]
            lowest = torch.where(keep, expiry_all, torch.inf).amin(-1, keepdim=True)  # [B, 1]
            candidate = keep & (expiry_all == lowest)
            oldest = torch.where(candidate, write_all, torch.iinfo(torch.long).max).argmin(-1)
            evict = F.one_hot(oldest, capacity + 1).bool() & over[:, None]  # [B, S+1]
            keep = keep & ~evict
            place = keep[:, capacity]  # [B] the new memory stays
            first_free = (~keep[:, :capacity]).int().argmax(-1)  # [B]; exists whenever place
            write_here = (slot_index == first_free[:, None]) & place[:, None]  # [B, S]
            new_hidden.append(torch.where(write_here[..., None], h[:, None], hid_l))
            new_write.append(torch.where(write_here, t[:, None], write_l))
            new_span.append(torch.where(write_here, span_now[:, None], span_l))
            new_alive.append(keep[:, :capacity] | write_here)
            h = h_next
        new_state = SlotState(
            hidden=torch.stack(new_hidden, 1),
            write_step=torch.stack(new_write, 1),
            span=torch.stack(new_span, 1),
            alive=torch.stack(new_alive, 1),
            step=t + 1,
        )
        return self.out_norm(h), new_state

    # ------------------------------------------------------------------ sequence
    def sequence(
        self, x: Tensor, state: SlotState, episode_starts: Tensor
    ) -> tuple[Tensor, Tensor, SlotState]:
        """A chunk ``x [T, B, D]`` in one batched pass; equals ``T`` calls of ``step``.

        Returns ``(y [T, B, D], aux_loss, state)``; ``aux_loss`` is the Expire-Span span loss
        (zero for window and full). With ``span_noise`` and in training mode, masks use spans
        clamped at ``u * L``, ``u ~ U(0, 1)`` per call; slot bookkeeping uses the true spans.
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

        # Memory bookkeeping over keys k = S slots then T chunk steps (write order).
        episode_k = torch.cat([episode.new_zeros(batch, n_slots), episode], 1)  # [B, K]
        same_episode = episode_k[:, None, :] == episode[:, :, None]  # [B, T, K]
        causal = torch.ones(steps, n_slots + steps, dtype=torch.bool, device=device)
        causal[:, n_slots:] = torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
        current = torch.zeros_like(causal)
        current[:, n_slots:] = torch.eye(steps, dtype=torch.bool, device=device)  # [T, K]
        chunk_pair_episode = episode[:, :, None] == episode_k[:, None, :]  # [B, T(k), K(j)]

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
            write_k = torch.cat([state.write_step[:, index], t], 1)  # [B, K]
            exists_k = torch.cat([alive_l, alive_l.new_ones(batch, steps)], 1)  # [B, K]
            normed = layer.norm_attn(h)  # [B, T, D]
            slot_normed = layer.norm_attn(hid_l)  # [B, S, D]
            span_chunk = self.predict_span(layer, normed)  # [B, T]
            span_slot = state.span[:, index]  # [B, S]
            if self.learn_span:
                # Value of the stored span, gradient of the span recomputed with current params.
                recomputed = self.predict_span(layer, slot_normed)
                span_slot = span_slot + (recomputed - recomputed.detach())
            span_k = torch.cat([span_slot, span_chunk], 1)  # [B, K]
            expiry_k = self.expiry(write_k, span_k)  # [B, K]
            fixed_x = expiry_k.detach()  # discrete decisions never carry gradient

            # How many memories written before query t outrank memory j (same episode only).
            slot_key = torch.where(alive_l, fixed_x[:, :n_slots], -torch.inf)
            slot_write = torch.where(alive_l, write_k[:, :n_slots], -1)
            order = sort_by_rank(slot_key, slot_write)  # [B, S]
            slot_rank = torch.empty_like(order).scatter_(
                -1, order, torch.arange(n_slots, device=device).expand(batch, -1)
            )  # [B, S] alive slots outranking each alive slot
            slot_over_chunk = (
                alive_l[:, :, None]
                & outranks(
                    fixed_x[:, :n_slots, None],
                    write_k[:, :n_slots, None],
                    fixed_x[:, None, n_slots:],
                    write_k[:, None, n_slots:],
                )
                & (episode[:, None, :] == 0)
            ).sum(1)  # [B, T]
            from_slots = torch.cat([slot_rank, slot_over_chunk], 1)  # [B, K]
            chunk_over = chunk_pair_episode & outranks(
                fixed_x[:, n_slots:, None],
                write_k[:, n_slots:, None],
                fixed_x[:, None, :],
                write_k[:, None, :],
            )  # [B, T(k), K(j)]
            chunk_over = chunk_over.int()
            from_chunk = chunk_over.cumsum(1) - chunk_over  # written strictly before query
            outranked_by = from_slots[:, None, :] + from_chunk  # [B, T, K]

            visible = (
                exists_k[:, None, :]
                & same_episode
                & causal
                & (fixed_x[:, None, :] > t_f[:, :, None])
                & (current | (outranked_by < capacity))
            )  # [B, T, K]
            mask_span = span_k if noise is None else span_k.clamp(max=noise)
            mask = self.soft_mask(self.expiry(write_k, mask_span)[:, None, :], t[:, :, None])
            age = t[:, :, None] - write_k[:, None, :]  # [B, T, K]
            keys = torch.cat([slot_normed, normed], 1)  # [B, K, D]
            attn = layer.attend(normed, keys, visible, mask, self.position_bias(layer, age))
            if self.learn_span and self.span_loss_coef > 0:
                # Paper's code: remaining span of every (query, memory) pair in the ramp,
                # / R (each memory sits R steps in the ramp), averaged over queries.
                in_ramp = visible & (mask > 0) & (mask < 1)
                remaining = mask_span[:, None, :] - age.to(dtype)  # [B, T, K]
                aux = aux + self.span_loss_coef * (remaining * in_ramp).sum() / (
                    self.ramp * steps * batch
                )

            # State after the chunk: top-capacity of the last episode's live memories.
            eligible = (
                exists_k
                & (episode_k == episode_end[:, None])
                & (fixed_x > (t_end[:, None] + 1).to(dtype))
            )  # [B, K]
            ranked = sort_by_rank(
                torch.where(eligible, fixed_x, -torch.inf), torch.where(eligible, write_k, -1)
            )[:, :capacity]  # [B, S]
            keep = eligible.gather(1, ranked)  # [B, S]
            hidden_k = torch.cat([hid_l, h], 1)  # [B, K, D]
            gathered = hidden_k.gather(1, ranked[..., None].expand(-1, -1, self.d_model))
            new_hidden.append(gathered * keep[..., None])
            new_write.append(write_k.gather(1, ranked) * keep)
            new_span.append(torch.where(keep, span_k.gather(1, ranked), 0.0))
            new_alive.append(keep)
            h = layer.feed_forward(h + attn)
        new_state = SlotState(
            hidden=torch.stack(new_hidden, 1),
            write_step=torch.stack(new_write, 1),
            span=torch.stack(new_span, 1),
            alive=torch.stack(new_alive, 1),
            step=t_end + 1,
        )
        return self.out_norm(h).transpose(0, 1), aux, new_state
