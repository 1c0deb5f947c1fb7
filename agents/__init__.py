"""Lethe's learners: A2C and PPO around a memory core, on batched environments.

``train(TrainConfig(...))`` runs a whole training run (the CLI in ``train_rl.py`` wraps it).
"""

from typing import TYPE_CHECKING, Any

from agents.config import AlgoConfig, ConfigError, MemoryConfig, TrainConfig

if TYPE_CHECKING:
    from agents.trainer import TrainingError, train

__all__ = ["AlgoConfig", "ConfigError", "MemoryConfig", "TrainConfig", "TrainingError", "train"]


def __getattr__(name: str) -> Any:
    """`train` and `TrainingError` import torch: loaded on first use, so that the CLI's
    ``--help`` and its one-line errors for bad options come without that wait."""
    if name in ("train", "TrainingError"):
        from agents import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
