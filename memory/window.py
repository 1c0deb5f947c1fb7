"""Baselines on the same slot machinery: a fixed window (forgets by age) and a bounded full memory.

- ``WindowMemory``: Transformer-XL style; each layer attends to the current step and the
  ``window`` previous steps (span ``window``, hard mask: ramp 1, capacity ``window``).
- ``FullMemory``: the whole episode so far, bounded by ``max_memory`` slots per layer (span
  ``inf``: nothing expires; past ``max_memory`` steps the oldest memory is evicted).
"""

from __future__ import annotations

import math

from memory.slot_attention import SlotTransformer


class WindowMemory(SlotTransformer):
    """Attends to the last ``window`` steps plus the current one."""

    def __init__(
        self,
        input_dim: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        ff_mult: int = 2,
        window: int = 64,
        position_buckets: int = 32,
    ):
        super().__init__(
            input_dim,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            ff_mult=ff_mult,
            capacity=window,
            ramp=1,
            position_buckets=position_buckets,
            max_age=window + 1,
            span_source="fixed",
            fixed_span=window,
        )


class FullMemory(SlotTransformer):
    """Attends to the whole episode so far, up to ``max_memory`` previous steps."""

    def __init__(
        self,
        input_dim: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        ff_mult: int = 2,
        max_memory: int = 1024,
        position_buckets: int = 32,
    ):
        super().__init__(
            input_dim,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            ff_mult=ff_mult,
            capacity=max_memory,
            ramp=1,
            position_buckets=position_buckets,
            max_age=max_memory + 1,
            span_source="fixed",
            fixed_span=math.inf,
        )
