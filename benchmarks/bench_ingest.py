"""Ingestion + validation throughput and peak memory, against a plain PIL decode loop.

    python -m benchmarks.bench_ingest                                  # 1k, 10k, 100k files (~9 min on 2 busy cores)
    python -m benchmarks.bench_ingest --sizes 1000 10000 --reps 5 --out ingest.json
    python -m benchmarks.bench_ingest --quick --out /tmp/ingest.json   # smoke test, ~12 s
    python -m benchmarks.bench_ingest --sizes 100000 --reps 1 --validate-fresh   # + validation alone, in a fresh process

Data: ``N`` small PNG files (default 32x32 RGB), random crops of real photos and
textures shipped with scikit-image (astronaut, coffee, chelsea, rocket; brick, grass,
gravel as grey RGB), at scale 1 or 1/2, plus Gaussian noise (sigma 4) so that no two
files are alike. They are generated once into a pool (``--pool-dir`` keeps and reuses
it), nested 1,000 to a folder, and every size gets its own folder of hard links to
the first ``N`` files (copies where links are not possible).

What is compared, on the same files, each run in a fresh process:

- ``pipeline``  :func:`pipelines.steps.ingest.ingest` on a folder scenario of
  ``--target`` px RGB (decode, EXIF, mode, square fit, resize, per-image table with
  hashes and statistics, quarantine, the ``images/`` shards and ``table.csv`` written atomically),
  then :func:`pipelines.steps.validate.validate` with great-expectations 1.x (row count,
  quarantined share, unique ``sha256``, ``std`` between 0.02 and 1) over that table.
- ``pil``       the loop anyone would write first: walk the folder in the same order,
  ``Image.open`` -> ``convert("RGB")`` -> ``resize((t, t), LANCZOS)`` -> ``np.asarray``
  into a preallocated ``(N, t, t, 3)`` uint8 array. No table, no hashes, no output file.

With the default sizes (32 px files, ``--target 32``) both sides decode the same PNGs
to the same pixels: the JSON records whether the two arrays are byte-identical.

Method: for every size, ``--reps`` repetitions, each running both variants in turn
(pipeline first in odd repetitions, PIL first in even ones, so a burst of load from
other processes lands on both). Each measurement is a fresh Python process with
``OMP_NUM_THREADS=1`` (``--omp-threads inherit``: as this shell has it) that imports
everything first (great-expectations alone takes seconds) and then times only the
work. Reported per size: median images/s, median CPU microseconds per image (a second
opinion that other processes barely disturb), and the
median over repetitions of the per-repetition ratio ``pipeline images/s / PIL images/s``,
and ingestion's wall time split into the decoding pass (read, decode, describe, write
the shards) and what follows it (the comparisons across images, the outlier scores, the
table).

Memory: the **peak resident set size (RSS) of the measuring process**, as the kernel
counts it (``VmHWM``), minus its RSS just before the work starts (after the imports).
The peak counter is reset before each step by writing ``5`` to
``/proc/self/clear_refs`` (Linux); where that is not possible the imports' own peak is
included and the JSON says so. This counts every allocation (numpy, Pillow, pandas,
great-expectations), not only Python objects as ``tracemalloc`` would. Validation's
figure is on top of whatever ingestion left in the process (freed memory the allocator
keeps), so it is a lower bound. The parent also records each worker's whole-life peak
(``os.wait4`` ``ru_maxrss``: imports, both steps and the check that reloads
``images.npz``).

Scaling: microseconds per image at the largest size over the smallest (``1.0`` = cost
exactly linear in ``N``) and peak memory growth per image. Ingestion returns one
``(N, t, t, C)`` array, so its memory necessarily grows with ``N``; what matters is the
growth per image against the ``t * t * C`` bytes each image adds to the output.

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary that
``--out`` writes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "bench"
POOL_FORMAT = "bench_ingest.pool/2"
FILES_PER_DIR = 1000
NOISE_SIGMA = 4.0
LINEAR_TOLERANCE = 1.25
"""Cost counts as linear in N when microseconds per image at the largest size are at
most this multiple of those at the smallest."""

DEFAULTS = {"sizes": [1000, 10_000, 100_000], "reps": 3, "side": 32, "target": 32}
QUICK = {"sizes": [100, 300], "reps": 1, "side": 32, "target": 32}
VARIANTS = ("pipeline", "pil")


# --------------------------------------------------------------------------- data
def _sources() -> list[np.ndarray]:
    """Real RGB images shipped with scikit-image, each at scale 1 and 1/2."""
    import skimage.data
    from PIL import Image

    rgb = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    grey = [skimage.data.brick(), skimage.data.grass(), skimage.data.gravel()]
    imgs = [np.ascontiguousarray(a[..., :3]) for a in rgb] + [np.repeat(g[..., None], 3, axis=2) for g in grey]
    out = []
    for a in imgs:
        out.append(a)
        h, w = a.shape[:2]
        out.append(np.asarray(Image.fromarray(a).resize((w // 2, h // 2), Image.Resampling.LANCZOS)))
    return out


def pool_file(pool: Path, i: int) -> Path:
    return pool / f"d{i // FILES_PER_DIR:03d}" / f"{i:06d}.png"


def make_pool(pool: Path, n: int, side: int, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """At least ``n`` distinct ``side`` x ``side`` RGB PNGs under ``pool`` (reused when a
    pool made with the same settings already holds enough files)."""
    from PIL import Image

    marker = pool / "pool.json"
    meta = {"format": POOL_FORMAT, "side": side, "seed": seed}
    have = 0
    if marker.is_file():
        old = json.loads(marker.read_text())
        if {k: old.get(k) for k in meta} == meta:
            have = int(old.get("n", 0))
        else:
            shutil.rmtree(pool)
    if have >= n:
        return pool
    t0 = time.perf_counter()
    sources = _sources()
    rng = np.random.default_rng([seed, have])
    chunk = 2000
    for start in range(have, n, chunk):
        stop = min(n, start + chunk)
        which = rng.integers(0, len(sources), stop - start)
        noise = rng.normal(0.0, NOISE_SIGMA, (stop - start, side, side, 3))
        crops = np.empty((stop - start, side, side, 3), np.float64)
        for k in range(stop - start):
            src = sources[which[k]]
            y = int(rng.integers(0, src.shape[0] - side + 1))
            x = int(rng.integers(0, src.shape[1] - side + 1))
            crops[k] = src[y : y + side, x : x + side]
        crops = np.clip(crops + noise, 0, 255).round().astype(np.uint8)
        for k, i in enumerate(range(start, stop)):
            path = pool_file(pool, i)
            if k == 0 or i % FILES_PER_DIR == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(crops[k], "RGB").save(buf, "PNG")
            path.write_bytes(buf.getvalue())
    marker.write_text(json.dumps({**meta, "n": n}))
    log(f"  pool: {n - have} PNGs of {side}x{side} written in {time.perf_counter() - t0:.1f} s")
    return pool


def make_folder(pool: Path, base: Path, n: int) -> Path:
    """``base/data/bench/raw`` holding links to the first ``n`` pool files; returns ``base``."""
    raw = base / "data" / SCENARIO / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    for i in range(n):
        src, dst = pool_file(pool, i), raw / pool_file(pool, i).relative_to(pool)
        if i % FILES_PER_DIR == 0:
            dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return base


# --------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_bytes() -> int:
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Wall time, CPU time and peak RSS growth of one block of work."""

    def __enter__(self) -> "Meter":
        self.reset_ok = reset_peak()
        self.rss0 = rss_bytes() or peak_bytes()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_s = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.c0
        self.peak = peak_bytes()
        self.growth = max(0, self.peak - self.rss0)

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_s": round(self.wall_s, 4),
            f"{prefix}_cpu_s": round(self.cpu_s, 4),
            f"{prefix}_rss_before_mb": round(self.rss0 / 2**20, 1),
            f"{prefix}_peak_growth_mb": round(self.growth / 2**20, 2),
            f"{prefix}_peak_reset": self.reset_ok,
        }


