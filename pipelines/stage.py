"""Run one pipeline step for one scenario outside Dagster — the command of every DVC
stage (``cmd: python -m pipelines.stage train faces``).

    python -m pipelines.stage params faces       # data/faces/params.yaml (the resolved parameters)
    python -m pipelines.stage ingest faces
    python -m pipelines.stage validate faces     # exit 1 when a blocking expectation fails
    python -m pipelines.stage augment faces
    python -m pipelines.stage ruler faces
    python -m pipelines.stage train faces
    python -m pipelines.stage evaluate faces

The steps and their functions are those of ``pipelines/registry.py``: the same function
the Dagster asset calls, on the same paths (``pipelines/paths.py``), under the same
per-scenario lock, so a step run here and a materialization from the UI never write the
same scenario at once. Prints a one-line JSON summary; exit codes: 0 done, 1 the step
failed (the message says which and why), 2 the scenario file cannot be used.

Domain layer: this command imports no Dagster. Recording the step in the Dagster
instance is the next command of each DVC stage (``python -m assets.record``), and part
of ``scenario-gan stage``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.registry import STEPS, step as registry_step
from pipelines.scenario import SCENARIO_DIR, ScenarioError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_step(step: str, name: str, *, base_dir: Path, scenarios_dir: Path) -> dict[str, Any]:
    """Run ``step`` for scenario ``name``; returns a small JSON-able summary. Raises on failure."""
    import importlib

    from pipelines.locks import step_lock
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import load_project, load_scenario

    st = registry_step(step)
    scenario = load_scenario(scenarios_dir / f"{name}.yaml")
    paths = ScenarioPaths(name, Roots.under(base_dir))
    kwargs: dict[str, Any] = {}
    if step == "train":
        # A terminal gets the trainer's progress bar; a log (CI, nohup) a line per tenth.
        kwargs = {"on_event": None if sys.stderr.isatty() else _log_progress(f"train@{name}"), "profile": load_project(scenarios_dir).profile}
    with step_lock(paths, base_dir):
        result = st.function_object()(scenario, paths, **kwargs)
    if st.require:
        getattr(importlib.import_module(st.module), st.require)(result)
    return summary(result)


def summary(result: Any) -> dict[str, Any]:
    """The scalar fields of a step's result (and of its ``metrics``), JSON-able."""
    out: dict[str, Any] = {}
    items = dataclasses.asdict(result).items() if dataclasses.is_dataclass(result) else vars(result).items()
    for k, v in items:
        if k == "metrics" and isinstance(v, dict):
            out.update({m: x for m, x in v.items() if isinstance(x, (str, int, float, bool)) or x is None})
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, Path):
            out[k] = os.path.relpath(v)
    return out


def _log_progress(label: str):
    def on_event(e) -> None:
        every = max(1, e.total_steps // 10)
        if e.kind == "step" and (e.step % every == 0 or e.step == e.total_steps):
            losses = " ".join(f"{k}={v:.3f}" for k, v in e.logs.items() if k.startswith("loss"))
            print(f"[{label}] step {e.step}/{e.total_steps} {losses}", file=sys.stderr, flush=True)
        elif e.kind in ("start", "rollback"):
            print(f"[{label}] {e.kind} at step {e.step}/{e.total_steps}", file=sys.stderr, flush=True)

    return on_event


def parser(prog: str = "python -m pipelines.stage") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=list(STEPS))
    p.add_argument("scenario")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--scenarios-dir", type=Path, default=SCENARIO_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        out = run_step(args.step, args.scenario, base_dir=args.base_dir.resolve(), scenarios_dir=args.scenarios_dir.resolve())
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    except Exception as e:  # a failed step: say which and why, exit non-zero
        print(f"{args.step}@{args.scenario} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"step": args.step, "scenario": args.scenario, **out}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
