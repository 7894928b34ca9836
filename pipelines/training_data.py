"""A scenario's training data as the train, ruler and evaluate steps read it: the
images training sees, the validated originals, and the held-out split (made on original
images, so an image and its augmented copies are always on the same side)."""

from __future__ import annotations

import numpy as np

from .io import IMAGES_DIR
from .paths import ScenarioPaths
from gan_core.shards import INDEX_FILE, ShardedImages, ShardError, open_images

SPLIT_FILE = "split.json"
"""Beside the model: the held-out originals, so evaluation scores against exactly the
images training never saw."""


class TrainingInputError(RuntimeError):
    """The augmented dataset is missing or unusable."""


def load_training_images(paths: ScenarioPaths) -> tuple[ShardedImages, np.ndarray]:
    """(images, source_index: row -> original row) that training reads, lazily
    (:mod:`gan_core.shards`): the augment step's offline copies when it wrote them,
    else the validated images."""
    manifest = paths.augmented / "manifest.json"
    if not manifest.is_file():
        raise TrainingInputError(f"{manifest} is missing: materialize the augmented dataset of scenario {paths.name!r} first (it needs a passed validation)")
    copies = paths.augmented / IMAGES_DIR
    f = copies if (copies / INDEX_FILE).is_file() else paths.validated / IMAGES_DIR
    images = _open(f, paths.name, "validation and augmentation")
    source = images.column("source_index") if images.has_column("source_index") else np.arange(len(images))
    return images, source


def load_originals(paths: ScenarioPaths) -> ShardedImages:
    """The validated images (one row per original), uint8 NHWC, read lazily: index it
    (``images[rows]``, ``images.take(rows)``) or ``images.load()`` them all."""
    return _open(paths.validated / IMAGES_DIR, paths.name, "validation")


def _open(folder, name: str, what: str) -> ShardedImages:
    try:
        return open_images(folder)
    except ShardError as e:
        raise TrainingInputError(f"{e} (rerun {what} of scenario {name!r})") from None


def heldout_originals(source_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted original indices held out from training (deterministic)."""
    originals = np.unique(source_index)
    n_held = max(4, int(round(len(originals) * fraction)))
    if len(originals) - n_held < 4:
        raise TrainingInputError(f"{len(originals)} images are too few to hold out {fraction:.0%} for evaluation; add images")
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(originals)[:n_held])
