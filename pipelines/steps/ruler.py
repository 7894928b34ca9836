"""Ruler step: the validated images of one scenario -> the measuring stick every model
of the scenario is scored with (``models/<scenario>/ruler/``).

A Fréchet distance or a precision only means something beside the same number for real
images, measured with the same feature network and sample counts. So the network (a
small CNN trained by rotation prediction on the scenario's own training images,
:mod:`gan_core.features`) is built once per version of the data, on its own stage, and
every later model is measured with the same file: numbers are comparable across
retrains, and the ruler is rebuilt only when the real images or its own settings
(``evaluation.heldout_fraction``, ``seed``, ``feature_steps``,
``augmentation.invariances``) change. The ruler does not tell an image from its
flipped or turned views that the scenario declares equivalent: by the scenario's own
declaration they are images of the data.

Outputs (atomic, ``ruler.json`` last):

    feature_net.safetensors   the network (safetensors; config and training info in its metadata)
    ruler.json                the held-out split it was built for, its training info, and the
                              floors: every measure of the verdict for the held-out real
                              images against the training images
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import IMAGES_DIR, atomic_write, json_bytes, sha256_file
from ..paths import ScenarioPaths
from ..scenario import Scenario
from gan_core.shards import dataset_digest
from ..training_data import TrainingInputError, heldout_originals, load_originals

RULER_FILE = "ruler.json"
FEATURE_NET_FILE = "feature_net.safetensors"
RULER_FORMAT = "scenario-gan.ruler/1"


@dataclass
class RulerResult:
    path: Path
    feature_net: Path
    n_train: int
    n_heldout: int
    floor: dict[str, Any]
    train_info: dict[str, Any]


def real_split(images: np.ndarray, scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of the validated images: the split the training step
    makes (:func:`pipelines.training_data.heldout_originals` with the same keys)."""
    ev = scenario.evaluation
    held = heldout_originals(np.arange(len(images)), ev.heldout_fraction, ev.seed)
    return np.setdiff1d(np.arange(len(images)), held), held


def build_ruler(scenario: Scenario, paths: ScenarioPaths) -> RulerResult:
    import torch

    from gan_core.features import save_feature_net, train_feature_net
    from gan_core.quality import evaluate_samples
    from gan_core.verdict import realism_metrics

    images = load_originals(paths)
    train_rows, held_rows = real_split(images, scenario)
    to_t = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    real_train, real_held = to_t(images[train_rows]), to_t(images[held_rows])
    ev = scenario.evaluation
    symmetries = tuple(scenario.augmentation.invariances)
    net = train_feature_net(real_train, seed=ev.seed, steps=ev.feature_steps, symmetries=symmetries)
    # The floor: what a generator that samples the true distribution would score.
    floor = evaluate_samples(real_train, real_held, real_held, extractor=net, seed=ev.seed)
    realism = realism_metrics(real_train, real_held, seed=ev.seed, symmetries=symmetries)
    out = paths.ruler
    out.mkdir(parents=True, exist_ok=True)
    (out / RULER_FILE).unlink(missing_ok=True)  # a half-rebuilt ruler never looks complete
    net_path = save_feature_net(net, out / FEATURE_NET_FILE)
    body = {
        "format": RULER_FORMAT,
        "scenario": scenario.name,
        "validated_digest": dataset_digest(paths.validated / IMAGES_DIR),
        "split": {"heldout_originals": held_rows.tolist(), "fraction": ev.heldout_fraction, "seed": ev.seed},
        "n_train": int(len(train_rows)),
        "n_heldout": int(len(held_rows)),
        "symmetries": list(symmetries),
        "feature_net": {"file": FEATURE_NET_FILE, "sha256": sha256_file(net_path), "steps": ev.feature_steps, **net.train_info},
        "floor": {
            **{k: floor[k] for k in ("fid_floor", "kid_floor_mean", "precision_floor", "recall_floor", "n_heldout", "extractor")},
            "c2st_accuracy": realism["c2st_accuracy"],
            "c2st_ci_low": realism["c2st_ci_low"],
            "sharpness_ratio": realism["sharpness_ratio"],
        },
    }
    path = atomic_write(out / RULER_FILE, json_bytes(body, ensure_ascii=True))
    return RulerResult(path, net_path, body["n_train"], body["n_heldout"], body["floor"], net.train_info)


def load_ruler(paths: ScenarioPaths, split: dict[str, Any] | None = None):
    """(feature net, ruler.json) of a finished ruler step. With ``split`` (a model's
    ``split.json``), the ruler must have been built for the same held-out images."""
    from gan_core.features import load_feature_net

    f = paths.ruler / RULER_FILE
    if not f.is_file():
        raise TrainingInputError(f"{f} is missing: build the ruler of scenario {paths.name!r} first (step `ruler`)")
    body = json.loads(f.read_text(encoding="utf-8"))
    if body.get("format") != RULER_FORMAT:
        raise TrainingInputError(f"{f}: format {body.get('format')!r}, expected {RULER_FORMAT!r}; rebuild the ruler")
    net = load_feature_net(paths.ruler / FEATURE_NET_FILE)
    if sha256_file(paths.ruler / FEATURE_NET_FILE) != body["feature_net"]["sha256"]:
        raise TrainingInputError(f"{paths.ruler / FEATURE_NET_FILE} is not the file {f} describes; rebuild the ruler")
    if split is not None and sorted(split.get("heldout_originals", [])) != body["split"]["heldout_originals"]:
        raise TrainingInputError(
            f"the ruler in {paths.ruler} was built for another held-out split than the model's split.json "
            "(the data or evaluation.heldout_fraction/seed changed in between); rebuild the ruler and retrain"
        )
    return net, body
