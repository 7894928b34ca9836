"""A scenario's training data as the train, ruler and evaluate steps read it: the
images training sees, the validated originals, and the held-out split (made on original
images, so an image and its augmented copies are always on the same side)."""

from __future__ import annotations

import numpy as np

from .paths import ScenarioPaths

SPLIT_FILE = "split.json"
"""Beside the model: the held-out originals, so evaluation scores against exactly the
images training never saw."""


class TrainingInputError(RuntimeError):
    """The augmented dataset is missing or unusable."""


def load_training_images(paths: ScenarioPaths) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, source_index: row -> original row) that training reads: the
    augment step's offline copies when it wrote them, else the validated images."""
    manifest = paths.augmented / "manifest.json"
    if not manifest.is_file():
        raise TrainingInputError(f"{manifest} is missing: materialize the augmented dataset of scenario {paths.name!r} first (it needs a passed validation)")
    copies = paths.augmented / "images.npz"
    f = copies if copies.is_file() else paths.validated / "images.npz"
    if not f.is_file():
        raise TrainingInputError(f"{f} is missing: rerun validation and augmentation of scenario {paths.name!r}")
    with np.load(f, allow_pickle=False) as z:
        images = z["images"]
        source = z["source_index"] if "source_index" in z.files else np.arange(len(images))
    return images, source


def load_originals(paths: ScenarioPaths) -> np.ndarray:
    """The validated images (one row per original), uint8 NHWC."""
    f = paths.validated / "images.npz"
    if not f.is_file():
        raise TrainingInputError(f"{f} is missing: rerun validation of scenario {paths.name!r}")
    with np.load(f, allow_pickle=False) as z:
        return z["images"]


def heldout_originals(source_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted original indices held out from training (deterministic)."""
    originals = np.unique(source_index)
    n_held = max(4, int(round(len(originals) * fraction)))
    if len(originals) - n_held < 4:
        raise TrainingInputError(f"{len(originals)} images are too few to hold out {fraction:.0%} for evaluation; add images")
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(originals)[:n_held])
