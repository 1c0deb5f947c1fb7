"""The agent's network: observation encoder -> memory core -> actor and critic heads.

The policy never knows which memory core it drives: every core has the same `step` (used
while collecting a rollout) and `sequence` (used in the update, with gradients), and the two
agree, so PPO's first-epoch ratio is exactly 1. ``memory="none"`` gives a feed-forward policy
with an empty state, through the same interface.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from agents.config import MemoryConfig
from agents.vec import ObsDict

#: uint8 images up to this side are read as symbolic grids (MiniGrid's encoding): each cell's
#: channel values are categories, so they are embedded rather than scaled.
MAX_GRID_SIDE = 16
GRID_EMBED_DIM = 8


class GridEncoder(nn.Module):
    """Symbolic grid ``[..., H, W, C]`` uint8 (object, colour, state) -> embedding per cell."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        height, width, channels = space.shape
        self.embed = nn.Embedding(256 * channels, GRID_EMBED_DIM)
        self.register_buffer("offsets", torch.arange(channels) * 256, persistent=False)
        self.output_dim = height * width * channels * GRID_EMBED_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., H, W, C] -> [..., out]
        lead = x.shape[:-3]
        codes = x.long() + self.offsets  # [..., H, W, C]
        return self.embed(codes).reshape(*lead, self.output_dim)