# --------------------------------------------------------------------------- workers
def _scenario(target: int, channels: int = 3):
    from pipelines.scenario import parse_scenario

    return parse_scenario({
        "name": SCENARIO,
        "data": {"source": "folder"},
        "image": {"size": target, "channels": channels},
        "validation": {
            "min_images": 16,
            "expectations": [
                {"expectation": "expect_column_values_to_be_unique", "kwargs": {"column": "sha256"}},
                {"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "std", "min_value": 0.02, "max_value": 1.0}},
            ],
        },
    })


def worker_pipeline(job: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.io import load_images
    from pipelines.steps.ingest import ingest
    from pipelines.steps.validate import validate

    sc = _scenario(job["target"])
    paths = ScenarioPaths(SCENARIO, Roots.under(job["base"]))
    if job.get("decode_workers"):
        os.environ["SCENARIO_GAN_DECODE_WORKERS"] = str(job["decode_workers"])
    with Meter() as m_ing:
        res = ingest(sc, paths)
    # The decode processes are this process's children (spawned, joined): their peak.
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    with Meter() as m_val:
        val = validate(sc, paths)
    images = load_images(res.images_path)
    return {
        **m_ing.as_dict("ingest"), **m_val.as_dict("validate"),
        "ingest_decode_s": round(res.decode_s, 4), "ingest_after_decode_s": round(m_ing.wall_s - res.decode_s, 4),
        "n_images": res.n_images, "n_quarantined": res.n_quarantined, "validation_passed": val.passed,
        "output_shape": list(images.shape), "pixels_sha256": hashlib.sha256(np.ascontiguousarray(images)).hexdigest(),
        "images_npz_bytes": sum(p.stat().st_size for p in res.images_path.iterdir()),
        "decode_worker_peak_rss_mb": round(children_peak / 2**20, 1),
    }


def worker_pil(job: dict[str, Any]) -> dict[str, Any]:
    import hashlib

    from PIL import Image

    t = job["target"]
    raw = Path(job["base"]) / "data" / SCENARIO / "raw"
    with Meter() as m:
        files: list[bytes] = []
        for dirpath, _dirs, names in os.walk(os.fsencode(raw)):
            files += [os.path.join(dirpath, f) for f in names]
        files.sort()
        out = np.empty((len(files), t, t, 3), np.uint8)
        for i, f in enumerate(files):
            with Image.open(f) as im:
                out[i] = np.asarray(im.convert("RGB").resize((t, t), Image.Resampling.LANCZOS))
    return {**m.as_dict("decode"), "n_images": len(files), "output_shape": list(out.shape), "pixels_sha256": hashlib.sha256(out).hexdigest()}


PASSING_CHECKS = [
    {"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "outlier_score", "max_value": 1000.0}, "on_failure": "set_aside"},
    {"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "std", "min_value": 0.0, "max_value": 1.0}},
    {"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "mean", "min_value": 0.0, "max_value": 1.0}, "on_failure": "warn"},
]
"""``--validate-fresh``'s second expectation set: row-by-row checks every image passes."""


def worker_validate(job: dict[str, Any]) -> dict[str, Any]:
    """Validation alone, in a process that has not ingested (so its peak is not hidden in
    memory ingestion freed), over the folder a pipeline job ingested: the benchmark's
    expectations, then :data:`PASSING_CHECKS`."""
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import parse_scenario
    from pipelines.steps.validate import validate

    out = {}
    base = _scenario(job["target"])
    for name, sc in (("benchmark", base), ("passing", parse_scenario({**base.model_dump(), "validation": {"min_images": 16, "expectations": PASSING_CHECKS}}))):
        with Meter() as m:
            res = validate(sc, ScenarioPaths(SCENARIO, Roots.under(job["base"])))
        out[name] = {**m.as_dict("validate"), "passed": res.passed, "n_kept": res.n_kept}
    return out


WORKERS = {"pipeline": worker_pipeline, "pil": worker_pil, "validate": worker_validate}


def _worker_main(variant: str, jobs_json: str) -> int:
    if variant in ("pipeline", "validate"):  # imports are not part of the measurement
        import great_expectations  # noqa: F401
        import pandas  # noqa: F401

        import gan_core.checkpoint  # noqa: F401
        import pipelines.steps.ingest  # noqa: F401
        import pipelines.steps.validate  # noqa: F401
    import PIL.Image  # noqa: F401

    results = [WORKERS[variant](job) for job in json.loads(jobs_json)]
    print("RESULT " + json.dumps(results), flush=True)
    return 0


def run_worker(variant: str, jobs: list[dict[str, Any]], omp_threads: str = "1") -> tuple[list[dict[str, Any]], int]:
    """Run ``jobs`` in a fresh process; returns their results and the process's own
    peak RSS in bytes (``ru_maxrss`` from ``os.wait4`` on that very child).
    ``omp_threads`` is its ``OMP_NUM_THREADS``; ``"inherit"`` leaves this process's
    environment as it is (unset, as in a user's shell that runs ``dvc repro``)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if omp_threads != "inherit":
        env["OMP_NUM_THREADS"] = omp_threads
    cmd = [sys.executable, "-m", "benchmarks.bench_ingest", "--worker", variant, "--jobs", json.dumps(jobs)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"bench_ingest worker {variant!r} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"bench_ingest worker {variant!r} printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return json.loads(line[len("RESULT ") :]), usage.ru_maxrss * 1024


# --------------------------------------------------------------------------- run
from benchmarks.harness import loadavg, machine_info  # noqa: E402


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _summarize(n: int, target: int, reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    pipe = [r["pipeline"] for r in reps]
    pil = [r["pil"] for r in reps]
    out_bytes = n * target * target * 3
    ing_ips = [n / p["ingest_s"] for p in pipe]
    tot_ips = [n / (p["ingest_s"] + p["validate_s"]) for p in pipe]
    pil_ips = [n / q["decode_s"] for q in pil]
    ing_growth = _median([p["ingest_peak_growth_mb"] for p in pipe])
    pil_growth = _median([q["decode_peak_growth_mb"] for q in pil])
    return {
        "n_files": n,
        "output_mb": round(out_bytes / 2**20, 2),
        "output_bytes_per_image": target * target * 3,
        "pipeline": {
            "ingest_images_per_s": round(_median(ing_ips), 1),
            "ingest_images_per_s_min_max": [round(min(ing_ips), 1), round(max(ing_ips), 1)],
            "validate_rows_per_s": round(_median([n / p["validate_s"] for p in pipe]), 1),
            "validate_s": round(_median([p["validate_s"] for p in pipe]), 3),
            "ingest_decode_s": round(_median([p["ingest_decode_s"] for p in pipe]), 3),
            "ingest_after_decode_s": round(_median([p["ingest_after_decode_s"] for p in pipe]), 3),
            "ingest_plus_validate_images_per_s": round(_median(tot_ips), 1),
            "ingest_cpu_us_per_image": round(_median([p["ingest_cpu_s"] / n * 1e6 for p in pipe]), 1),
            "ingest_wall_us_per_image": round(_median([p["ingest_s"] / n * 1e6 for p in pipe]), 1),
            "ingest_peak_growth_mb": ing_growth,
            "ingest_peak_growth_bytes_per_image": round(ing_growth * 2**20 / n),
            "ingest_peak_growth_over_output": round(ing_growth * 2**20 / out_bytes, 2),
            "validate_peak_growth_mb": _median([p["validate_peak_growth_mb"] for p in pipe]),
            "rss_before_mb": _median([p["ingest_rss_before_mb"] for p in pipe]),
            "worker_peak_rss_mb": _median([p["worker_peak_rss_mb"] for p in pipe]),
            "decode_worker_peak_rss_mb": _median([p.get("decode_worker_peak_rss_mb", 0.0) for p in pipe]),
            "images_npz_mb": round(pipe[0]["images_npz_bytes"] / 2**20, 2),
            "n_images": pipe[0]["n_images"],
            "n_quarantined": pipe[0]["n_quarantined"],
            "validation_passed": all(p["validation_passed"] for p in pipe),
        },
        "pil": {
            "images_per_s": round(_median(pil_ips), 1),
            "images_per_s_min_max": [round(min(pil_ips), 1), round(max(pil_ips), 1)],
            "cpu_us_per_image": round(_median([q["decode_cpu_s"] / n * 1e6 for q in pil]), 1),
            "wall_us_per_image": round(_median([q["decode_s"] / n * 1e6 for q in pil]), 1),
            "peak_growth_mb": pil_growth,
            "peak_growth_bytes_per_image": round(pil_growth * 2**20 / n),
            "rss_before_mb": _median([q["decode_rss_before_mb"] for q in pil]),
            "worker_peak_rss_mb": _median([q["worker_peak_rss_mb"] for q in pil]),
        },
        "ratio_ingest_vs_pil": round(_median([i / p for i, p in zip(ing_ips, pil_ips)]), 3),
        "ratio_ingest_plus_validate_vs_pil": round(_median([i / p for i, p in zip(tot_ips, pil_ips)]), 3),
        "cpu_ratio_ingest_vs_pil": round(_median([q["decode_cpu_s"] / p["ingest_cpu_s"] for p, q in zip(pipe, pil)]), 3),
        "pixels_identical": all(p["pixels_sha256"] == q["pixels_sha256"] for p, q in zip(pipe, pil)),
        "peak_reset_worked": all(p["ingest_peak_reset"] and q["decode_peak_reset"] for p, q in zip(pipe, pil)),
    }


def _scaling(sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ns = sorted(sizes, key=int)
    if len(ns) < 2:
        return {"sizes": ns, "note": "one size only: no scaling figure"}
    lo, hi = sizes[ns[0]], sizes[ns[-1]]
    cpu_growth = hi["pipeline"]["ingest_cpu_us_per_image"] / lo["pipeline"]["ingest_cpu_us_per_image"]
    wall_growth = hi["pipeline"]["ingest_wall_us_per_image"] / lo["pipeline"]["ingest_wall_us_per_image"]
    pil_growth = hi["pil"]["cpu_us_per_image"] / lo["pil"]["cpu_us_per_image"]
    return {
        "sizes": [int(n) for n in ns],
        "ingest_cpu_us_per_image": {n: sizes[n]["pipeline"]["ingest_cpu_us_per_image"] for n in ns},
        "ingest_cpu_per_image_largest_over_smallest": round(cpu_growth, 3),
        "ingest_wall_per_image_largest_over_smallest": round(wall_growth, 3),
        "pil_cpu_per_image_largest_over_smallest": round(pil_growth, 3),
        "ingest_cost_linear": cpu_growth <= LINEAR_TOLERANCE,
        "linear_tolerance": LINEAR_TOLERANCE,
        "ingest_peak_growth_bytes_per_image": {n: sizes[n]["pipeline"]["ingest_peak_growth_bytes_per_image"] for n in ns},
        "ingest_peak_growth_over_output": {n: sizes[n]["pipeline"]["ingest_peak_growth_over_output"] for n in ns},
        "pil_peak_growth_bytes_per_image": {n: sizes[n]["pil"]["peak_growth_bytes_per_image"] for n in ns},
        "output_bytes_per_image": lo["output_bytes_per_image"],
    }


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    wall0 = time.perf_counter()
    load_before = loadavg()
    sizes = sorted(set(opts.sizes))
    log(f"# bench_ingest: sizes {sizes}, {opts.reps} reps, {opts.side}px files -> {opts.target}px, loadavg {load_before}")
    with tempfile.TemporaryDirectory(prefix="bench_ingest-") as tmp:
        pool = make_pool(Path(opts.pool_dir) if opts.pool_dir else Path(tmp) / "pool", max(sizes), opts.side, log=log)
        per_size: dict[str, list[dict[str, dict[str, Any]]]] = {}
        bases = {n: make_folder(pool, Path(tmp) / f"n{n}", n) for n in sizes}
        jobs = {n: {"base": str(bases[n]), "target": opts.target, "n": n, "decode_workers": opts.decode_workers} for n in sizes}
        if opts.one_process_per_variant:
            # --quick: one process per variant measures every size (the peak counter is
            # reset between sizes), so the seconds of imports are paid once
            got = {}
            for v in VARIANTS:
                res, peak = run_worker(v, [jobs[n] for n in sizes], opts.omp_threads)
                got[v] = [{**r, "worker_peak_rss_mb": round(peak / 2**20, 1)} for r in res]
            for k, n in enumerate(sizes):
                per_size[str(n)] = [{v: got[v][k] for v in VARIANTS}]
        else:
            for n in sizes:
                per_size[str(n)] = []
                for rep in range(opts.reps):
                    order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
                    r: dict[str, dict[str, Any]] = {}
                    for v in order:
                        res, peak = run_worker(v, [jobs[n]], opts.omp_threads)
                        r[v] = {**res[0], "worker_peak_rss_mb": round(peak / 2**20, 1)}
                    per_size[str(n)].append(r)
                    p, q = r["pipeline"], r["pil"]
                    log(f"  {n} files, rep {rep + 1}/{opts.reps} ({time.perf_counter() - wall0:.0f} s, load {loadavg()}): "
                        f"ingest {n / p['ingest_s']:.0f} img/s (+validate {p['validate_s']:.2f} s), PIL {n / q['decode_s']:.0f} img/s, "
                        f"peak +{p['ingest_peak_growth_mb']:.0f} MB vs +{q['decode_peak_growth_mb']:.0f} MB")
        fresh = {}
        if opts.validate_fresh:  # after the last pipeline run of each size, which left its outputs
            for n in sizes:
                res, _ = run_worker("validate", [jobs[n]], opts.omp_threads)
                fresh[str(n)] = res[0]
                log(f"  {n} files, validation in a fresh process: " + ", ".join(f"{k} {v['validate_s']:.2f} s +{v['validate_peak_growth_mb']:.0f} MB" for k, v in res[0].items()))
        for n in sizes:
            shutil.rmtree(bases[n], ignore_errors=True)
    summary = {n: _summarize(int(n), opts.target, reps) for n, reps in per_size.items()}
    for n, v in fresh.items():
        summary[n]["validate_fresh_process"] = v
    return {
        "benchmark": "bench_ingest",
        "settings": {
            "sizes": sizes, "reps": opts.reps, "decode_workers": opts.decode_workers or "all cores", "file_side": opts.side, "target": opts.target, "channels": 3, "quick": opts.quick,
            "one_process_per_variant": opts.one_process_per_variant,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset") if opts.omp_threads == "inherit" else opts.omp_threads,
            "data": f"{opts.side}x{opts.side} RGB PNGs: random crops of skimage.data astronaut/coffee/chelsea/rocket and brick/grass/gravel (scale 1 or 1/2) + Gaussian noise sigma {NOISE_SIGMA}",
            "memory": "peak RSS (VmHWM) of the measuring process minus its RSS before the step, peak counter reset via /proc/self/clear_refs",
            "validation": "great-expectations: row count >= 16, quarantined share <= 0.2, sha256 unique, std in [0.02, 1]",
        },
        "machine": machine_info(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "sizes": summary,
        "scaling": _scaling(summary),
        "reps": per_size,
    }


# --------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    st = res["settings"]
    lines = [
        f"### Ingestion + validation vs a plain PIL loop ({st['file_side']}px RGB PNGs -> {st['target']}px, {st['reps']} reps, "
        f"loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        f"Decode workers: {st.get('decode_workers', 1)}.",
        "",
        "| files | ingest img/s | ingest + validate img/s | PIL loop img/s | ingest / PIL (x) | ingest + validate / PIL (x) | CPU µs/img ingest (main process) | CPU µs/img PIL | ingest s: decoding + after it | ingest peak +MB | validate peak +MB | decode worker peak MB | PIL peak +MB | output MB | same pixels |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, s in res["sizes"].items():
        p, q = s["pipeline"], s["pil"]
        lines.append(
            f"| {int(n):,} | {p['ingest_images_per_s']:.0f} | {p['ingest_plus_validate_images_per_s']:.0f} | {q['images_per_s']:.0f} "
            f"| {s['ratio_ingest_vs_pil']:.2f} | {s['ratio_ingest_plus_validate_vs_pil']:.2f} | {p['ingest_cpu_us_per_image']:.0f} | {q['cpu_us_per_image']:.0f} "
            f"| {p['ingest_decode_s']:.2f} + {p['ingest_after_decode_s']:.2f} | {p['ingest_peak_growth_mb']:.1f} | {p['validate_peak_growth_mb']:.1f} | {p['decode_worker_peak_rss_mb']:.0f} | {q['peak_growth_mb']:.1f} | {s['output_mb']:.1f} | {s['pixels_identical']} |"
        )
    fresh = [(n, s["validate_fresh_process"]) for n, s in res["sizes"].items() if "validate_fresh_process" in s]
    if fresh:
        lines += ["", "Validation alone in a fresh process (seconds, peak RSS growth):", "",
                  "| files | the benchmark's expectations | row-by-row checks that pass |", "|---:|---:|---:|"]
        for n, v in fresh:
            b, q = v["benchmark"], v["passing"]
            lines.append(f"| {int(n):,} | {b['validate_s']:.2f} s, +{b['validate_peak_growth_mb']:.1f} MB | {q['validate_s']:.2f} s, +{q['validate_peak_growth_mb']:.1f} MB |")
    sc = res["scaling"]
    if "ingest_cpu_per_image_largest_over_smallest" in sc:
        lines += [
            "",
            f"Scaling {sc['sizes'][0]:,} -> {sc['sizes'][-1]:,} files: ingest CPU time per image x{sc['ingest_cpu_per_image_largest_over_smallest']} "
            f"(wall x{sc['ingest_wall_per_image_largest_over_smallest']}; PIL x{sc['pil_cpu_per_image_largest_over_smallest']}): "
            f"{'linear' if sc['ingest_cost_linear'] else 'NOT linear'} (tolerance x{sc['linear_tolerance']}). "
            f"Peak memory growth per image (bytes): ingest {sc['ingest_peak_growth_bytes_per_image']}, PIL {sc['pil_peak_growth_bytes_per_image']}; "
            f"each image adds {sc['output_bytes_per_image']:.0f} bytes to the output.",
        ]
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help=f"numbers of files (default {DEFAULTS['sizes']})")
    p.add_argument("--reps", type=int, default=None, help=f"repetitions per size, variants alternating (default {DEFAULTS['reps']})")
    p.add_argument("--side", type=int, default=None, help="side of the generated PNGs in px (default 32)")
    p.add_argument("--target", type=int, default=None, choices=[16, 28, 32, 64, 128], help="scenario image.size (default 32)")
    p.add_argument("--decode-workers", type=int, default=None, help="SCENARIO_GAN_DECODE_WORKERS for the pipeline (default: every core)")
    p.add_argument("--omp-threads", default="1", help="OMP_NUM_THREADS of the measured processes (default 1); 'inherit' keeps this shell's (unset: what a stage run from a plain shell gets)")
    p.add_argument("--pool-dir", help="generate the PNGs here and reuse them on later runs (default: a temporary directory)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--validate-fresh", action="store_true", help="also time validation alone in a fresh process per size (after the last repetition), with the benchmark's and with passing expectations")
    p.add_argument("--quick", action="store_true", help=f"smoke test {QUICK}, one process per variant (explicit flags still win)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--jobs", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.one_process_per_variant = a.quick
    a.validate_fresh = a.validate_fresh or a.quick
    if a.worker is None:
        if min(a.sizes) < 1 or a.reps < 1:
            p.error("--sizes and --reps must be >= 1")
        if a.side < 8:
            p.error("--side must be >= 8 (smaller images are quarantined as too_small)")
    return a


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    opts = parse_args(argv)
    if opts.worker:
        return _worker_main(opts.worker, opts.jobs)
    res = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(res))
    write_result(opts.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
