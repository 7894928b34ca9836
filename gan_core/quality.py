"""One-call sample quality: FID, KID, precision and recall, each next to its floor.

:func:`evaluate_samples` scores generated images against the real training images and
reports the same numbers for real held-out images (the floor: what a perfect,
non-copying generator would score with these sample counts and this extractor), with
the sample counts fixed and reported. Built on :mod:`gan_core.fid` (FID/KID) and
:mod:`gan_core.manifold` (precision/recall).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .features import FeatureAdapter, describe_extractor
from .fid import fid_from_features, kid_from_features, kid_subset_size
from .images import as_float_images, check_pair
from .manifold import precision_recall

__all__ = ["evaluate_samples"]


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

    size = kid_subset_size(f_train.shape[0], n, None)
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
        "extractor": describe_extractor(extractor),
        "feature_dim": int(f_train.shape[1]),
    }
