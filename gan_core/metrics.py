"""Sample-quality metrics for small-data GANs: FID, KID, precision/recall,
memorization audit and a training-free sliced Wasserstein distance.

Conventions
-----------
* Images are float tensors (N, C, H, W) in [-1, 1], C in {1, 3}; uint8
  tensors in [0, 255] are accepted and converted (:func:`as_float_images`).
* The feature extractor is pluggable: any ``nn.Module`` mapping such images to
  (N, d) features -- :class:`gan_core.features.SSLFeatureNet` (offline default,
  trained on the scenario's real images), :class:`gan_core.features.PixelFeatures`
  or the Inception-v3 of :mod:`gan_core.inception` loaded from a local file.
* FID and KID are computed by torchmetrics (``FrechetInceptionDistance`` /
  ``KernelInceptionDistance`` with ``feature=<nn.Module>``) through the thin
  :class:`FeatureAdapter`, which gives torchmetrics ``num_features`` (so it does
  not probe the module with a random uint8 299x299 image), converts/validates
  inputs, runs the extractor in eval mode without gradients and in batches, and
  returns float64 features.
* Results are plain Python floats/ints (JSON-ready for asset metadata).

Numbers from different extractors, resize filters or sample counts are not
comparable. :func:`evaluate_samples` therefore fixes the counts, reports them,
and reports the floor (real train vs real held-out) next to every score.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import PixelFeatures

__all__ = [
    "as_float_images",
    "FeatureAdapter",
    "extract_features",
    "fid",
    "kid",
    "fid_from_features",
    "kid_from_features",
    "precision_recall",
    "memorization_audit",
    "evaluate_samples",
    "swd",
]

_RANGE_TOL = 1e-3
_CDIST_MODE = "donot_use_mm_for_euclid_dist"  # exact zeros for identical vectors


# --------------------------------------------------------------------------- #
# Input handling
# --------------------------------------------------------------------------- #
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
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"{fake_name} has image shape (C, H, W) = {tuple(fake.shape[1:])} but {real_name} has "
            f"{tuple(real.shape[1:])}; compare images of the same channel count and size"
        )


def _batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


def _check_feats(f: Any, name: str) -> torch.Tensor:
    if not torch.is_tensor(f) or f.dim() != 2:
        shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
        raise ValueError(f"{name}: expected a 2-D feature matrix (N, d), got {shape}")
    if not torch.is_floating_point(f):
        raise TypeError(f"{name}: expected float features, got dtype {f.dtype}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return f


def _describe(extractor: nn.Module) -> str:
    cfg = getattr(extractor, "config", None)
    if callable(cfg):
        try:
            return f"{type(extractor).__name__}({', '.join(f'{k}={v}' for k, v in cfg().items())})"
        except Exception:  # pragma: no cover - description only
            pass
    return type(extractor).__name__


# --------------------------------------------------------------------------- #
# Feature extraction / torchmetrics adapter
# --------------------------------------------------------------------------- #
class FeatureAdapter(nn.Module):
    """Wrap a feature extractor for torchmetrics' ``feature=<nn.Module>``.

    torchmetrics (1.9) calls ``feature(imgs)`` on whatever is passed to
    ``update`` and, unless the module has an int ``num_features``, probes it at
    construction with ``torch.rand(1, *input_img_size)`` (or a uint8 image when
    ``normalize=False``; default size 3x299x299) -- which would fail for a
    1-channel 16x16 extractor. This adapter:

    * exposes ``num_features`` (the extractor's own int ``num_features``
      attribute, else measured by running it once on ``example[:2]``);
    * validates/converts the images (:func:`as_float_images`, uint8 accepted);
    * runs the extractor in eval mode under ``torch.no_grad`` in batches of
      ``batch_size`` and restores its previous train/eval mode;
    * returns (N, d) float64 features (FID statistics are accumulated in
      float64 anyway; KID's polynomial kernel then runs in float64 as well).
    """

    def __init__(
        self,
        extractor: nn.Module,
        *,
        example: torch.Tensor | None = None,
        batch_size: int = 256,
        channels: int | None = None,
    ):
        super().__init__()
        if not isinstance(extractor, nn.Module):
            raise TypeError(f"extractor must be a torch.nn.Module, got {type(extractor).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.extractor = extractor
        self.batch_size = batch_size
        self.channels = channels
        nf = getattr(extractor, "num_features", None)
        if isinstance(nf, torch.Tensor):
            nf = int(nf.item())
        if not isinstance(nf, int):
            if example is None:
                raise ValueError(
                    f"extractor {type(extractor).__name__} has no int `num_features` attribute; "
                    "pass example=<a batch of images> so the feature size can be measured"
                )
            nf = int(self.forward(example[:2]).shape[-1])
        self.num_features = nf

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        x = as_float_images(imgs, name="images", channels=self.channels)
        was_training = self.extractor.training
        self.extractor.eval()
        try:
            with torch.no_grad():
                outs = [self.extractor(b) for b in _batches(x, self.batch_size)]
        finally:
            self.extractor.train(was_training)
        f = torch.cat(outs, 0)
        if f.dim() != 2 or f.shape[0] != x.shape[0]:
            raise ValueError(
                f"extractor {type(self.extractor).__name__} must return (N, d) features; "
                f"for {x.shape[0]} images it returned shape {tuple(f.shape)}"
            )
        return f.double()


class _PassThrough(nn.Module):
    """Identity 'feature extractor' for already-extracted (N, d) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f.double()


def extract_features(images: Any, extractor: nn.Module, *, batch_size: int = 256, name: str = "images") -> torch.Tensor:
    """(N, d) float64 features of ``images`` (validated, batched, no grad, eval mode)."""
    x = as_float_images(images, name=name)
    return FeatureAdapter(extractor, example=x, batch_size=batch_size)(x)


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


def _kid_subset_size(n_real: int, n_fake: int, subset_size: int | None) -> int:
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
    for b in _batches(real, batch_size):
        metric.update(b, real=True)
    for b in _batches(fake, batch_size):
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
    size = _kid_subset_size(real.shape[0], fake.shape[0], subset_size)
    metric = _new_kid(FeatureAdapter(extractor, example=real, batch_size=batch_size), subsets, size)
    for b in _batches(real, batch_size):
        metric.update(b, real=True)
    for b in _batches(fake, batch_size):
        metric.update(b, real=False)
    return _kid_value(metric, seed)


def fid_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """FID (torchmetrics) from already-extracted (N, d) features."""
    real_feats = _check_feats(real_feats, "real_feats")
    fake_feats = _check_feats(fake_feats, "fake_feats")
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(
            f"feature sizes differ: real_feats d={real_feats.shape[1]}, fake_feats d={fake_feats.shape[1]}"
        )
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
    real_feats = _check_feats(real_feats, "real_feats")
    fake_feats = _check_feats(fake_feats, "fake_feats")
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(
            f"feature sizes differ: real_feats d={real_feats.shape[1]}, fake_feats d={fake_feats.shape[1]}"
        )
    size = _kid_subset_size(real_feats.shape[0], fake_feats.shape[0], subset_size)
    metric = _new_kid(_PassThrough(real_feats.shape[1]), subsets, size)
    metric.update(real_feats, real=True)
    metric.update(fake_feats, real=False)
    return _kid_value(metric, seed)


# --------------------------------------------------------------------------- #
# Nearest neighbours
# --------------------------------------------------------------------------- #
def _kth_nn_radius(feats: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (self is at distance 0)."""
    out = []
    for i in range(0, feats.shape[0], chunk_size):
        d = torch.cdist(feats[i : i + chunk_size], feats, compute_mode=_CDIST_MODE)
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _within_any_ball(query: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, chunk_size: int) -> torch.Tensor:
    out = []
    for i in range(0, query.shape[0], chunk_size):
        d = torch.cdist(query[i : i + chunk_size], centers, compute_mode=_CDIST_MODE)
        out.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(out)


def nearest_k(
    query: torch.Tensor, ref: torch.Tensor, k: int, chunk_size: int, *, leave_one_out: bool = False, views: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (Nq, k): every query row's k nearest ref rows, nearest first.
    ``views`` > 1: ``ref`` holds that many blocks of the same N images (e.g. mirrored), and
    an image's distance is its nearest view's."""
    n_ref = ref.shape[0] // views
    dists, idxs = [], []
    for i in range(0, query.shape[0], chunk_size):
        d = torch.cdist(query[i : i + chunk_size], ref, compute_mode=_CDIST_MODE)
        d = d.view(d.shape[0], views, n_ref).amin(dim=1)
        if leave_one_out:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        v, j = d.topk(k, dim=1, largest=False)
        dists.append(v)
        idxs.append(j)
    return torch.cat(dists), torch.cat(idxs)


def precision_recall(
    real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3, *, chunk_size: int = 1024
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) in feature space.

    Each real feature gets a ball whose radius is the distance to its k-th
    nearest real neighbour; precision is the share of fake features inside at
    least one real ball (fidelity). Recall is the same with roles swapped: the
    share of real features inside at least one fake ball (coverage/diversity).
    Returns ``{"precision": float, "recall": float, "k": k}``.
    """
    real_feats = _check_feats(real_feats, "real_feats").float()
    fake_feats = _check_feats(fake_feats, "fake_feats").float()
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(
            f"feature sizes differ: real_feats d={real_feats.shape[1]}, fake_feats d={fake_feats.shape[1]}"
        )
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    for name, f in (("real_feats", real_feats), ("fake_feats", fake_feats)):
        if f.shape[0] < k + 1:
            raise ValueError(f"{name}: precision/recall with k={k} needs at least {k + 1} samples, got {f.shape[0]}")
    r_real = _kth_nn_radius(real_feats, k, chunk_size)
    r_fake = _kth_nn_radius(fake_feats, k, chunk_size)
    precision = _within_any_ball(fake_feats, real_feats, r_real, chunk_size).float().mean()
    recall = _within_any_ball(real_feats, fake_feats, r_fake, chunk_size).float().mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


def memorization_audit(
    train_images: Any,
    samples: Any,
    *,
    extractor: nn.Module | None = None,
    quantile: float = 0.05,
    neighbours: int = 5,
    max_relative: float = 0.5,
    n_closest: int = 8,
    chunk_size: int = 1024,
    symmetries: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Does the generator copy its training images?

    For each generated sample, the distance to its nearest training image (d1) and
    the mean distance to its next ``neighbours - 1`` training images; their ratio
    (``relative``) is ~1 for an image that is no closer to one training image than
    to the others and ~0 for a copy of one. The training set's own leave-one-out
    values give the scale of "two genuinely different images of this data set".

    A sample is a **near-copy** when both hold: d1 is at or below the ``quantile``
    (default 5th percentile) of the training set's own d1, *and* its ``relative``
    is at or below the same quantile of the training set's own ``relative`` and at
    most ``max_relative`` (0.5: twice as close to one image as to the next ones). The
    second condition keeps blurry, averaged samples (early training, mode
    collapse), which sit close to many training images at once, from counting as
    copies — they are a quality problem, not a privacy one (after the
    "closer to one than to the rest" test of Carlini et al., 2023). Fresh,
    held-out real images get a share of at most about ``quantile``; a memorizing
    generator gets a share close to 1.

    Default space: pixels (:class:`~gan_core.features.PixelFeatures`, downsampled
    to <= 32x32; distances are RMS pixel differences in [-1, 1] units).

    ``symmetries`` (:mod:`gan_core.symmetry`): the flips and turns the data is declared
    invariant to; a mirrored copy of a training image is then a copy too (distances
    are to the nearest flipped or turned view of each training image).

    **For medical scenarios this is a privacy check**: a generator that
    reproduces a training scan (near-copy) can leak patient data even when only
    samples are shared. Inspect the ``closest`` pairs before releasing samples
    or a model; the share alone does not prove the absence of leakage.

    Returns (plain Python types): ``near_copy_share``, ``near_copy_count``,
    ``exact_copy_count`` (distance <= 1e-6), ``threshold``,
    ``relative_threshold``, ``quantile``, ``neighbours``, ``median_sample_nn``,
    ``median_train_nn``, ``nn_ratio`` (sample / train median; well below 1
    suggests memorization), ``median_sample_relative``, ``closest`` (the
    ``n_closest`` samples nearest to the training set: ``sample_index``,
    ``train_index``, ``distance``, ``relative``), ``n_train``, ``n_samples``,
    ``extractor``.
    """
    train = as_float_images(train_images, name="train_images")
    samp = as_float_images(samples, name="samples")
    check_pair(train, samp, "train_images", "samples")
    if train.shape[0] < 3:
        raise ValueError(f"train_images: the audit needs at least 3 training images, got {train.shape[0]}")
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    if not isinstance(neighbours, int) or neighbours < 2:
        raise ValueError(f"neighbours must be an int >= 2, got {neighbours!r}")
    k = min(neighbours, train.shape[0] - 1)
    if extractor is None:
        extractor = PixelFeatures()
    from .symmetry import group

    views = group(symmetries)
    f_train = extract_features(train, extractor, name="train_images").float()
    f_views = torch.cat([f_train] + [extract_features(g(train), extractor, name="train_images").float() for g in views[1:]])
    f_samp = extract_features(samp, extractor, name="samples").float()

    def d1_and_relative(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = d.double()
        rest = d[:, 1:].mean(dim=1)
        return d[:, 0], torch.where(rest > 0, d[:, 0] / rest.clamp_min(1e-12), torch.zeros_like(rest))

    train_d, _ = nearest_k(f_train, f_views, k, chunk_size, leave_one_out=True, views=len(views))
    samp_d, samp_j = nearest_k(f_samp, f_views, k, chunk_size, views=len(views))
    train_nn, train_rel = d1_and_relative(train_d)
    samp_nn, samp_rel = d1_and_relative(samp_d)
    samp_idx = samp_j[:, 0]
    threshold = float(torch.quantile(train_nn, float(quantile)))
    rel_threshold = min(float(torch.quantile(train_rel, float(quantile))), float(max_relative))
    near = (samp_nn <= threshold) & (samp_rel <= rel_threshold)
    med_s = float(samp_nn.median())
    med_t = float(train_nn.median())
    order = torch.argsort(samp_nn, stable=True)[: max(0, int(n_closest))]
    return {
        "near_copy_share": float(near.double().mean()),
        "near_copy_count": int(near.sum()),
        "exact_copy_count": int((samp_nn <= 1e-6).sum()),
        "threshold": threshold,
        "relative_threshold": rel_threshold,
        "quantile": float(quantile),
        "neighbours": int(k),
        "median_sample_nn": med_s,
        "median_train_nn": med_t,
        "nn_ratio": med_s / med_t if med_t > 0 else float("inf"),
        "median_sample_relative": float(samp_rel.median()),
        "closest": [
            {"sample_index": int(i), "train_index": int(samp_idx[i]), "distance": float(samp_nn[i]), "relative": float(samp_rel[i])}
            for i in order
        ],
        "n_train": int(train.shape[0]),
        "n_samples": int(samp.shape[0]),
        "extractor": _describe(extractor),
    }


# --------------------------------------------------------------------------- #
# One-call evaluation
# --------------------------------------------------------------------------- #
def evaluate_samples(
    real_train: Any,
    real_heldout: Any,
    fake: Any,
    *,
    extractor: nn.Module,
    n: int | None = None,
    seed: int = 0,
    k: int = 3,
    kid_subsets: int = 100,
    batch_size: int = 256,
) -> dict[str, Any]:
    """FID, KID, precision and recall of ``fake`` against ``real_train``, with their floor.

    The floor is the same metric for ``real_heldout`` against ``real_train``:
    what a perfect generator (one that samples the true distribution without
    copying) would score with these sample counts and this extractor. Report
    scores next to it -- "FID 30" means nothing, "FID 30, floor 6" does.

    Sample counts are fixed deterministically: the reference is all of
    ``real_train``; fake and held-out both use ``n`` images (default
    ``min(len(real_heldout), len(fake))``), chosen by a permutation seeded
    with ``seed``, so the score and its floor have the same (biased) sample
    size. KID uses ``subset_size = min(n_real_train, n, 1000)``.

    Returns plain Python numbers: ``fid, kid_mean, kid_std, precision, recall``,
    ``fid_floor, kid_floor_mean, kid_floor_std, precision_floor, recall_floor``,
    ``fid_over_floor``, and the settings ``n_real_train, n_heldout, n_fake,
    kid_subsets, kid_subset_size, k, seed, extractor, feature_dim``.
    """
    train = as_float_images(real_train, name="real_train")
    held = as_float_images(real_heldout, name="real_heldout")
    fk = as_float_images(fake, name="fake")
    check_pair(train, held, "real_train", "real_heldout")
    check_pair(train, fk, "real_train", "fake")
    n_avail = min(held.shape[0], fk.shape[0])
    if n is None:
        n = n_avail
    if not isinstance(n, int) or n < max(2, k + 1) or n > n_avail:
        raise ValueError(
            f"n must be an int in [{max(2, k + 1)}, min(len(real_heldout), len(fake)) = {n_avail}], got {n!r}; "
            "generate more samples or hold out more real images"
        )
    if train.shape[0] < max(2, k + 1):
        raise ValueError(f"real_train: need at least {max(2, k + 1)} images, got {train.shape[0]}")
    g = torch.Generator().manual_seed(int(seed))
    held = held[torch.randperm(held.shape[0], generator=g)[:n]]
    fk = fk[torch.randperm(fk.shape[0], generator=g)[:n]]

    adapter = FeatureAdapter(extractor, example=train, batch_size=batch_size)
    f_train, f_held, f_fake = adapter(train), adapter(held), adapter(fk)

    size = _kid_subset_size(f_train.shape[0], n, None)
    fid_v = fid_from_features(f_train, f_fake)
    fid_floor = fid_from_features(f_train, f_held)
    kid_m, kid_s = kid_from_features(f_train, f_fake, subsets=kid_subsets, subset_size=size, seed=seed)
    kidf_m, kidf_s = kid_from_features(f_train, f_held, subsets=kid_subsets, subset_size=size, seed=seed)
    pr = precision_recall(f_train, f_fake, k=k)
    pr_floor = precision_recall(f_train, f_held, k=k)
    return {
        "fid": fid_v,
        "kid_mean": kid_m,
        "kid_std": kid_s,
        "precision": pr["precision"],
        "recall": pr["recall"],
        "fid_floor": fid_floor,
        "kid_floor_mean": kidf_m,
        "kid_floor_std": kidf_s,
        "precision_floor": pr_floor["precision"],
        "recall_floor": pr_floor["recall"],
        "fid_over_floor": fid_v / fid_floor if fid_floor > 0 else float("inf"),
        "n_real_train": int(train.shape[0]),
        "n_heldout": int(n),
        "n_fake": int(n),
        "kid_subsets": int(kid_subsets),
        "kid_subset_size": int(size),
        "k": int(k),
        "seed": int(seed),
        "extractor": _describe(extractor),
        "feature_dim": int(f_train.shape[1]),
    }


# --------------------------------------------------------------------------- #
# Sliced Wasserstein distance (training-free cross-check)
# --------------------------------------------------------------------------- #
def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur (the Gaussian-pyramid filter), reflect-padded, per channel."""
    c = x.shape[1]
    b = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype) / 16.0
    k = (b[:, None] * b[None, :])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def _laplacian_pyramid(x: torch.Tensor, min_res: int) -> list[torch.Tensor]:
    levels = []
    g = x
    while g.shape[-1] // 2 >= min_res and g.shape[-1] % 2 == 0:
        down = _blur(g)[..., ::2, ::2]
        up = torch.zeros_like(g)
        up[..., ::2, ::2] = down * 4.0  # zero-insertion upsampling, gain restored by the blur
        levels.append(g - _blur(up))
        g = down
    levels.append(g)
    return levels


def _patches(level: torch.Tensor, n_per_image: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(n * n_per_image, C, size*size) random patches, indexed directly (no unfold copy)."""
    n, c, h, w = level.shape
    size = min(size, h, w)
    ys = torch.randint(0, h - size + 1, (n, n_per_image), generator=g)
    xs = torch.randint(0, w - size + 1, (n, n_per_image), generator=g)
    ar = torch.arange(size)
    rows = (ys[..., None] + ar)[:, :, :, None]  # (n, P, size, 1)
    cols = (xs[..., None] + ar)[:, :, None, :]  # (n, P, 1, size)
    img = torch.arange(n)[:, None, None, None]
    out = level.permute(0, 2, 3, 1)[img, rows, cols]  # (n, P, size, size, C)
    return out.reshape(n * n_per_image, size * size, c).transpose(1, 2)


def swd(
    real: Any,
    fake: Any,
    *,
    seed: int = 0,
    patches_per_image: int = 16,
    patch_size: int = 7,
    n_projections: int = 128,
    min_resolution: int = 16,
) -> float:
    """Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al., 2018), x1e3.

    Training-free cross-check for FID. Per pyramid level (down to
    ``min_resolution``), ``patches_per_image`` random ``patch_size`` patches per
    image are taken, normalized per channel with the *real* set's mean/std
    (Karras et al. normalize each set by its own statistics, which hides a
    global brightness/contrast change; using the real statistics keeps it),
    projected on ``n_projections`` random unit directions; the 1-D Wasserstein
    distances (sorted projections) are averaged over directions and levels.
    Uses ``min(len(real), len(fake))`` images of each set (seeded choice).
    Deterministic given ``seed``; returns a float (x1e3, as in the paper).
    """
    r = as_float_images(real, name="real")
    f = as_float_images(fake, name="fake")
    check_pair(r, f, "real", "fake")
    # Both sets draw images and patch positions from identically seeded
    # generators, so swd(x, x) == 0 exactly; directions have their own stream.
    g_r = torch.Generator().manual_seed(int(seed))
    g_f = torch.Generator().manual_seed(int(seed))
    g = torch.Generator().manual_seed(int(seed) + 1)
    n = min(r.shape[0], f.shape[0])
    r = r[torch.randperm(r.shape[0], generator=g_r)[:n]]
    f = f[torch.randperm(f.shape[0], generator=g_f)[:n]]
    dists = []
    for lr, lf in zip(_laplacian_pyramid(r, min_resolution), _laplacian_pyramid(f, min_resolution)):
        pr = _patches(lr, patches_per_image, patch_size, g_r)
        pf = _patches(lf, patches_per_image, patch_size, g_f)
        mean = pr.mean(dim=(0, 2), keepdim=True)
        std = pr.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
        pr = ((pr - mean) / std).reshape(pr.shape[0], -1)
        pf = ((pf - mean) / std).reshape(pf.shape[0], -1)
        dirs = torch.randn(pr.shape[1], n_projections, generator=g)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # (directions, descriptors), contiguous: sorting along the last dim is much faster
        proj_r = torch.sort((pr @ dirs).t().contiguous(), dim=1).values
        proj_f = torch.sort((pf @ dirs).t().contiguous(), dim=1).values
        dists.append(float((proj_r - proj_f).abs().mean()))
    return 1e3 * sum(dists) / len(dists)
