"""Run every benchmark and collect the results in one directory.

    python -m benchmarks.run_all --out-dir bench-results                  # all (quality takes ~25 min)
    python -m benchmarks.run_all --out-dir bench-results --skip-quality   # ~20 min on 2 busy cores
    python -m benchmarks.run_all --out-dir /tmp/b --quick                 # every script in smoke-test mode
    python -m benchmarks.run_all --out-dir bench-results --only ingest augment

Each benchmark runs in its own process (``python -m benchmarks.<script>``) with
``OMP_NUM_THREADS=1`` unless the environment sets it, and writes
``<out-dir>/<name>.json`` (its result) and ``<out-dir>/<name>.log`` (its table and
progress). ``<out-dir>/summary.json`` lists, for each benchmark, the command, the exit
status, the wall time and ``ok``, ``failed`` or ``skipped`` (with the reason): the GPU
benchmark is skipped where there is no CUDA device (with ``--quick`` it runs its CPU
smoke test instead). The exit status is 1 when any benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ORDER = ("ingest", "scale", "augment", "contamination", "train", "train_augment", "orchestration", "gpu", "quality", "verdict", "ablation", "privacy")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (asked in a subprocess: no torch import here)."""
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True, timeout=300, cwd=REPO)
        return out.stdout.strip().endswith("True")
    except (OSError, subprocess.SubprocessError):
        return False


def commands(out_dir: Path, quick: bool, cuda: bool, pool_dir: str | None) -> dict[str, tuple[list[str] | None, str | None]]:
    """name -> (argv after ``python -m``, or None; reason when skipped)."""
    j = {n: str(out_dir / f"{n}.json") for n in ORDER}
    q = ["--quick"] if quick else []
    ingest = ["benchmarks.bench_ingest", *q, "--out", j["ingest"]] + (["--pool-dir", pool_dir] if pool_dir else [])
    gpu: tuple[list[str] | None, str | None]
    if cuda:
        gpu = (["benchmarks.bench_gpu", *q, "--out", j["gpu"]], None)
    elif quick:
        gpu = (["benchmarks.bench_gpu", "--device", "cpu", "--quick", "--out", j["gpu"]], None)
    else:
        gpu = (None, "no CUDA device here (torch.cuda.is_available() is False); run `python -m benchmarks.bench_gpu` on a GPU machine")
    quality = ["benchmarks.bench_quality", "--json", j["quality"]]
    if quick:
        quality += ["--budgets", "3", "--variants", "seed-dcgan", "recipe", "--n-fake", "60", "--threads", "1"]
    else:
        quality += ["--budgets", "200", "600", "--threads", "1"]
    return {
        "ingest": (ingest, None),
        "scale": (["benchmarks.bench_scale", *q, "--out", j["scale"]], None),
        "augment": (["benchmarks.bench_augment", *q, "--out", j["augment"]], None),
        "contamination": (["benchmarks.bench_contamination", *q, "--out", j["contamination"]], None),
        "train": (["benchmarks.bench_train", *q, "--json", j["train"]], None),
        "train_augment": (["benchmarks.bench_train_augment", *q, "--out", j["train_augment"]], None),
        "orchestration": (["benchmarks.bench_orchestration", *q, "--out", j["orchestration"]], None),
        "gpu": gpu,
        "quality": (quality, None),
        "verdict": (["benchmarks.bench_verdict", *q, "--out", j["verdict"]], None),
        "ablation": (["benchmarks.bench_ablation", *q, "--out", j["ablation"]] + (["--scenarios", "faces", "--variants", "none", "both"] if quick else []), None),
        "privacy": (["benchmarks.bench_privacy", *q, "--out", j["privacy"]] + (["--epsilons", "inf", "8"] if quick else []), None),
    }


def run_one(name: str, argv: list[str], out_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", *argv]
    log_path = out_dir / f"{name}.log"
    json_path = out_dir / f"{name}.json"
    json_path.unlink(missing_ok=True)  # a result from an earlier run must not pass for this one
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    entry: dict[str, Any] = {"command": ["python", "-m", *argv], "exit_code": rc, "wall_s": round(wall, 1), "log": log_path.name}
    if rc == 0 and json_path.is_file():
        entry.update(status="ok", json=json_path.name)
    else:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        entry.update(status="failed", log_tail=tail)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True, help="directory for <name>.json, <name>.log and summary.json")
    p.add_argument("--quick", action="store_true", help="every benchmark in its smoke-test mode (seconds each)")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these")
    p.add_argument("--skip", nargs="+", choices=ORDER, default=[], help="do not run these")
    p.add_argument("--skip-quality", action="store_true", help="same as --skip quality (the quality benchmark trains 12 GANs)")
    p.add_argument("--pool-dir", help="passed to bench_ingest: keep its generated PNGs here and reuse them")
    a = p.parse_args(argv)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skip = set(a.skip) | ({"quality"} if a.skip_quality else set())
    names = [n for n in ORDER if (a.only is None or n in a.only) and n not in skip]
    cmds = commands(out_dir, a.quick, cuda_available() if "gpu" in names else False, a.pool_dir)
    summary: dict[str, Any] = {"quick": a.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": {}}
    for n in ORDER:
        if n not in names:
            summary["benchmarks"][n] = {"status": "skipped", "reason": "not selected (--only / --skip / --skip-quality)"}
            continue
        cmd, reason = cmds[n]
        if cmd is None:
            summary["benchmarks"][n] = {"status": "skipped", "reason": reason}
            print(f"{n}: skipped: {reason}", flush=True)
            continue
        print(f"{n}: python -m {' '.join(cmd)}", flush=True)
        entry = run_one(n, cmd, out_dir)
        summary["benchmarks"][n] = entry
        print(f"{n}: {entry['status']} in {entry['wall_s']} s" + ("" if entry["status"] == "ok" else f" (exit {entry['exit_code']}; see {out_dir / entry['log']})"), flush=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if any(e["status"] == "failed" for e in summary["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
