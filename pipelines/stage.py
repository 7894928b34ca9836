"""Run one pipeline step for one scenario outside Dagster — the entry point for
pipeline stages such as DVC's (``cmd: python -m pipelines.stage train faces``).

    python -m pipelines.stage ingest faces
    python -m pipelines.stage validate faces     # exit 1 when a blocking expectation fails
    python -m pipelines.stage augment faces
    python -m pipelines.stage ruler faces
    python -m pipelines.stage train faces
    python -m pipelines.stage evaluate faces

Each step is the same function the Dagster asset calls, writes to the same paths
(``pipelines/paths.py``) and takes the same per-scenario lock, so a step run here and a
materialization from the UI never write the same scenario at once.

A step that succeeds is recorded in the Dagster instance (``$DAGSTER_HOME``, default
``.dagster/`` of the project, the one ``python -m pipelines.ui`` opens) as a
materialization of its asset's partition, tagged ``entry_point: dvc`` when ``dvc repro``
ran it: the UI's asset history shows it and marks what became stale. ``--no-dagster``
(or ``SCENARIO_GAN_DAGSTER_EVENTS=off``) skips that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipelines.dvcio import STEPS
from pipelines.scenario import SCENARIO_DIR, ScenarioError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_step(step: str, name: str, *, base_dir: Path, scenarios_dir: Path) -> dict:
    """Run ``step`` for scenario ``name``; returns a small JSON-able summary. Raises on failure."""
    from assets.common import step_lock
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import load_project, load_scenario

    scenario = load_scenario(scenarios_dir / f"{name}.yaml")
    paths = ScenarioPaths(name, Roots.under(base_dir))
    with step_lock(paths, base_dir):
        if step == "ingest":
            from pipelines.steps.ingest import ingest

            r = ingest(scenario, paths)
            return {"n_images": r.n_images, "n_quarantined": r.n_quarantined, "n_duplicates": r.n_duplicates, "content_hash": r.content_hash}
        if step == "validate":
            from pipelines.steps.validate import require_passed, validate

            r = require_passed(validate(scenario, paths))
            return {"passed": r.passed, "n_expectations": len(r.results), "n_set_aside": r.n_set_aside, "n_kept": r.n_kept, "content_hash": r.content_hash}
        if step == "augment":
            from pipelines.steps.augment import augment

            r = augment(scenario, paths)
            return {"n_images": r.n_images, "content_hash": r.content_hash}
        if step == "ruler":
            from pipelines.steps.ruler import build_ruler

            r = build_ruler(scenario, paths)
            return {"n_train": r.n_train, "n_heldout": r.n_heldout, "fid_floor": r.floor["fid_floor"]}
        if step == "train":
            from pipelines.steps.train import train_step

            # A terminal gets the trainer's progress bar; a log (CI, nohup) a line per tenth.
            r = train_step(scenario, paths, on_event=None if sys.stderr.isatty() else _log_progress(f"train@{name}"), profile=load_project(scenarios_dir).profile)
            return {"profile": r.profile, "steps": r.steps, "resumed_from": r.resumed_from, "images_per_s": round(r.images_per_s, 1), "model_sha256": r.model_hash}
        if step == "evaluate":
            from pipelines.steps.evaluate import evaluate_step

            r = evaluate_step(scenario, paths)
            return {k: r.metrics[k] for k in ("fid", "fid_floor", "precision", "recall", "c2st_accuracy", "sharpness_ratio", "near_copy_share", "promote", "failed_criteria")}
    raise ValueError(f"unknown step {step!r}; allowed: {list(STEPS)}")


def _log_progress(label: str):
    def on_event(e) -> None:
        every = max(1, e.total_steps // 10)
        if e.kind == "step" and (e.step % every == 0 or e.step == e.total_steps):
            losses = " ".join(f"{k}={v:.3f}" for k, v in e.logs.items() if k.startswith("loss"))
            print(f"[{label}] step {e.step}/{e.total_steps} {losses}", file=sys.stderr, flush=True)
        elif e.kind in ("start", "rollback"):
            print(f"[{label}] {e.kind} at step {e.step}/{e.total_steps}", file=sys.stderr, flush=True)

    return on_event


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.stage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=STEPS)
    p.add_argument("scenario")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--scenarios-dir", type=Path, default=SCENARIO_DIR)
    p.add_argument("--no-dagster", action="store_true", help="do not record the step in the Dagster instance")
    args = p.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    base = args.base_dir.resolve()
    try:
        summary = run_step(args.step, args.scenario, base_dir=base, scenarios_dir=args.scenarios_dir.resolve())
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    except Exception as e:  # a failed step: say which and why, exit non-zero
        print(f"{args.step}@{args.scenario} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"step": args.step, "scenario": args.scenario, **summary}), flush=True)
    if not args.no_dagster and os.environ.get("SCENARIO_GAN_DAGSTER_EVENTS", "").lower() != "off":
        record_in_dagster(args.step, args.scenario, base, summary)
    return 0


def record_in_dagster(step: str, name: str, base: Path, summary: dict) -> None:
    """Report the step to the Dagster instance; a failure to do so is a warning (the
    step's outputs are good and DVC has them), never a failed step."""
    entry_point = "dvc" if os.environ.get("DVC_STAGE") else "cli"
    try:
        from assets.common import report_materialization
        from pipelines.ui import prepare_home

        if not os.environ.get("DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str(prepare_home(base / ".dagster"))
        report_materialization(step, name, base, summary, entry_point)
    except Exception as e:  # noqa: BLE001
        print(f"warning: {step}@{name} succeeded but was not recorded in Dagster ({type(e).__name__}: {e})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
