"""Lethe's learners: A2C and PPO around a memory core, on batched environments.

``train(TrainConfig(...))`` runs a whole training run (the CLI in ``train_rl.py`` wraps it).
"""

from agents.config import AlgoConfig, ConfigError, MemoryConfig, TrainConfig
from agents.trainer import TrainingError, train

__all__ = ["AlgoConfig", "ConfigError", "MemoryConfig", "TrainConfig", "TrainingError", "train"]
