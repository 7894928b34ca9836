"""Fréchet (FID) and kernel (KID) distances between real and generated images, in the
feature space of any extractor.

Computed by torchmetrics (``FrechetInceptionDistance`` / ``KernelInceptionDistance``
with ``feature=<nn.Module>``) through :class:`gan_core.features.FeatureAdapter`, which
gives torchmetrics ``num_features`` (so it does not probe the module with a random
uint8 299x299 image), validates the images, runs the extractor in eval mode without
gradients and in batches, and returns float64 features. ``*_from_features`` take
already-extracted (N, d) features instead of images.

The extractor is pluggable: :class:`gan_core.features.SSLFeatureNet` (offline
default, trained on the scenario's real images), :class:`gan_core.features.PixelFeatures`
or the Inception-v3 of :mod:`gan_core.inception` loaded from a local file. Numbers from
different extractors, resize filters or sample counts are not comparable; report the
real-vs-held-out floor next to a score (:func:`gan_core.quality.evaluate_samples`).
Results are plain Python floats.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn

from .features import FeatureAdapter
from .images import as_float_images, batches, check_features, check_pair

__all__ = ["fid", "kid", "fid_from_features", "kid_from_features", "kid_subset_size"]


class _PassThrough(nn.Module):
    """Identity 'feature extractor' for already-extracted (N, d) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f.double()


def _new_fid(feature: nn.Module):
    from torchmetrics.image.fid import FrechetInceptionDistance

    # normalize=True: float inputs (only used by the probe, which num_features avoids).
    return FrechetInceptionDistance(feature=feature, normalize=True, reset_real_features=True)


def _new_kid(feature: nn.Module, subsets: int, subset_size: int):
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # "will save all extracted features in buffer"
        warnings.simplefilter("ignore", UserWarning)
        return KernelInceptionDistance(feature=feature, subsets=subsets, subset_size=subset_size, normalize=True)


def _fid_value(metric) -> float:
    v = float(metric.compute())
    if not math.isfinite(v):
        raise FloatingPointError(f"FID came out as {v}; features may be degenerate (constant images?)")
    return max(v, 0.0)  # tiny negatives are round-off (FID >= 0 by definition)


def kid_subset_size(n_real: int, n_fake: int, subset_size: int | None) -> int:
    """KID's subset size: ``subset_size``, or ``min(n_real, n_fake, 1000)`` when None;
    ``ValueError`` unless it is an int in [2, min(n_real, n_fake)]."""
    size = min(n_real, n_fake, 1000) if subset_size is None else subset_size
    if not isinstance(size, int) or size < 2 or size > min(n_real, n_fake):
        raise ValueError(
            f"KID subset_size must be an int in [2, min(n_real, n_fake)] = [2, {min(n_real, n_fake)}], "
            f"got {size!r}; KID needs at least 2 real and 2 fake samples"
        )
    return size


def _kid_value(metric, seed: int) -> tuple[float, float]:
    # torchmetrics draws subsets with the global RNG (torch.randperm); fork it so
    # the result is deterministic and the caller's RNG stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        mean, std = metric.compute()
    return float(mean), float(std)


def _check_feature_pair(real_feats: Any, fake_feats: Any) -> tuple[torch.Tensor, torch.Tensor]:
    real_feats = check_features(real_feats, "real_feats")
    fake_feats = check_features(fake_feats, "fake_feats")
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(
            f"feature sizes differ: real_feats d={real_feats.shape[1]}, fake_feats d={fake_feats.shape[1]}"
        )
    return real_feats, fake_feats


def fid(real: Any, fake: Any, *, extractor: nn.Module, batch_size: int = 256) -> float:
    """Fréchet distance between ``real`` and ``fake`` images in ``extractor``'s feature space.

    Computed by torchmetrics' ``FrechetInceptionDistance`` with ``feature=FeatureAdapter(extractor)``.
    Needs >= 2 images per set; sets of equal (C, H, W).
    """
    real = as_float_images(real, name="real")
    fake = as_float_images(fake, name="fake")
    check_pair(real, fake, "real", "fake")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got real={real.shape[0]}, fake={fake.shape[0]}")
    metric = _new_fid(FeatureAdapter(extractor, example=real, batch_size=batch_size))
    for b in batches(real, batch_size):
        metric.update(b, real=True)
    for b in batches(fake, batch_size):
        metric.update(b, real=False)
    return _fid_value(metric)


def kid(
    real: Any,
    fake: Any,
    *,
    extractor: nn.Module,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[float, float]:
    """Kernel distance (mean, std over ``subsets``) via torchmetrics' ``KernelInceptionDistance``.

    ``subset_size`` defaults to ``min(n_real, n_fake, 1000)``. Deterministic given ``seed``.
    """
    real = as_float_images(real, name="real")
    fake = as_float_images(fake, name="fake")
    check_pair(real, fake, "real", "fake")
    size = kid_subset_size(real.shape[0], fake.shape[0], subset_size)
    metric = _new_kid(FeatureAdapter(extractor, example=real, batch_size=batch_size), subsets, size)
    for b in batches(real, batch_size):
        metric.update(b, real=True)
    for b in batches(fake, batch_size):
        metric.update(b, real=False)
    return _kid_value(metric, seed)


def fid_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """FID (torchmetrics) from already-extracted (N, d) features."""
    real_feats, fake_feats = _check_feature_pair(real_feats, fake_feats)
    if real_feats.shape[0] < 2 or fake_feats.shape[0] < 2:
        raise ValueError(
            f"FID needs at least 2 samples per set, got real={real_feats.shape[0]}, fake={fake_feats.shape[0]}"
        )
    metric = _new_fid(_PassThrough(real_feats.shape[1]))
    metric.update(real_feats, real=True)
    metric.update(fake_feats, real=False)
    return _fid_value(metric)


def kid_from_features(
    real_feats: torch.Tensor,
    fake_feats: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std) (torchmetrics) from already-extracted (N, d) features."""
    real_feats, fake_feats = _check_feature_pair(real_feats, fake_feats)
    size = kid_subset_size(real_feats.shape[0], fake_feats.shape[0], subset_size)
    metric = _new_kid(_PassThrough(real_feats.shape[1]), subsets, size)
    metric.update(real_feats, real=True)
    metric.update(fake_feats, real=False)
    return _kid_value(metric, seed)
