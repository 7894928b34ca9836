"""Augmentation throughput: the pipeline step against a bare albumentations loop, side by side.

    python -m benchmarks.bench_augment                          # 4 policies x 5 reps (~80 s on 2 busy cores)
    python -m benchmarks.bench_augment --n-images 4000 --copies 4 --reps 7 --out augment.json
    python -m benchmarks.bench_augment --quick --out /tmp/augment.json   # smoke test, seconds

Policies and data: the ``augmentation`` block of every default scenario in
``scenarios/`` (digits: Affine; faces: flip + Affine + brightness/contrast; histology:
flips + 90-degree turns; textures: flips + turns + RandomResizedCrop), each on that
scenario's own real images (``pipelines.builtin_data``, at its ``image.size`` and
``image.channels``), repeated to ``--n-images``.

What is compared, on the same images with the same transforms and parameters, for
``--copies`` augmented copies of every image:

- ``bare``           the loop anyone would write: ``A.Compose([A.<name>(**params) ...],
  seed=0)``, then ``compose(image=img)["image"]`` for every image, results stacked into
  one array;
- ``augment_batch``  :func:`pipelines.steps.augment.augment_batch` (the step's inner
  loop: shape and dtype checks, one shared seeded random stream);
- ``augment_step``   :func:`pipelines.steps.augment.augment` end to end: read
  ``validated/images/`` (written once, before timing, by the real ingest and
  validate steps from an ``.npz`` of the images), build and check the pipeline (every transform probed with
  p=1), JSON round trip, the copies, the preview grid, the ``images/`` shards + manifest
  written atomically. Its time includes those fixed costs.

Throughput is augmented images per second (``n_images x copies`` per run). Method:
every variant runs once untimed (imports, caches), then ``--reps`` repetitions. Within
a repetition ``bare`` and ``augment_batch`` run in lockstep on blocks of ``--block``
images, the order swapped every block, so a burst of load from other processes lands
on both; the step runs before that pair in even repetitions and after it in odd ones.
Reported: median images/s and the median of per-repetition ratios against ``bare``
(> 1 = faster than the bare loop), in wall time and in CPU time (a second opinion that
other processes barely disturb; everything here is single-threaded). OpenCV (under
albumentations) uses ``--threads`` threads (default 1: on 32 px images a second thread
only adds synchronisation); the JSON records it and the load average.

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary that
``--out`` writes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

from benchmarks.harness import loadavg, machine_info  # noqa: E402

VARIANTS = ("bare", "augment_batch", "augment_step")
DEFAULTS = {"n_images": 2000, "copies": 4, "reps": 5, "policies": None}
QUICK = {"n_images": 100, "copies": 1, "reps": 2, "policies": ["faces", "histology"]}


def policies() -> dict[str, Any]:
    """The default scenarios that have an augmentation policy, by name."""
    from pipelines.scenario import load_all

    return {n: sc for n, sc in load_all().items() if sc.augmentation.transforms}


def scenario_images(sc: Any, n: int) -> np.ndarray:
    """``n`` real images of the scenario's built-in source, at its size and channels."""
    from pipelines import builtin_data

    base = builtin_data.load(sc.data.builtin, sc.image.size)
    if base.shape[-1] != sc.image.channels:
        base = np.repeat(base, sc.image.channels, axis=-1) if base.shape[-1] == 1 else base.mean(axis=-1, keepdims=True).round().astype(np.uint8)
    reps = -(-n // len(base))
    return np.ascontiguousarray(np.concatenate([base] * reps)[:n])


def bare_compose(sc: Any):
    """The scenario's transforms as a plain ``A.Compose`` (no project code)."""
    import albumentations as A

    return A.Compose([getattr(A, t.name)(**t.params) for t in sc.augmentation.transforms], seed=0)


class Case:
    """One policy: its images and the three ways of augmenting them."""

    def __init__(self, name: str, sc: Any, images: np.ndarray, copies: int, workdir: Path):
        from pipelines.paths import Roots, ScenarioPaths
        from pipelines.scenario import DataSpec, ValidationSpec
        from pipelines.steps.augment import build_pipeline
        from pipelines.io import load_images, npz_bytes
        from pipelines.steps.ingest import ingest
        from pipelines.steps.validate import require_passed, validate

        self.name, self.copies = name, copies
        # The step reads what validation wrote, so the inputs go through the real
        # ingest and validate steps: an .npz source with the images (repeated, so no
        # uniqueness expectation) and only the built-in checks.
        self.sc = sc.model_copy(update={
            "data": DataSpec(source="npz", path=f"{name}/source.npz", npz_key="images"),
            "validation": ValidationSpec(min_images=2),
            "augmentation": sc.augmentation.model_copy(update={"offline_copies": copies}),
        })
        self.paths = ScenarioPaths(name, Roots.under(workdir))
        (self.paths.roots.data / name).mkdir(parents=True, exist_ok=True)
        (self.paths.roots.data / name / "source.npz").write_bytes(npz_bytes({"images": images}))
        ingest(self.sc, self.paths)
        require_passed(validate(self.sc, self.paths))
        self.images = load_images(self.paths.validated / "images")
        self.bare = bare_compose(sc)
        self.pipeline = build_pipeline(self.sc.augmentation, size=sc.image.size, channels=sc.image.channels, source=f"scenarios/{name}.yaml")

    def lockstep(self, block: int, flip: bool) -> dict[str, tuple[float, float]]:
        """``bare`` and ``augment_batch`` in lockstep, ``block`` images at a time, the
        order swapped every block: (wall s, CPU s) each for ``copies`` copies of all."""
        from pipelines.steps.augment import augment_batch, seed_pipeline

        seed_pipeline(self.pipeline, 0)
        self.bare.set_random_seed(0)
        acc = {"bare": [0.0, 0.0], "augment_batch": [0.0, 0.0]}
        k = 0
        for _ in range(self.copies):
            for start in range(0, len(self.images), block):
                chunk = self.images[start : start + block]
                order = ("bare", "augment_batch") if (k % 2 == 0) != flip else ("augment_batch", "bare")
                k += 1
                for v in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if v == "bare":
                        out = np.stack([self.bare(image=img)["image"] for img in chunk])
                    else:
                        out = augment_batch(self.pipeline, chunk)
                    acc[v][0] += time.perf_counter() - t0
                    acc[v][1] += time.process_time() - c0
                    assert len(out) == len(chunk)
        return {v: (w, c) for v, (w, c) in acc.items()}

    def step(self) -> tuple[float, float]:
        """The augmentation step end to end: (wall s, CPU s)."""
        from pipelines.steps.augment import augment

        t0, c0 = time.perf_counter(), time.process_time()
        res = augment(self.sc, self.paths, source=f"scenarios/{self.name}.yaml")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert res.n_images == len(self.images) * (1 + self.copies), res
        return wall, cpu


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    import albumentations as A
    import cv2

    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(opts.threads)
    wall0 = time.perf_counter()
    load_before = loadavg()
    available = policies()
    names = opts.policies or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"bench_augment: no default scenario with an augmentation policy named {unknown}; choose from {sorted(available)}")
    log(f"# bench_augment: policies {names}, {opts.n_images} images x {opts.copies} copies, {opts.reps} reps, cv2 threads {opts.threads}, loadavg {load_before}")
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_augment-") as tmp:
            for name in names:
                sc = available[name]
                case = Case(name, sc, scenario_images(sc, opts.n_images), opts.copies, Path(tmp))
                case.lockstep(opts.block, False)  # warm-up: imports, OpenCV caches, torch for the preview
                case.step()
                n_aug = opts.n_images * opts.copies
                per_rep: list[dict[str, tuple[float, float]]] = []
                for rep in range(opts.reps):
                    # the step runs before the lockstep pair in even repetitions, after in odd ones
                    r = {"augment_step": case.step()} if rep % 2 == 0 else {}
                    r.update(case.lockstep(opts.block, flip=rep % 2 == 1))
                    if rep % 2 == 1:
                        r["augment_step"] = case.step()
                    per_rep.append(r)
                ips = {v: [n_aug / r[v][0] for r in per_rep] for v in VARIANTS}
                cpu_us = {v: [r[v][1] / n_aug * 1e6 for r in per_rep] for v in VARIANTS}
                results[name] = {
                    "transforms": [{"name": t.name, "params": t.params} for t in sc.augmentation.transforms],
                    "image": {"size": sc.image.size, "channels": sc.image.channels},
                    "augmented_images_per_run": n_aug,
                    **{v: {"images_per_s": round(_median(ips[v]), 1), "images_per_s_min_max": [round(min(ips[v]), 1), round(max(ips[v]), 1)],
                           "us_per_image": round(1e6 / _median(ips[v]), 2), "cpu_us_per_image": round(_median(cpu_us[v]), 2)} for v in VARIANTS},
                    "ratio_augment_batch_vs_bare": round(_median([r["bare"][0] / r["augment_batch"][0] for r in per_rep]), 3),
                    "ratio_augment_step_vs_bare": round(_median([r["bare"][0] / r["augment_step"][0] for r in per_rep]), 3),
                    "cpu_ratio_augment_batch_vs_bare": round(_median([r["bare"][1] / r["augment_batch"][1] for r in per_rep]), 3),
                    "cpu_ratio_augment_step_vs_bare": round(_median([r["bare"][1] / r["augment_step"][1] for r in per_rep]), 3),
                    # what the step adds to augment_batch's loop: reading, probing, preview, writing
                    "augment_step_fixed_s": round(_median([r["augment_step"][0] - r["augment_batch"][0] for r in per_rep]), 3),
                    "reps_wall_cpu_s": [{k: [round(v[0], 4), round(v[1], 4)] for k, v in r.items()} for r in per_rep],
                }
                s = results[name]
                log(f"  {name}: bare {s['bare']['images_per_s']:.0f} img/s, augment_batch {s['augment_batch']['images_per_s']:.0f} "
                    f"(x{s['ratio_augment_batch_vs_bare']}), step {s['augment_step']['images_per_s']:.0f} (x{s['ratio_augment_step_vs_bare']}) "
                    f"({time.perf_counter() - wall0:.0f} s, load {loadavg()})")
    finally:
        cv2.setNumThreads(threads_before)
    ratios_b = [r["ratio_augment_batch_vs_bare"] for r in results.values()]
    ratios_s = [r["ratio_augment_step_vs_bare"] for r in results.values()]
    cr_b = [r["cpu_ratio_augment_batch_vs_bare"] for r in results.values()]
    return {
        "benchmark": "bench_augment",
        "settings": {"policies": names, "n_images": opts.n_images, "copies": opts.copies, "reps": opts.reps, "block": opts.block, "cv2_threads": opts.threads, "quick": opts.quick,
                     "data": "each scenario's own built-in images at its image.size/channels, repeated to n_images"},
        "machine": {**machine_info(), "albumentations": A.__version__, "opencv": cv2.__version__},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "policies": results,
        "summary": {
            "ratio_augment_batch_vs_bare_min_max": [min(ratios_b), max(ratios_b)],
            "ratio_augment_step_vs_bare_min_max": [min(ratios_s), max(ratios_s)],
            "cpu_ratio_augment_batch_vs_bare_min_max": [min(cr_b), max(cr_b)],
        },
    }


