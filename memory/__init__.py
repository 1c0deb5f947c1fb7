"""Lethe memory cores: pure torch, no RL, no environments.

``make_memory(kind, input_dim, **options) -> Memory``; every core has ``output_dim`` and

- ``initial_state(batch_size, device) -> State``
- ``step(x [B, D], state, episode_start [B] bool) -> (y [B, output_dim], State)``
- ``sequence(x [T, B, D], state, episode_starts [T, B] bool) -> (y [T, B, output_dim], aux, State)``
  (``return_state=False``: the attention cores skip the state after the chunk, ``None``)

``sequence`` equals ``T`` calls of ``step`` (train and eval mode; no dropout). Memories of an
env whose episode starts are cleared before that step's input.

Kinds and options (defaults):

- ``"expire-span"``: ``d_model=64, n_layers=2, n_heads=4, ff_mult=2, capacity=64,
  max_span=1024, ramp=32, init_span_fraction=0.1, pre_div=1.0, span_loss_coef=1e-6,
  span_noise=False, use_loss_coef=0.0, use_margin=1.25,
  position_buckets=32``.
- ``"window"``: ``d_model, n_layers, n_heads, ff_mult, position_buckets`` as above, ``window=64``
  (attends to the current step and the ``window`` previous ones).
- ``"full"``: the same model options, ``max_memory=1024`` (the whole episode, bounded: past
  ``max_memory`` previous steps the oldest is evicted).
- ``"gru"``, ``"lstm"``: ``hidden_size=128, num_layers=1``.

States (``NamedTuple``, env dimension first, loadable by ``torch.load`` with
``weights_only=True``): ``SlotState(hidden [B, L, S, D], write_step [B, L, S], span [B, L, S],
alive [B, L, S], step [B])`` for the attention cores, ``GRUState(h [B, layers, H])``,
``LSTMState(h, c)``. ``memory.base`` has ``index_state``, ``state_to``, ``detach_state``.

Introspection (retention heatmaps): for the attention cores the state itself exposes, per
layer and env, each slot's ``write_step``, predicted ``span`` and ``alive``; and
``core.keep_mask(state) -> KeepMask(mask, write_step, span, alive, step)`` gives the soft mask
``[B, L, S]`` that ``core.step(x, state, ...)`` applies to each slot at agent step
``state.step`` (0 for empty or dropped slots; an episode start clears everything instead).
"""

from __future__ import annotations

import math
from typing import Any

from memory.base import Memory, State, detach_state, index_state, state_to
from memory.expire_span import ExpireSpanMemory
from memory.recurrent import GRUState, LSTMState, RecurrentMemory
from memory.slot_attention import KeepMask, SlotState, SlotTransformer
from memory.window import FullMemory, WindowMemory

__all__ = [
    "KINDS",
    "ExpireSpanMemory",
    "FullMemory",
    "GRUState",
    "KeepMask",
    "LSTMState",
    "Memory",
    "RecurrentMemory",
    "SlotState",
    "SlotTransformer",
    "State",
    "WindowMemory",
    "detach_state",
    "index_state",
    "make_memory",
    "state_to",
]

_MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "ff_mult": 2, "position_buckets": 32}

# Every kind's options and their defaults: the single source for validation and docs.
KINDS: dict[str, dict[str, Any]] = {
    "expire-span": {
        **_MODEL,
        "capacity": 64,
        "max_span": 1024,
        "ramp": 32,
        "init_span_fraction": 0.1,
        "pre_div": 1.0,
        "span_loss_coef": 1e-6,
        "span_noise": False,
        "use_loss_coef": 0.0,
        "use_margin": 1.25,
    },
    "window": {**_MODEL, "window": 64},
    "full": {**_MODEL, "max_memory": 1024},
    "gru": {"hidden_size": 128, "num_layers": 1},
    "lstm": {"hidden_size": 128, "num_layers": 1},
}

_POSITIVE_INTS = (
    "d_model",
    "n_layers",
    "n_heads",
    "ff_mult",
    "position_buckets",
    "capacity",
    "max_span",
    "ramp",
    "window",
    "max_memory",
    "hidden_size",
    "num_layers",
)
#: finite-number options and their lower bound: (comparison, bound)
_FINITE_BOUNDS = {
    "pre_div": (">", 0),
    "span_loss_coef": (">=", 0),
    "use_loss_coef": (">=", 0),
    "use_margin": (">=", 1),
}


def _check(options: dict[str, Any], input_dim: int) -> None:
    """Raise ``ValueError`` naming the first bad value and what is allowed."""
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
        raise ValueError(f"input_dim must be an integer >= 1, got {input_dim!r}")
    for name in _POSITIVE_INTS:
        if name in options:
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if "n_heads" in options and options["d_model"] % options["n_heads"]:
        raise ValueError(f"n_heads={options['n_heads']} must divide d_model={options['d_model']}")
    if "max_span" in options and options["ramp"] > options["max_span"]:
        raise ValueError(f"ramp={options['ramp']} must be <= max_span={options['max_span']}")
    if "init_span_fraction" in options:
        fraction = options["init_span_fraction"]
        if not (isinstance(fraction, int | float) and 0.0 < fraction < 1.0):
            raise ValueError(f"init_span_fraction must be in (0, 1), got {fraction!r}")
    for name, (comparison, bound) in _FINITE_BOUNDS.items():
        if name in options:
            value = options[name]
            ok = isinstance(value, int | float) and math.isfinite(value)
            if not (ok and (value > bound if comparison == ">" else value >= bound)):
                raise ValueError(
                    f"{name} must be a finite number {comparison} {bound}, got {value!r}"
                )
    if "span_noise" in options and not isinstance(options["span_noise"], bool):
        raise ValueError(f"span_noise must be True or False, got {options['span_noise']!r}")


def make_memory(kind: str, input_dim: int, **options: Any) -> Memory:
    """Build a memory core of ``kind`` reading ``input_dim`` features (see the module doc)."""
    if kind not in KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; allowed: {', '.join(KINDS)}")
    unknown = sorted(set(options) - set(KINDS[kind]))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for memory kind {kind!r}; "
            f"allowed: {', '.join(KINDS[kind])}"
        )
    merged = {**KINDS[kind], **options}
    _check(merged, input_dim)
    if kind == "expire-span":
        return ExpireSpanMemory(input_dim, **merged)
    if kind == "window":
        return WindowMemory(input_dim, **merged)
    if kind == "full":
        return FullMemory(input_dim, **merged)
    return RecurrentMemory(input_dim, cell=kind, **merged)
