"""Evaluate a trained generator: offline quality metrics with their floor, a
memorization audit, and sample / interpolation grids. Imports torch only (via
gan_core). The one evaluation step behind every entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .sampling import generate, interpolation_grid, latents, save_grid, to_uint8

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.png"
INTERPOLATION_FILE = "interpolation.png"
FEATURE_NET_FILE = "feature_net.safetensors"


def evaluate_generator(
    generator: nn.Module,
    real_train: Any,
    real_heldout: Any,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    extractor: nn.Module | None = None,
    n_audit: int = 500,
    seed: int = 0,
    feature_steps: int = 300,
    symmetries: tuple[str, ...] | list[str] = (),
    n_attack: int = 2000,
) -> dict[str, Any]:
    """Score ``generator`` against real images it was (``real_train``) and was not
    (``real_heldout``) trained on.

    - quality: FID/KID/precision/recall against ``real_train`` with the same numbers
      for ``real_heldout`` as the floor (:func:`gan_core.quality.evaluate_samples`);
    - memorization: nearest-training-image distances of ``n_audit`` samples
      (:func:`gan_core.manifold.memorization_audit`);
    - privacy: a membership-inference attack with ``n_attack`` samples: can they tell
      ``real_train`` from ``real_heldout``? ROC AUC, 0.5 = no (:func:`gan_core.privacy.membership_inference_audit`);
    - realism: a classifier two-sample test and the sharpness ratio of the samples
      against ``real_train`` (:func:`gan_core.verdict.realism_metrics`): what the ruler
      is blind to (blur, grain, missing fine structure);
    - the feature extractor defaults to a small CNN trained by rotation prediction on
      ``real_train`` (:mod:`gan_core.features`), saved beside the metrics so that a
      later evaluation can reuse the same ruler;
    - ``symmetries``: the flips and turns the data is declared invariant to
      (:mod:`gan_core.symmetry`): the ruler trained here, the classifier test and the
      memorization audit do not tell an image from its mirrored or turned views.

    With ``out_dir``, writes ``metrics.json``, ``samples.png`` (64 samples),
    ``interpolation.png`` and ``feature_net.safetensors``, each atomically.
    """
    from .features import save_feature_net, train_feature_net
    from .images import as_float_images
    from .manifold import memorization_audit
    from .privacy import membership_inference_audit
    from .quality import evaluate_samples
    from .verdict import realism_metrics

    train = as_float_images(real_train, name="real_train")
    held = as_float_images(real_heldout, name="real_heldout")
    trained_here = extractor is None
    if trained_here:
        extractor = train_feature_net(train, seed=seed, steps=feature_steps, symmetries=tuple(symmetries))
    n = max(len(held), n_audit)
    fake = generate(generator, latents(n, generator.z_dim, seed=seed + 1))
    quality = evaluate_samples(train, held, fake, extractor=extractor, seed=seed)
    audit = memorization_audit(train, fake[:n_audit], symmetries=symmetries)
    realism = realism_metrics(train, fake, seed=seed, symmetries=symmetries)
    attack_samples = generate(generator, latents(n_attack, generator.z_dim, seed=seed + 2))
    privacy = membership_inference_audit(train, held, attack_samples, symmetries=symmetries, seed=seed)
    result = {"quality": quality, "memorization": audit, "realism": realism, "privacy": privacy}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(to_uint8(fake[:64]), out / SAMPLES_FILE, nrow=8, scale=max(1, 128 // fake.shape[-1]))
        save_grid(interpolation_grid(generator, rows=4, steps=8, seed=seed), out / INTERPOLATION_FILE, nrow=8, scale=max(1, 128 // fake.shape[-1]))
        if trained_here:  # a ruler passed in is saved by whoever built it
            save_feature_net(extractor, out / FEATURE_NET_FILE)
        atomic_write_bytes(out / METRICS_FILE, json.dumps(result, indent=2, sort_keys=True).encode())
    return result
