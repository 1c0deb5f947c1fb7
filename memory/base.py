"""The interface every memory core implements, and helpers that work on any core's state.

A state is a typed structure (a ``NamedTuple`` of tensors, possibly nested) whose every tensor
has the env (batch) dimension first. The helpers below walk it with ``torch.utils._pytree``,
so they work for every core without knowing its fields.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

State = Any  # a NamedTuple of tensors, env dimension first
StateT = TypeVar("StateT")

__all__ = [
    "Memory",
    "State",
    "detach_state",
    "index_state",
    "register_state_type",
    "state_to",
]


def register_state_type(cls: type) -> type:
    """Class decorator: allow ``torch.load`` (``weights_only=True``, the default) to read ``cls``.

    Every core's State class is registered, so a checkpoint holding a memory state loads
    without ``weights_only=False``.
    """
    torch.serialization.add_safe_globals([cls])
    return cls


def index_state(state: StateT, env_idx: Tensor | slice | int | list[int]) -> StateT:
    """Select envs from a state: ``env_idx`` indexes dim 0 of every tensor.

    An integer index keeps the env dimension (``[i]`` becomes ``[i:i+1]``) so the result is
    still a valid state for a batch of one.
    """
    if isinstance(env_idx, int):
        env_idx = slice(env_idx, env_idx + 1)
    return pytree.tree_map(lambda leaf: leaf[env_idx], state)


def state_to(state: StateT, device: torch.device | str) -> StateT:
    """Move every tensor of a state to ``device``."""
    return pytree.tree_map(lambda leaf: leaf.to(device), state)


def detach_state(state: StateT) -> StateT:
    """Cut the autograd graph behind a state (truncated backpropagation between chunks)."""
    return pytree.tree_map(lambda leaf: leaf.detach(), state)


class Memory(nn.Module, ABC):
    """A recurrent core: ``step`` for rollouts, ``sequence`` for updates, same outputs.

    Subclasses set ``output_dim``. ``sequence(x, s, starts)`` must equal ``T`` calls of
    ``step`` from ``s`` (tested to float tolerance in float64), in train and eval mode, so
    that the first PPO epoch has ratio exactly 1. Memories of an env whose episode starts
    are cleared *before* that step's input is processed.
    """

    output_dim: int

    @abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """An empty state for ``batch_size`` envs (parameter dtype, on ``device``)."""

    @abstractmethod
    def step(self, x: Tensor, state: State, episode_start: Tensor) -> tuple[Tensor, State]:
        """One step for every env: ``x [B, D]``, ``episode_start [B] bool`` -> ``y [B, out]``."""

    @abstractmethod
    def sequence(
        self, x: Tensor, state: State, episode_starts: Tensor, *, return_state: bool = True
    ) -> tuple[Tensor, Tensor, State | None]:
        """A chunk: ``x [T, B, D]``, ``episode_starts [T, B]`` -> ``(y [T, B, out], aux, state)``.

        ``aux`` is a scalar tensor to add to the loss (zero for cores without one). With
        ``return_state=False`` a core may skip building the state after the chunk (an update
        does not need it) and return ``None`` in its place.
        """

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _param_device(self) -> torch.device:
        return next(self.parameters()).device
