"""What the benchmarks share: the machine facts every report carries
(:func:`machine_info`, :func:`loadavg`), and for the quality benchmarks one scenario's
real pipeline steps, run once for the data (ingest, validate, ruler) and once per
variant of its file (augment, train, evaluate), each variant in a folder of its own with
the same ruler, so that every row is measured the same way.

    bench = ScenarioBench.prepare(raw, work / "faces", quick=False)   # raw: the scenario file as a dict
    row = bench.run("none", {**raw, "augmentation": ...}, keep_grids="grids/")
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers come from (no torch import: cheap for every benchmark)."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    git = None
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "numpy": __import__("numpy").__version__,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if k in os.environ},
        "git_commit": git,
    }


# Headline measures every row reports (from metrics/<scenario>.json).
MEASURES = ("fid_over_floor", "fid", "fid_floor", "precision", "recall", "c2st_accuracy", "sharpness_ratio", "near_copy_share", "membership_auc", "promote", "failed_criteria")


def load_raw(name: str, *, steps: int | None, threads: int, quick: bool) -> dict[str, Any]:
    """The shipped ``scenarios/<name>.yaml`` as a dict, with the benchmark's budget,
    thread count and (``quick``) a seconds-long ruler."""
    import yaml

    from pipelines.scenario import SCENARIO_DIR

    raw = yaml.safe_load((SCENARIO_DIR / f"{name}.yaml").read_text())
    train = raw.setdefault("gan", {}).setdefault("train", {})
    if steps:
        train["steps"] = steps
    train["num_threads"] = threads
    if quick:
        raw["evaluation"] = {**raw.get("evaluation", {}), "feature_steps": 20, "n_audit": 50}
    return raw


@dataclass
class ScenarioBench:
    name: str
    work: Path
    shared: Any  # ScenarioPaths of the data and the ruler every variant shares

    @classmethod
    def prepare(cls, raw: dict[str, Any], work: Path) -> "ScenarioBench":
        """Ingest, validate and build the ruler once, under ``work/_data``."""
        from pipelines.paths import Roots, ScenarioPaths
        from pipelines.scenario import parse_scenario
        from pipelines.steps.ingest import ingest
        from pipelines.steps.ruler import build_ruler
        from pipelines.steps.validate import require_passed, validate

        name = raw["name"]
        base = parse_scenario(raw, f"scenarios/{name}.yaml")
        shared = ScenarioPaths(name, Roots.under(work / "_data"))
        ingest(base, shared)
        require_passed(validate(base, shared))
        build_ruler(base, shared)
        return cls(name, work, shared)

    def run(self, label: str, raw: dict[str, Any], *, keep_grids: str | None = None) -> tuple[Any, dict[str, Any], float]:
        """Augment, train (CPU profile) and evaluate one variant of the scenario file in
        ``work/<label>``; returns (train result, evaluation metrics, training wall s)."""
        from pipelines.paths import Roots, ScenarioPaths
        from pipelines.scenario import parse_scenario
        from pipelines.steps.augment import augment
        from pipelines.steps.evaluate import evaluate
        from pipelines.steps.train import train

        sc = parse_scenario(raw, f"scenarios/{self.name}.yaml")
        paths = ScenarioPaths(self.name, Roots.under(self.work / label))
        shutil.copytree(self.shared.validated, paths.validated)
        shutil.copytree(self.shared.ruler, paths.ruler)
        augment(sc, paths)
        t0 = time.perf_counter()
        r = train(sc, paths, progress=False, profile="cpu")
        wall = time.perf_counter() - t0
        m = evaluate(sc, paths).metrics
        if keep_grids:
            grids = Path(keep_grids)
            grids.mkdir(parents=True, exist_ok=True)
            shutil.copy(paths.evaluation / "samples.png", grids / f"{self.name}-{label}.png")
        return r, m, wall


def verdict_text(row: dict[str, Any]) -> str:
    return "promote" if row["promote"] else "refuse: " + ", ".join(row["failed_criteria"])


def common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="training steps for every row (default: the scenario's own budget)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)), help="torch threads (default $OMP_NUM_THREADS or 2)")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary directory)")
    p.add_argument("--keep-grids", help="copy each row's samples.png here as <scenario>-<row>.png")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 training steps, a 20-step ruler")


def run_and_report(opts: argparse.Namespace, key: str, settings: dict[str, Any], body, markdown) -> int:
    """Run ``body(work_dir, log)`` with ``opts.threads`` torch threads in ``opts.workdir``
    (or a temporary folder); print ``markdown(result)`` and write the result JSON to
    ``opts.out``: ``{settings, machine, loadavg_before/after, wall_s, <key>: body's result}``."""
    import torch

    from benchmarks.report import write_result

    torch.set_num_threads(opts.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = body(Path(opts.workdir) if opts.workdir else Path(tmp), log)
    res = {
        "settings": settings,
        "machine": machine_info(),
        "loadavg_before": round(load0, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - t0, 1),
        key: out,
    }
    print(markdown(res))
    write_result(opts.out, res)
    return 0
