"""gan_core — pure-PyTorch GANs for small-data scenarios.

Models (``seed-dcgan`` baseline, ``dcgan``), a small-data recipe (spectral norm,
hinge loss, R1, EMA of G, DiffAugment, self-supervised rotation loss), one resumable,
deterministic trainer, safe checkpoints, sampling, and offline metrics
(:mod:`gan_core.metrics`, imported on demand). Never imports orchestration libraries.
"""

from .checkpoint import CheckpointError, load_generator, save_generator
from .config import ConfigError, GANConfig, ModelConfig, TrainConfig, load_config
from .models import build_models
from .trainer import DivergenceError, TrainEvent, Trainer, TrainResult, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DivergenceError",
    "GANConfig",
    "ModelConfig",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "Trainer",
    "build_models",
    "load_config",
    "load_generator",
    "save_generator",
    "train",
]
