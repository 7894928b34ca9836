"""The same training step from two entry points, side by side: a run launched in the
Dagster UI (``python -m assets.ui``: webserver, daemon and a run worker alive) and
``dvc repro``.

    python -m benchmarks.bench_entry_points                  # faces, 400 steps, 3 reps: ~8 min on 2 cores
    python -m benchmarks.bench_entry_points --steps 100 --reps 1 --out /tmp/ep.json

Setup: a git + DVC copy of the project (``tests/dvc_support.make_project``) with one
scenario (default ``faces``: its data, model and recipe, ``--steps`` training steps);
``dvc repro train@<s>`` once builds the inputs. Then, per repetition and in alternating
order:

- ``dvc``: ``dvc repro --force --single-item train@<s>`` in the copy;
- ``ui``: ``python -m assets.ui`` started once in the copy (``dagster dev``: webserver,
  daemon, code server), a run of the ``scenario_chain`` job for the ``generator`` asset of
  partition ``<s>`` submitted through its GraphQL API (what the UI's Materialize button
  sends); the daemon's run queue launches a run worker that trains.

The speed of each is the trainer's own ``images_per_s`` (``models/<s>/summary.json``:
images over the wall time of the training steps), so start-up and bookkeeping are out;
reported per variant (median) and as the median of per-repetition ratios ``ui / dvc``.
The JSON also records each run's thread settings (``torch_threads``,
``omp_wait_policy`` in the summary) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _summary(project: Path, scenario: str) -> dict[str, Any]:
    return json.loads((project / "models" / scenario / "summary.json").read_text())


def run(opts: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    import yaml

    from benchmarks.harness import loadavg, machine_info
    from tests.dvc_support import dvc, make_project
    from tests.ui_support import start_ui, stop_ui

    raw = yaml.safe_load((REPO / "scenarios" / f"{opts.scenario}.yaml").read_text())
    gan = raw.get("gan", {})
    gan = {**gan, "train": {**gan.get("train", {}), "steps": opts.steps, "checkpoint_every": opts.steps}}
    work = Path(tempfile.mkdtemp(prefix="bench-ep-", dir=opts.tmp))
    project = make_project(work / "project", {opts.scenario: {"gan": gan}})
    stage = f"train@{opts.scenario}"
    t0 = time.perf_counter()
    dvc(project, "repro", stage)
    setup_s = time.perf_counter() - t0
    ui = start_ui(work / "dagster-home", work / "ui.log", cwd=project)
    results: dict[str, list[dict[str, Any]]] = {"dvc": [], "ui": []}
    try:
        from dagster import AssetKey
        from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

        host, port = ui.url.rsplit(":", 1)
        client = DagsterGraphQLClient(host.split("//")[1], port_number=int(port))

        def via_ui() -> dict[str, Any]:
            run_id = client.submit_job_execution("scenario_chain", asset_selection=[AssetKey("generator")], tags={"dagster/partition": opts.scenario})
            deadline = time.monotonic() + opts.timeout
            while True:
                status = client.get_run_status(run_id).value
                if status in ("SUCCESS", "FAILURE", "CANCELED"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} still {status} after {opts.timeout} s:\n{ui.log_tail()}")
                time.sleep(1)
            if status != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {status}:\n{ui.log_tail()}")
            return _summary(project, opts.scenario)

        def via_dvc() -> dict[str, Any]:
            # as a user runs it: this process's environment (the tests' helper pins OMP_NUM_THREADS=1)
            env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
            p = subprocess.run([str(project / ".dvc-venv" / "bin" / "dvc"), "repro", "--force", "--single-item", stage], cwd=project, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"dvc repro failed:\n{p.stderr[-3000:]}")
            return _summary(project, opts.scenario)

        variants = {"dvc": via_dvc, "ui": via_ui}
        for rep in range(opts.reps):
            order = ["dvc", "ui"] if rep % 2 == 0 else ["ui", "dvc"]
            for name in order:
                s = variants[name]()
                results[name].append({k: s.get(k) for k in ("images_per_s", "wall_s", "steps", "torch_threads", "omp_wait_policy")})
                print(f"rep {rep + 1}/{opts.reps} {name}: {s.get('images_per_s'):.1f} images/s (load {loadavg()})", file=sys.stderr, flush=True)
    except DagsterGraphQLClientError as e:
        raise RuntimeError(f"the UI refused the run: {e}\n{ui.log_tail()}") from None
    finally:
        stop_ui(ui)
    ips = {k: [r["images_per_s"] for r in v] for k, v in results.items()}
    return {
        "benchmark": "entry_points",
        "machine": machine_info(),
        "loadavg_after": loadavg(),
        "settings": {"scenario": opts.scenario, "steps": opts.steps, "reps": opts.reps, "setup_s": round(setup_s, 1)},
        "images_per_s_median": {k: statistics.median(v) for k, v in ips.items()},
        "ratio_ui_over_dvc_median": statistics.median(u / d for u, d in zip(ips["ui"], ips["dvc"])),
        "runs": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_entry_points", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="faces")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--tmp", help="where the project copy goes (default: the system temp dir)")
    p.add_argument("--out")
    opts = p.parse_args(argv)
    res = run(opts)
    text = json.dumps(res, indent=2)
    if opts.out:
        Path(opts.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
