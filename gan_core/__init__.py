"""gan_core — pure-PyTorch GANs for small-data scenarios.

Models (``seed-dcgan`` baseline, ``dcgan``), a small-data recipe (spectral norm,
hinge loss, R1, EMA of G, DiffAugment, self-supervised rotation loss), one resumable,
deterministic trainer, safe checkpoints, sampling, and offline metrics
(:mod:`gan_core.quality`, :mod:`gan_core.fid`,
:mod:`gan_core.manifold`, :mod:`gan_core.swd`). Never imports orchestration libraries.

Names are loaded on first use, so ``gan_core.config`` (pydantic only) can be imported
without paying for torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_generator": "checkpoint",
    "save_generator": "checkpoint",
    "ConfigError": "config",
    "GANConfig": "config",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "build_models": "models",
    "DivergenceError": "trainer",
    "TrainEvent": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gan_core' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
