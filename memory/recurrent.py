"""GRU and LSTM cores: the classic recurrent baseline.

The hidden state is zeroed for envs whose episode starts, before the step's input. In
``sequence`` the chunk is cut at the steps where any env starts an episode; each piece is one
``nn.GRU``/``nn.LSTM`` call over time (a loop over pieces, not over steps, unless starts are
everywhere: recurrence is sequential anyway).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from memory.base import Memory, register_state_type


@register_state_type
class GRUState(NamedTuple):
    """``h [B, num_layers, H]``: the GRU hidden of every layer."""

    h: Tensor


@register_state_type
class LSTMState(NamedTuple):
    """``h``, ``c [B, num_layers, H]``: the LSTM hidden and cell of every layer."""

    h: Tensor
    c: Tensor


class RecurrentMemory(Memory):
    """``nn.GRU`` or ``nn.LSTM`` with per-env resets at episode starts."""

    def __init__(self, input_dim: int, *, cell: str, hidden_size: int = 128, num_layers: int = 1):
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_dim = hidden_size
        rnn_class = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_class(input_dim, hidden_size, num_layers=num_layers)

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None
    ) -> GRUState | LSTMState:
        """Zero hidden (and cell) for ``batch_size`` envs."""
        device = self._param_device() if device is None else device
        zeros = torch.zeros(
            batch_size, self.num_layers, self.hidden_size, dtype=self._param_dtype(), device=device
        )
        return GRUState(zeros) if self.cell == "gru" else LSTMState(zeros, zeros.clone())

    def _run(
        self, x: Tensor, state: GRUState | LSTMState, start: Tensor
    ) -> tuple[Tensor, GRUState | LSTMState]:
        """Reset envs where ``start [B]``, then run ``x [T, B, D]`` without further resets."""
        keep = (~start.to(torch.bool)).to(x.dtype)[:, None, None]  # [B, 1, 1]
        # nn.GRU wants [layers, B, H]; the state keeps the env dimension first.
        carried = tuple((part * keep).transpose(0, 1).contiguous() for part in state)
        y, out = self.rnn(x, carried[0] if self.cell == "gru" else carried)
        out = (out,) if self.cell == "gru" else out
        parts = tuple(part.transpose(0, 1) for part in out)
        return y, type(state)(*parts)

    def step(
        self, x: Tensor, state: GRUState | LSTMState, episode_start: Tensor
    ) -> tuple[Tensor, GRUState | LSTMState]:
        """One step: ``x [B, D]`` -> ``y [B, H]``."""
        y, state = self._run(x[None], state, episode_start)
        return y[0], state

    def sequence(
        self,
        x: Tensor,
        state: GRUState | LSTMState,
        episode_starts: Tensor,
        *,
        return_state: bool = True,
    ) -> tuple[Tensor, Tensor, GRUState | LSTMState]:
        """A chunk ``x [T, B, D]``; no auxiliary loss (returns a zero scalar).

        The state after the chunk comes for free, so it is returned whatever ``return_state``.
        """
        steps = x.shape[0]
        any_start = episode_starts[1:].any(dim=1).nonzero().flatten() + 1
        bounds = [0, *any_start.tolist(), steps]
        outputs = []
        for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
            y, state = self._run(x[begin:end], state, episode_starts[begin])
            outputs.append(y)
        return torch.cat(outputs, 0), x.new_zeros(()), state
