"""Training step: the validated images of one scenario and its augmentation policy
-> a generator (gan_core).

What training applies comes from the augment step's ``policy.json``: the real images go
through the scenario's albumentations pipeline per batch (seeded by (seed, step, rank),
so retrains are byte-identical and resumes exact) or, with offline copies, are read
from ``augmented/images/``; the ops routed to D's input go into ``train.augment``
(with ``train.ada`` from ``augmentation.ada``). The generator file, ``summary.json`` and
the model card record it.

The held-out split is made here, on original images (an image and its augmented
copies are always on the same side), and saved as ``split.json`` beside the model so
that evaluation scores against exactly the images training never saw.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import atomic_write, sha256_bytes, sha256_file
from ..paths import ScenarioPaths
from ..scenario import Scenario
from ..training_data import SPLIT_FILE, TrainingInputError, heldout_originals, load_training_images

LOSS_CSV = "loss.csv"  # the loss curve as a table (DVC plots read it)


@dataclass
class TrainingResult:
    generator_path: Path
    steps: int
    images_seen: int
    images_per_s: float
    wall_s: float
    resumed_from: int | None
    rollbacks: int
    final_logs: dict[str, float]
    n_train_images: int
    n_heldout: int
    profile: str
    """The budget trained: ``cpu`` (the scenario's ``gan:``) or ``gpu`` (``gan:`` + ``gpu:``)."""
    model_sha256: str
    training_saw: dict
    """What the real images went through and what D's input ops were (see the module doc)."""
    ada_p: float | None = None
    privacy: dict | None = None
    """The (epsilon, delta) spent by differentially private training (``gan.train.privacy``), or None."""


def write_loss_csv(jsonl: Path, out: Path) -> Path:
    """``metrics.jsonl`` (one JSON object per logged step) as CSV, written atomically."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if jsonl.is_file() else []
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = [",".join(cols)] + [",".join("" if r.get(c) is None else repr(r[c]) for c in cols) for r in rows]
    return atomic_write(out, ("\n".join(lines) + "\n").encode())


def train(
    scenario: Scenario,
    paths: ScenarioPaths,
    *,
    on_event: Callable | None = None,
    progress: bool | None = None,
    profile: str = "cpu",
) -> TrainingResult:
    """Train the scenario's GAN on its augmented data with the budget ``profile``
    (``scenarios/_project.yaml``: ``cpu`` or ``gpu``; never chosen by the hardware)."""
    import torch

    from gan_core.trainer import SUMMARY_FILE, Trainer

    from .augment import batch_transform, load_pipeline, read_policy

    policy = read_policy(paths)
    images, source = load_training_images(paths)
    ev = scenario.evaluation
    held = heldout_originals(source, ev.heldout_fraction, ev.seed)
    train_mask = ~np.isin(source, held)
    if profile not in ("cpu", "gpu"):
        raise ValueError(f"profile {profile!r} is not 'cpu' or 'gpu' (scenarios/_project.yaml: profile)")
    if profile == "gpu" and not torch.cuda.is_available():
        print(f"scenario {scenario.name!r}: profile 'gpu' on a machine without CUDA: the GPU budget trains on the CPU", file=sys.stderr)
    cfg = scenario.gan_config(gpu=profile == "gpu", augment=policy["discriminator"]["ops"])
    per_batch = bool(policy["reals"]["transforms"]) and not policy["reals"]["offline_copies"]
    if cfg.train.privacy is not None and policy["reals"]["offline_copies"]:
        raise TrainingInputError(
            f"scenario {scenario.name!r}: gan.train.privacy protects each training row, but the augment step wrote "
            f"{policy['reals']['offline_copies']} offline copies of every image, so one image is several rows; "
            "let the transforms run per batch (augmentation.offline_copies: 0)"
        )
    real_transform = batch_transform(load_pipeline(paths.augmented / "pipeline.json")) if per_batch else None
    saw = {
        "reals": policy["reals"],
        "discriminator": {"ops": cfg.d_augment_ops, "ada": cfg.train.ada},
        "images": int(train_mask.sum()),
        "held_out_originals": len(held),
    }
    paths.model.mkdir(parents=True, exist_ok=True)
    split = {"heldout_originals": held.tolist(), "n_train_rows": int(train_mask.sum()), "seed": ev.seed, "fraction": ev.heldout_fraction}
    atomic_write(paths.model / SPLIT_FILE, json.dumps(split).encode())
    # Checkpoints are resumed only by a run on the same data, split and budget.
    run_key = sha256_bytes(json.dumps({"augmented": json.loads((paths.augmented / "manifest.json").read_text())["content_hash"], "split": split}, sort_keys=True).encode())
    trainer = Trainer(
        cfg, images.subset(np.flatnonzero(train_mask)), paths.model, callbacks=[on_event] if on_event else (), progress=progress, run_key=run_key,
        real_transform=real_transform, describe=saw,
    )
    r = trainer.fit()
    summary = json.loads((paths.model / SUMMARY_FILE).read_text())
    atomic_write(paths.model / SUMMARY_FILE, json.dumps({**summary, "profile": profile}, indent=2, sort_keys=True).encode())
    write_loss_csv(paths.model / "metrics.jsonl", paths.model / LOSS_CSV)
    # Checkpoints exist to resume an interrupted run; a finished run keeps only its
    # generator, so the next materialization (or `dvc repro`) trains from scratch.
    shutil.rmtree(paths.model / "checkpoints", ignore_errors=True)
    return TrainingResult(
        generator_path=r.generator_path,
        steps=r.steps,
        images_seen=r.images_seen,
        images_per_s=r.images_per_s,
        wall_s=r.wall_s,
        resumed_from=r.resumed_from,
        rollbacks=r.rollbacks,
        final_logs=r.final_logs,
        n_train_images=int(train_mask.sum()),
        n_heldout=len(held),
        profile=profile,
        model_sha256=sha256_file(r.generator_path),
        training_saw=saw,
        ada_p=r.ada_p,
        privacy=r.privacy,
    )