class PixelEncoder(nn.Module):
    """A small CNN for larger uint8 images ``[..., H, W, C]``."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        height, width, channels = space.shape
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            self.output_dim = self.net(torch.zeros(1, channels, height, width)).shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        images = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        return self.net(images).reshape(*lead, self.output_dim)


class VectorEncoder(nn.Module):
    """Any other ``Box``: flattened floats."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        self.event_dims = len(space.shape)
        self.output_dim = int(np.prod(space.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(start_dim=x.dim() - self.event_dims)


class DiscreteEncoder(nn.Module):
    """A ``Discrete`` observation (or MiniGrid's direction): an embedding."""

    def __init__(self, space: spaces.Discrete) -> None:
        super().__init__()
        self.start = int(space.start)
        self.embed = nn.Embedding(int(space.n), 16)
        self.output_dim = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x.long() - self.start)


def encoder_for(space: spaces.Space) -> nn.Module:
    """The encoder that suits one observation sub-space."""
    if isinstance(space, spaces.Discrete):
        return DiscreteEncoder(space)
    if (
        space.dtype == np.uint8
        and len(space.shape) == 3
        and max(space.shape[:2]) <= MAX_GRID_SIDE
        and space.shape[2] <= 4
    ):
        return GridEncoder(space)
    if space.dtype == np.uint8 and len(space.shape) == 3:
        return PixelEncoder(space)
    return VectorEncoder(space)


class ObservationEncoder(nn.Module):
    """One encoder per observation key, concatenated and projected to the memory's width."""

    def __init__(self, obs_spaces: dict[str, spaces.Space], width: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({k: encoder_for(s) for k, s in obs_spaces.items()})
        total = sum(e.output_dim for e in self.encoders.values())
        self.project = nn.Sequential(nn.Linear(total, width), nn.ReLU())

    def forward(self, obs: ObsDict) -> torch.Tensor:  # obs[k]: [..., *shape_k] -> [..., width]
        features = [encoder(obs[key]) for key, encoder in self.encoders.items()]
        return self.project(torch.cat(features, dim=-1))


def memory_options(config: MemoryConfig) -> dict[str, Any]:
    """The `memory.make_memory` options of the configured kind."""
    if config.kind in ("gru", "lstm"):
        return {"hidden_size": config.width, "num_layers": config.layers}
    common = {"d_model": config.width, "n_layers": config.layers, "n_heads": config.heads}
    if config.kind == "expire-span":
        return {
            **common,
            "capacity": config.capacity,
            "max_span": config.span_limit,
            "ramp": config.ramp,
            "span_loss_coef": config.alpha,
            "init_span_fraction": config.span_init,
            "pre_div": config.span_pre_div,
            "use_loss_coef": config.span_use_coef,
            "use_margin": config.span_use_margin,
        }
    if config.kind == "window":
        return {**common, "window": config.window}
    return {**common, "max_memory": config.max_memory}


def _trunk_step(
    encoder: nn.Module, memory: nn.Module | None, obs: ObsDict, state: Any, start: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """Encoder then memory core (if any), one step: features ``[N, width]``, next state."""
    features = encoder(obs)
    return (features, state) if memory is None else memory.step(features, state, start)


def _trunk_sequence(
    encoder: nn.Module, memory: nn.Module | None, obs: ObsDict, state: Any, starts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder then memory core (if any), a chunk: features ``[T, N, width]``, aux loss."""
    features = encoder(obs)
    if memory is None:
        return features, features.new_zeros(())
    features, aux, _ = memory.sequence(features, state, starts, return_state=False)
    return features, aux


class ActorCritic(nn.Module):
    """Encoder, memory core (or none) and the two heads.

    With ``config.critic == "separate"`` the critic has its own encoder and memory core (same
    kind and options): the state is then the pair ``(policy's, critic's)``, and
    `policy_state` picks the policy's out of it (what retention logging reads).
    """

    def __init__(
        self, obs_spaces: dict[str, spaces.Space], num_actions: int, config: MemoryConfig
    ) -> None:
        super().__init__()
        from memory import make_memory

        def trunk() -> tuple[nn.Module, nn.Module | None]:
            encoder = ObservationEncoder(obs_spaces, config.width)
            if config.kind == "none":
                return encoder, None
            return encoder, make_memory(config.kind, config.width, **memory_options(config))

        self.encoder, self.memory = trunk()
        self.separate_critic = config.critic == "separate"
        if self.separate_critic:
            self.critic_encoder, self.critic_memory = trunk()
        features = config.width if self.memory is None else self.memory.output_dim
        self.actor = nn.Linear(features, num_actions)
        self.critic = nn.Linear(features, 1)
        # Small initial logits: the first policy is near uniform (as in the PPO reference code).
        nn.init.orthogonal_(self.actor.weight, gain=0.01)
        nn.init.zeros_(self.actor.bias)
        nn.init.orthogonal_(self.critic.weight, gain=1.0)
        nn.init.zeros_(self.critic.bias)

    @property
    def reads_previous_action_reward(self) -> bool:
        """Whether the policy was built for `envs.wrappers.PREVIOUS_KEYS` observations (an env
        made for it needs ``previous_action_reward=True``)."""
        return "prev_action" in self.encoder.encoders

    def initial_state(self, batch_size: int, device: torch.device) -> Any:
        """The memory state of `batch_size` fresh envs (``()`` without a memory core)."""
        if self.memory is None:
            return ()
        state = self.memory.initial_state(batch_size, device)
        if self.separate_critic:
            return state, self.critic_memory.initial_state(batch_size, device)
        return state

    def policy_state(self, state: Any) -> Any:
        """The policy's memory state out of `step`'s state (the critic's left out)."""
        return self._split(state)[0]

    def _split(self, state: Any) -> tuple[Any, Any]:
        """``(policy's state, critic's state)``; the critic's is None when it shares."""
        if self.separate_critic and self.memory is not None:
            return state
        return state, None

    def _join(self, state: Any, critic_state: Any) -> Any:
        return state if critic_state is None else (state, critic_state)

    def step(
        self, obs: ObsDict, state: Any, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One step for every env: logits ``[N, A]``, value ``[N]``, the next memory state."""
        state, critic_state = self._split(state)
        features, state = _trunk_step(self.encoder, self.memory, obs, state, episode_start)
        critic_features = features
        if self.separate_critic:
            critic_features, critic_state = _trunk_step(
                self.critic_encoder, self.critic_memory, obs, critic_state, episode_start
            )
        value = self.critic(critic_features).squeeze(-1)
        return self.actor(features), value, self._join(state, critic_state)

    def sequence(
        self, obs: ObsDict, state: Any, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A chunk ``[T, N, ...]`` at once: logits ``[T, N, A]``, values ``[T, N]``, aux loss
        (both memories' when the critic has its own)."""
        state, critic_state = self._split(state)
        features, aux = _trunk_sequence(self.encoder, self.memory, obs, state, episode_starts)
        critic_features = features
        if self.separate_critic:
            critic_features, critic_aux = _trunk_sequence(
                self.critic_encoder, self.critic_memory, obs, critic_state, episode_starts
            )
            aux = aux + critic_aux
        return self.actor(features), self.critic(critic_features).squeeze(-1), aux

    def forward(
        self, obs: ObsDict, state: Any, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sequence`: the update calls the model, so that a DDP wrapper sees the pass.

        DistributedDataParallel only hooks ``forward``; rollouts call `step` on the bare module.
        """
        return self.sequence(obs, state, episode_starts)
