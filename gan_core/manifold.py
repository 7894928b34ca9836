"""Nearest neighbours in feature space: improved precision/recall and the memorization audit.

* :func:`nearest_k` -- every query row's k nearest reference rows (chunked ``cdist``),
  optionally over several views (flips, turns) of each reference image.
* :func:`precision_recall` -- improved precision and recall (Kynkäänniemi et al., 2019):
  fidelity and coverage of the samples, from k-NN balls around real and fake features.
* :func:`memorization_audit` -- does the generator copy its training images? Near-copy
  share, nearest-training-image distances and the closest pairs (pixel space by default).

Features are float (N, d) matrices; images float (N, C, H, W) in [-1, 1] or uint8
(:func:`gan_core.images.as_float_images`). Results are plain Python types.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .features import PixelFeatures, describe_extractor, extract_features
from .images import as_float_images, check_features, check_pair
from .symmetry import group

__all__ = ["CDIST_MODE", "nearest_k", "precision_recall", "memorization_audit"]

#: ``torch.cdist`` mode that gives exact zeros for identical vectors (no matmul shortcut).
CDIST_MODE = "donot_use_mm_for_euclid_dist"


def _kth_nn_radius(feats: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (self is at distance 0)."""
    out = []
    for i in range(0, feats.shape[0], chunk_size):
        d = torch.cdist(feats[i : i + chunk_size], feats, compute_mode=CDIST_MODE)
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _within_any_ball(query: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, chunk_size: int) -> torch.Tensor:
    out = []
    for i in range(0, query.shape[0], chunk_size):
        d = torch.cdist(query[i : i + chunk_size], centers, compute_mode=CDIST_MODE)
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
        d = torch.cdist(query[i : i + chunk_size], ref, compute_mode=CDIST_MODE)
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
    real_feats = check_features(real_feats, "real_feats").float()
    fake_feats = check_features(fake_feats, "fake_feats").float()
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
        "extractor": describe_extractor(extractor),
    }
