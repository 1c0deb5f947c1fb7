"""Expire-Span memory core (Sukhbaatar et al., 2021): every memory gets a learned expiry.

Per layer, a memory written at step ``w`` from hidden ``h`` gets the span
``e = L * sigmoid(a . norm(h) / pre_div + b)`` (``a``, ``b``: the span predictor's weights and
bias, ``b`` initialised so that ``e = init_span_fraction * L``; ``L = max_span``), is attended
with the soft mask
``m = clamp(1 + (e - (t - w)) / R, 0, 1)`` (``R = ramp``), and is dropped from its slot once the
mask is 0 for good. ``sequence`` returns the paper's auxiliary span loss
``span_loss_coef * sum_i e_i / (T * B)`` over the chunk's ``T * B`` memories, summed over
layers. Every memory counts, also those the capacity evicts before their ramp (an earlier
version, like the paper's code, counted pairs in the ramp only: the spans of evicted memories
then got no gradient at all and rose with the predictor's bias, until they crowded out the
memory that mattered). The slot machinery is shared with window and full: see
``memory.slot_attention``.

Our addition, off by default (``use_loss_coef=0``): the *use loss* (``SlotTransformer.use_loss``)
pulls the span of every memory the attention reads, above its uniform share, at age ``a`` up to
``use_margin * a``. The ramp's gradient reaches a span only within ``R`` steps of its expiry,
so a kept memory's span gets no push back while it drifts down towards the step that needs it;
the use loss gives one as long as that step still reads it.
"""

from __future__ import annotations

from memory.slot_attention import SlotTransformer


class ExpireSpanMemory(SlotTransformer):
    """Expire-Span Transformer memory with ``capacity`` slots per layer and env."""

    def __init__(
        self,
        input_dim: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        ff_mult: int = 2,
        capacity: int = 64,
        max_span: int = 1024,
        ramp: int = 32,
        init_span_fraction: float = 0.1,
        pre_div: float = 1.0,
        span_loss_coef: float = 1e-6,
        span_noise: bool = False,
        use_loss_coef: float = 0.0,
        use_margin: float = 1.25,
        position_buckets: int = 32,
    ):
        super().__init__(
            input_dim,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            ff_mult=ff_mult,
            capacity=capacity,
            ramp=ramp,
            position_buckets=position_buckets,
            max_age=max_span + ramp,
            span_source="learned",
            max_span=max_span,
            init_span_fraction=init_span_fraction,
            pre_div=pre_div,
            span_loss_coef=span_loss_coef,
            span_noise=span_noise,
            use_loss_coef=use_loss_coef,
            use_margin=use_margin,
        )