def markdown(res: dict[str, Any]) -> str:
    st = res["settings"]
    lines = [
        f"### Augmentation: step vs a bare albumentations loop ({st['n_images']} images x {st['copies']} copies, {st['reps']} reps, "
        f"albumentations {res['machine']['albumentations']}, OpenCV threads {st['cv2_threads']}, loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| policy | transforms | image | bare img/s | augment_batch img/s | augment_batch / bare (x) | same, CPU time (x) | augment step img/s | step / bare (x) | step's extra s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["policies"].items():
        tr = " + ".join(t["name"] for t in r["transforms"])
        lines.append(
            f"| {name} | {tr} | {r['image']['size']}px x{r['image']['channels']} | {r['bare']['images_per_s']:.0f} | {r['augment_batch']['images_per_s']:.0f} "
            f"| {r['ratio_augment_batch_vs_bare']:.2f} | {r['cpu_ratio_augment_batch_vs_bare']:.2f} | {r['augment_step']['images_per_s']:.0f} | {r['ratio_augment_step_vs_bare']:.2f} | {r['augment_step_fixed_s']:.2f} |"
        )
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=None, help="default scenarios whose policy to run (default: all that have one)")
    p.add_argument("--n-images", type=int, default=None, help=f"images per policy (default {DEFAULTS['n_images']})")
    p.add_argument("--copies", type=int, default=None, help=f"augmented copies of every image per run (default {DEFAULTS['copies']})")
    p.add_argument("--reps", type=int, default=None, help=f"repetitions, variants alternating (default {DEFAULTS['reps']})")
    p.add_argument("--block", type=int, default=250, help="images per lockstep block of bare / augment_batch (default 250)")
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help=f"smoke test {QUICK} (explicit flags still win)")
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("n_images", "copies", "reps", "threads", "block"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if a.copies > 20:
        p.error("--copies must be <= 20 (augmentation.offline_copies allows at most 20)")
    return a


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    opts = parse_args(argv)
    res = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(res))
    write_result(opts.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
