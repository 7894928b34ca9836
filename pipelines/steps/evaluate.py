"""Evaluation step: a trained generator -> metrics with their floor, memorization
audit, sample grids, the promotion decision the blocking check enforces, and the
model card (``models/<scenario>/MODEL_CARD.md``, :mod:`pipelines.model_card`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dvcio import dvc_hash
from ..io import atomic_write, sha256_file
from ..model_card import write_model_card
from ..paths import ScenarioPaths
from ..scenario import Scenario
from .ruler import load_ruler
from ..training_data import SPLIT_FILE, TrainingInputError, load_originals


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    promote: bool
    reasons: list[str]
    samples_png: Path
    interpolation_png: Path
    metrics_path: Path
    model_card: Path


def promotion(scenario: Scenario, result: dict[str, Any]) -> tuple[bool, list[str], dict[str, Any]]:
    """Does the model meet the scenario's promotion bar? ``(ok, reasons, verdict)``:
    the reasons name each failed criterion with its value and bar
    (:func:`gan_core.verdict.judge`)."""
    from gan_core.verdict import Bar, judge

    v = judge(result, Bar(**scenario.evaluation.promote.bar_values(scenario.domain)))
    return v.passed, v.reasons, v.to_dict()


def evaluate(scenario: Scenario, paths: ScenarioPaths) -> EvaluationResult:
    import torch

    from gan_core.checkpoint import load_generator
    from gan_core.evaluate import evaluate_generator

    gen_path = paths.model / "generator.safetensors"
    split_path = paths.model / SPLIT_FILE
    if not gen_path.is_file() or not split_path.is_file():
        raise TrainingInputError(f"{gen_path} is missing: train scenario {scenario.name!r} first")
    images = load_originals(paths)
    split = json.loads(split_path.read_text())
    extractor, ruler = load_ruler(paths, split)
    held = np.asarray(split["heldout_originals"], dtype=np.int64)
    is_held = np.isin(np.arange(len(images)), held)
    to_t = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    real_train, real_held = to_t(images[~is_held]), to_t(images[is_held])
    g, _, meta = load_generator(gen_path)
    ev = scenario.evaluation
    # The ruler knows the scenario's declared symmetries; the classifier test and the
    # audit use the same (a mirrored copy of a training face is a copy).
    result = evaluate_generator(
        g, real_train, real_held, out_dir=paths.evaluation, extractor=extractor, n_audit=ev.n_audit, seed=ev.seed, symmetries=extractor.symmetries
    )
    ok, reasons, verdict = promotion(scenario, result)
    q, m, realism, privacy = result["quality"], result["memorization"], result["realism"], result["privacy"]
    headline = {
        "scenario": scenario.name,
        "fid": q["fid"],
        "fid_floor": q["fid_floor"],
        "fid_over_floor": q["fid_over_floor"],
        "kid": q["kid_mean"],
        "precision": q["precision"],
        "recall": q["recall"],
        "c2st_accuracy": realism["c2st_accuracy"],
        "c2st_ci_low": realism["c2st_ci_low"],
        "sharpness_ratio": realism["sharpness_ratio"],
        "near_copy_share": m["near_copy_share"],
        "membership_auc": privacy["membership_auc"],
        "membership_auc_ci_low": privacy["auc_ci_low"],
        "membership_auc_ci_high": privacy["auc_ci_high"],
        # (epsilon, delta) spent by DP training, without the accountant's history (null: not DP-trained)
        "differential_privacy": {k: v for k, v in meta["privacy"].items() if k != "history"} if meta.get("privacy") else None,
        "steps": meta.get("step"),
        "model_sha256": sha256_file(gen_path),
        "promote": ok,
        "promote_reasons": reasons,
        "failed_criteria": verdict["failed_criteria"],
        "ruler_md5": dvc_hash(paths.ruler),
    }
    # eval/metrics.json keeps the verdict beside the measures it judged (what a check reads)
    atomic_write(paths.evaluation / "metrics.json", json.dumps({**result, "verdict": verdict}, indent=2, sort_keys=True).encode())
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.metrics, json.dumps(headline, indent=2, sort_keys=True).encode())
    card = write_model_card(scenario, paths, headline, q, m, verdict, privacy)
    return EvaluationResult(
        metrics={**headline, "quality": q, "memorization": m, "realism": realism, "privacy": privacy, "verdict": verdict},
        promote=ok,
        reasons=reasons,
        samples_png=paths.evaluation / "samples.png",
        interpolation_png=paths.evaluation / "interpolation.png",
        metrics_path=paths.metrics,
        model_card=card,
    )
