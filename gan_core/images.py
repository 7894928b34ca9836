"""Checking and converting the inputs of every metric: image batches and feature matrices.

Conventions (all of gan_core's metrics)
---------------------------------------
* Images are float tensors (N, C, H, W) in [-1, 1], C in {1, 3}; uint8 tensors
  in [0, 255] (and numpy arrays of either) are accepted and converted
  (:func:`as_float_images`).
* Features are float (N, d) matrices (:func:`check_features`).
* Errors name the argument and say how to fix the input.

Imports torch and numpy only; no other gan_core module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["as_float_images", "check_pair", "check_features", "batches"]

_RANGE_TOL = 1e-3


def as_float_images(x: Any, *, name: str = "images", channels: int | None = None) -> torch.Tensor:
    """Validate an image batch and return it as float32 (N, C, H, W) in [-1, 1].

    Accepts torch tensors or numpy arrays; uint8 in [0, 255] is converted with
    ``x.float() / 127.5 - 1``; float input must already be in [-1, 1]. ``channels``
    (optional) is the channel count the caller requires. Errors name ``name``.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (a single image? use x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}{hint}")
    c = x.shape[1]
    if c not in (1, 3):
        hint = " (channels-last? use x.permute(0, 3, 1, 2))" if x.shape[-1] in (1, 3) else ""
        raise ValueError(f"{name}: expected 1 or 3 channels in dim 1, got {c} (shape {tuple(x.shape)}){hint}")
    if channels is not None and c != channels:
        raise ValueError(
            f"{name}: expected {channels} channel(s), got {c} (shape {tuple(x.shape)}); "
            "use images of the scenario's channel count"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(x.shape)})")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name}: expected float images in [-1, 1] or uint8 in [0, 255], got dtype {x.dtype}; "
            "convert with x.to(torch.uint8) or x.float() / 127.5 - 1"
        )
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"{name}: float images must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "for [0, 1] images use x * 2 - 1, for [0, 255] floats use x / 127.5 - 1, "
            "or clamp generator output with x.clamp(-1, 1)"
        )
    return x


def check_pair(real: torch.Tensor, fake: torch.Tensor, real_name: str, fake_name: str) -> None:
    """Raise ``ValueError`` unless two image batches have the same (C, H, W)."""
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"{fake_name} has image shape (C, H, W) = {tuple(fake.shape[1:])} but {real_name} has "
            f"{tuple(real.shape[1:])}; compare images of the same channel count and size"
        )


def check_features(f: Any, name: str) -> torch.Tensor:
    """Return ``f`` if it is a finite float (N, d) feature matrix, else raise naming ``name``."""
    if not torch.is_tensor(f) or f.dim() != 2:
        shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
        raise ValueError(f"{name}: expected a 2-D feature matrix (N, d), got {shape}")
    if not torch.is_floating_point(f):
        raise TypeError(f"{name}: expected float features, got dtype {f.dtype}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return f


def batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of at most ``batch_size`` rows of ``x``."""
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]
