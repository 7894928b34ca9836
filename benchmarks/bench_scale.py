"""Scale: training from on-disk shards at 1k and 1M images, the augment step's memory at
growing N, and what DVC stores again when 10 images join a 100k-image dataset.

    python -m benchmarks.bench_scale                               # 1k / 100k, ~6 min on 2 cores
    python -m benchmarks.bench_scale --train-sizes 1000 1000000    # the 1M-image run (3 GiB of shards)
    python -m benchmarks.bench_scale --quick --out /tmp/scale.json # smoke test, < 1 min

Sections (each measurement a fresh Python process with the imports done before timing;
peak memory is the kernel's peak RSS counter, reset before the work, as in
``benchmarks.bench_ingest``):

- ``train``: :class:`gan_core.trainer.Trainer` steps (the digits recipe at 32x32 RGB:
  batch 64, width 32, spectral norm, DiffAugment, EMA) reading their batches from a
  sharded dataset of N images (:mod:`gan_core.shards`, positional reads per batch) and,
  at the smallest N, from the same images in memory (the old path). Reported: images/s,
  peak RSS growth, and the ratio of images/s at the largest N over the smallest; the
  variants of one repetition run back to back, order reversed every repetition. The
  data are noise images (the trainer's speed does not depend on what they show) written
  once per size with :class:`gan_core.shards.ShardWriter`.
- ``augment``: :func:`pipelines.steps.augment.augment` with one offline copy of every
  image (horizontal flip), so the step reads N and writes 2N images: seconds, images/s
  written, peak RSS growth per size.
- ``dvc``: a 100k-image dataset (32x32 RGB) tracked with ``dvc add``; 10 new images are
  inserted (in file order, in the middle) and the dataset rewritten; then ``dvc add``
  again. Reported: shards written / changed / total, and the new objects and bytes in
  DVC's cache (what ``dvc push`` would upload). Needs the ``dvc`` of ``.dvc-venv``
  (``--dvc`` to name another), skipped with a note when it is missing.

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.bench_ingest import Meter
from benchmarks.harness import loadavg, machine_info

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"train_sizes": [1000, 100_000], "augment_sizes": [10_000, 100_000], "dvc_size": 100_000, "reps": 3, "steps": 40}
QUICK = {"train_sizes": [300, 3000], "augment_sizes": [500, 2000], "dvc_size": 20000, "reps": 1, "steps": 6}
SIDE = 32


def write_noise(folder: Path, n: int, side: int = SIDE, seed: int = 0) -> Path:
    """``n`` noise images (side x side RGB) as a sharded dataset, written a block at a time."""
    from gan_core.shards import ShardWriter

    if (folder / "index.json").is_file() and json.loads((folder / "index.json").read_text())["shape"][0] == n:
        return folder
    rng = np.random.default_rng(seed)
    with ShardWriter(folder, (side, side, 3)) as w:
        for start in range(0, n, 8192):
            w.add(rng.integers(0, 256, (min(8192, n - start), side, side, 3), dtype=np.uint8))
        w.close()
    return folder


# --------------------------------------------------------------------------- workers
def _train_config(steps: int):
    from gan_core.config import GANConfig

    return GANConfig.model_validate({
        "model": {"arch": "dcgan", "resolution": SIDE, "channels": 3, "width": 32, "spectral_norm": True},
        "train": {"steps": steps, "batch_size": 64, "checkpoint_every": 10**6, "log_every": 10**6, "diffaug": "color,translation,cutout", "ema_half_life_images": 10000, "seed": 0},
    })


def worker_train(job: dict[str, Any]) -> dict[str, Any]:
    from gan_core.trainer import Trainer
    from gan_core.shards import open_images

    data: Any = open_images(job["folder"])
    if job["memory"]:
        data = data.load()
    cfg = _train_config(job["steps"] + 2)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, data, out, progress=False)
        tr.train_step(1)  # warm-up: first-step allocations and kernel selection
        tr.train_step(2)
        with Meter() as m:
            for step in range(3, job["steps"] + 3):
                tr.train_step(step)
    n = job["steps"] * 64
    return {**m.as_dict("train"), "images_per_s": round(n / m.wall_s, 1), "n": len(data)}


def worker_augment(job: dict[str, Any]) -> dict[str, Any]:
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import parse_scenario
    from pipelines.steps.augment import augment

    sc = parse_scenario({
        "name": "bench", "data": {"source": "folder"}, "image": {"size": SIDE, "channels": 3},
        "augmentation": {"offline_copies": 1, "invariances": ["horizontal_flip"], "transforms": [{"name": "HorizontalFlip", "params": {"p": 1.0}}]},
    })
    paths = ScenarioPaths("bench", Roots.under(job["base"]))
    with Meter() as m:
        res = augment(sc, paths)
    return {**m.as_dict("augment"), "images_written_per_s": round(res.n_images / m.wall_s, 1), "n_written": res.n_images}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"train": worker_train, "augment": worker_augment}


def _worker_main(kind: str, job_json: str) -> int:
    import gan_core.shards  # noqa: F401 - imports are not measured

    if kind == "train":
        import gan_core.trainer  # noqa: F401
    else:
        import albumentations  # noqa: F401

        import pipelines.steps.augment  # noqa: F401
    print("RESULT " + json.dumps(WORKERS[kind](json.loads(job_json))), flush=True)
    return 0


def run_worker(kind: str, job: dict[str, Any], threads: int) -> dict[str, Any]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", "--worker", kind, "--job", json.dumps(job)], cwd=REPO, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"bench_scale worker {kind} failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(line[7:])


# --------------------------------------------------------------------------- sections
def bench_train(opts: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    sizes = sorted(set(opts.train_sizes))
    folders = {n: write_noise(tmp / f"train{n}", n) for n in sizes}
    variants = [("memory", sizes[0])] + [("shards", n) for n in sizes]
    runs: dict[str, list[dict[str, Any]]] = {f"{v}@{n}": [] for v, n in variants}
    for rep in range(opts.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v, n in order:
            r = run_worker("train", {"folder": str(folders[n]), "memory": v == "memory", "steps": opts.steps}, opts.threads)
            runs[f"{v}@{n}"].append(r)
            log(f"  train {v}@{n}: {r['images_per_s']} img/s, peak +{r['train_peak_growth_mb']} MB")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    table = {k: {"images_per_s": med([r["images_per_s"] for r in rs]), "peak_growth_mb": med([r["train_peak_growth_mb"] for r in rs]), "runs": rs} for k, rs in runs.items()}
    lo, hi = f"shards@{sizes[0]}", f"shards@{sizes[-1]}"
    ratios = [b["images_per_s"] / a["images_per_s"] for a, b in zip(runs[lo], runs[hi])]
    vs_mem = [b["images_per_s"] / a["images_per_s"] for a, b in zip(runs[f"memory@{sizes[0]}"], runs[lo])]
    return {
        "sizes": sizes, "steps": opts.steps, "batch": 64, "threads": opts.threads, "variants": table,
        "ratio_largest_over_smallest": round(med(ratios), 3),
        "ratio_shards_over_memory_smallest": round(med(vs_mem), 3),
        "shard_bytes_largest": sum(p.stat().st_size for p in folders[sizes[-1]].iterdir()),
        "shards_largest": len(json.loads((folders[sizes[-1]] / "index.json").read_text())["shards"]),
    }


def bench_augment(opts: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    out = {}
    for n in sorted(set(opts.augment_sizes)):
        base = tmp / f"aug{n}"
        validated = base / "data" / "bench" / "validated"
        write_noise(validated / "images", n, seed=1)
        (validated / "report.json").write_text(json.dumps({"passed": True}))
        r = run_worker("augment", {"base": str(base)}, opts.threads)
        log(f"  augment n={n}: {r['augment_s']} s, {r['images_written_per_s']} img/s written, peak +{r['augment_peak_growth_mb']} MB")
        out[str(n)] = r
        shutil.rmtree(base)
    return out


def _dvc_cache_stats(cache: Path) -> tuple[int, int]:
    files = [p for p in cache.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench_dvc(opts: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from gan_core.shards import ShardWriter, open_images

    dvc = opts.dvc or str(REPO / ".dvc-venv" / "bin" / "dvc")
    if not Path(dvc).exists() and not shutil.which(dvc):
        return {"skipped": f"no dvc at {dvc} (python3 -m venv .dvc-venv && .dvc-venv/bin/pip install dvc)"}
    n = opts.dvc_size
    proj = tmp / "dvcproj"
    proj.mkdir()
    run = lambda *a: subprocess.run([dvc, *a], cwd=proj, check=True, capture_output=True, text=True)  # noqa: E731
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    run("init", "-q")
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8)
    data = proj / "images"
    with ShardWriter(data, (SIDE, SIDE, 3)) as w:
        w.add(base)
        w.close()
    t0 = time.perf_counter()
    run("add", "-q", "images")
    first_add_s = time.perf_counter() - t0
    before_files = {s["file"] for s in open_images(data)._index["shards"]}
    c0 = _dvc_cache_stats(proj / ".dvc" / "cache")
    new = rng.integers(0, 256, (10, SIDE, SIDE, 3), dtype=np.uint8)
    at = n // 2
    t0 = time.perf_counter()
    with ShardWriter(data, (SIDE, SIDE, 3)) as w:
        w.add(base[:at])
        w.add(new)
        w.add(base[at:])
        w.close()
        written = len(w._new)
    rewrite_s = time.perf_counter() - t0
    after_files = {s["file"] for s in open_images(data)._index["shards"]}
    t0 = time.perf_counter()
    run("add", "-q", "images")
    second_add_s = time.perf_counter() - t0
    c1 = _dvc_cache_stats(proj / ".dvc" / "cache")
    total_bytes = sum((data / f).stat().st_size for f in after_files)
    res = {
        "n_images": n, "inserted": 10, "inserted_at": at, "shards_before": len(before_files), "shards_after": len(after_files),
        "shard_files_written": written, "shards_changed": len(after_files - before_files),
        "dvc_new_cache_objects": c1[0] - c0[0], "dvc_new_cache_bytes": c1[1] - c0[1], "dataset_bytes": total_bytes,
        "share_of_bytes_stored_again": round((c1[1] - c0[1]) / total_bytes, 4),
        "first_dvc_add_s": round(first_add_s, 2), "rewrite_s": round(rewrite_s, 2), "second_dvc_add_s": round(second_add_s, 2),
    }
    log(f"  dvc: {res['shards_changed']} of {res['shards_after']} shards changed, {res['dvc_new_cache_objects']} new cache objects, "
        f"{res['dvc_new_cache_bytes'] / 2**20:.1f} of {total_bytes / 2**20:.0f} MiB stored again")
    return res


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    t0 = time.perf_counter()
    out: dict[str, Any] = {"machine": machine_info(), "loadavg_before": loadavg(), "command": "python -m benchmarks.bench_scale " + " ".join(opts.argv)}
    with tempfile.TemporaryDirectory(prefix="bench_scale-", dir=opts.tmp) as tmp:
        for name, fn in (("train", bench_train), ("augment", bench_augment), ("dvc", bench_dvc)):
            if name in opts.sections:
                log(f"# {name}")
                out[name] = fn(opts, Path(tmp), log)
    out["loadavg_after"] = loadavg()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--train-sizes", type=int, nargs="+")
    p.add_argument("--augment-sizes", type=int, nargs="+")
    p.add_argument("--dvc-size", type=int)
    p.add_argument("--reps", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sections", nargs="+", default=["train", "augment", "dvc"], choices=["train", "augment", "dvc"])
    p.add_argument("--dvc", help="the dvc executable (default .dvc-venv/bin/dvc)")
    p.add_argument("--tmp", help="where the datasets are written (default: the system temp dir)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    for k, v in (QUICK if opts.quick else DEFAULTS).items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    opts.argv = argv
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse(argv)
    if opts.worker:
        return _worker_main(opts.worker, opts.job)
    res = run(opts)
    text = json.dumps(res, indent=2)
    if opts.out:
        Path(opts.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
