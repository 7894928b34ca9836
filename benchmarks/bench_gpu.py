"""Training throughput and peak memory on one CUDA GPU at 64x64, with gan_core's Trainer.

    python -m benchmarks.bench_gpu --out gpu.json                      # needs CUDA (a few minutes on one GPU)
    python -m benchmarks.bench_gpu --batch-sizes 64 256 --steps 50 --out gpu.json
    python -m benchmarks.bench_gpu --device cpu --quick --out /tmp/g.json   # CPU smoke test, seconds

Without a CUDA device it prints why and exits with status 3 (``--device cpu`` runs
the same measurement on the CPU; with ``--quick`` that is a tiny smoke test of the
script and its JSON, not a number to quote).

What is measured: ``Trainer.train_step`` of a ``dcgan`` at 64x64 RGB (width
``--width``, z 100) on 2,048 real 64x64 crops of scikit-image photos (astronaut,
coffee, chelsea, rocket), uint8 on the device, for every batch size in
``--batch-sizes`` and every variant:

- ``bf16``         what a scenario gets on a GPU (``train.amp: auto`` is bf16 there; set
  to ``bf16`` here so the CPU smoke test takes the same path): bf16 autocast, G and D
  in ``channels_last`` (the Trainer always uses it);
- ``fp32``         the same with ``train.amp: off`` (channels_last kept), for the ratio;
- ``recipe_bf16``  the default scenarios' small-data recipe (EMA of G with a half-life in
  images + rotation loss for D 1.0 and G 0.2) with bf16.

Method: every (variant, batch size) trainer is built once and warmed up (``--warmup``
steps: cuDNN algorithm choice, allocator); then ``--reps`` repetitions, in which all of
them take ``--steps`` steps in turn, the order reversed every repetition; the device
is synchronised around each timed block. Reported: median images/s and the median of
per-repetition ratios bf16 / fp32; peak memory = ``torch.cuda.max_memory_allocated``
(tensors) and ``max_memory_reserved`` (what the caching allocator took from the
driver) over the timed steps of that trainer alone (the counters are reset before each
block), so the figure says how large a batch fits.

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary that
``--out`` writes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.harness import loadavg, machine_info

NO_CUDA_EXIT = 3
RESOLUTION = 64
VARIANTS: dict[str, dict[str, Any]] = {
    "bf16": {"amp": "bf16"},
    "fp32": {"amp": "off"},
    "recipe_bf16": {"amp": "bf16", "ema_half_life_images": 10_000, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2},
}
DEFAULTS = {"batch_sizes": [64, 128, 256], "steps": 30, "warmup": 5, "reps": 5, "width": 64, "n_images": 2048}
QUICK = {"batch_sizes": [4], "steps": 2, "warmup": 1, "reps": 2, "width": 8, "n_images": 16}


def make_data(n: int, size: int = RESOLUTION, seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops of real RGB photos shipped with scikit-image."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        out[i] = img[y : y + size, x : x + size, :3]
    return out


def config(variant: str, batch: int, opts: argparse.Namespace) -> dict[str, Any]:
    train = {"steps": 10**9, "batch_size": batch, "seed": 0, "device": opts.device, "checkpoint_every": 10**9, **VARIANTS[variant]}
    return {"model": {"arch": "dcgan", "resolution": RESOLUTION, "channels": 3, "width": opts.width}, "train": train}


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "device": device, "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if device.startswith("cuda") and torch.cuda.is_available():
        d = torch.device(device)
        p = torch.cuda.get_device_properties(d)
        info.update(
            name=p.name, capability=f"{p.major}.{p.minor}", total_memory_gib=round(p.total_memory / 2**30, 1),
            multiprocessors=p.multi_processor_count, cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info.update(threads=torch.get_num_threads())
    return info


class Runner:
    """One trainer (variant, batch size) and its timed blocks."""

    def __init__(self, variant: str, batch: int, data: np.ndarray, opts: argparse.Namespace, workdir: Path):
        from gan_core.config import load_config
        from gan_core.trainer import Trainer

        self.variant, self.batch = variant, batch
        self.cuda = opts.device.startswith("cuda")
        self.trainer = Trainer(load_config(config(variant, batch, opts), source=f"bench_gpu {variant}"), data, workdir / f"{variant}-{batch}", progress=False, resume=False)
        self.step = 0
        self.times: list[float] = []
        self.peak_alloc: list[int] = []
        self.peak_reserved: list[int] = []

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.trainer.device)

    def steps(self, n: int, timed: bool = True) -> None:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.trainer.device)
        self._sync()
        t0 = time.perf_counter()
        for _ in range(n):
            self.step += 1
            logs = self.trainer.train_step(self.step)  # returns floats: one host sync per step, as in fit()
        self._sync()
        dt = time.perf_counter() - t0
        if not all(np.isfinite(v) for v in logs.values()):
            raise RuntimeError(f"bench_gpu: {self.variant} batch {self.batch} produced non-finite losses {logs}")
        if timed:
            self.times.append(dt)
            if self.cuda:
                self.peak_alloc.append(torch.cuda.max_memory_allocated(self.trainer.device))
                self.peak_reserved.append(torch.cuda.max_memory_reserved(self.trainer.device))


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    threads_before = torch.get_num_threads()
    if not opts.device.startswith("cuda"):
        torch.set_num_threads(opts.threads)
    wall0 = time.perf_counter()
    load_before = loadavg()
    variants = opts.variants
    log(f"# bench_gpu: {opts.device}, {RESOLUTION}x{RESOLUTION} RGB, width {opts.width}, batches {opts.batch_sizes}, variants {variants}, "
        f"{opts.reps} reps x {opts.steps} steps")
    data = make_data(opts.n_images)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
            runners = [Runner(v, b, data, opts, Path(tmp)) for b in opts.batch_sizes for v in variants]
            for r in runners:
                r.steps(opts.warmup, timed=False)
            for rep in range(opts.reps):
                for r in runners if rep % 2 == 0 else runners[::-1]:
                    r.steps(opts.steps)
                log(f"  rep {rep + 1}/{opts.reps} ({time.perf_counter() - wall0:.0f} s): "
                    + ", ".join(f"{r.variant}@{r.batch} {r.batch * opts.steps / r.times[-1]:.0f}" for r in runners) + " img/s")
            results: dict[str, dict[str, Any]] = {}
            for r in runners:
                ips = [r.batch * opts.steps / t for t in r.times]
                entry: dict[str, Any] = {
                    "images_per_s": round(_median(ips), 1),
                    "images_per_s_min_max": [round(min(ips), 1), round(max(ips), 1)],
                    "s_per_step": round(_median(r.times) / opts.steps, 5),
                }
                if r.cuda:
                    entry["peak_allocated_mb"] = round(max(r.peak_alloc) / 2**20, 1)
                    entry["peak_reserved_mb"] = round(max(r.peak_reserved) / 2**20, 1)
                results.setdefault(r.variant, {})[str(r.batch)] = entry
            ratios: dict[str, dict[str, float]] = {}
            by = {(r.variant, r.batch): r for r in runners}
            for b in opts.batch_sizes:
                if "bf16" in variants and "fp32" in variants:
                    ratios.setdefault("bf16_vs_fp32", {})[str(b)] = round(_median([f / h for h, f in zip(by["bf16", b].times, by["fp32", b].times)]), 3)
                if "bf16" in variants and "recipe_bf16" in variants:
                    ratios.setdefault("recipe_vs_plain_bf16", {})[str(b)] = round(_median([p / q for p, q in zip(by["bf16", b].times, by["recipe_bf16", b].times)]), 3)
            del runners
    finally:
        torch.set_num_threads(threads_before)
    return {
        "benchmark": "bench_gpu",
        "settings": {
            "device": opts.device, "resolution": RESOLUTION, "channels": 3, "arch": "dcgan", "width": opts.width, "z_dim": 100,
            "batch_sizes": opts.batch_sizes, "variants": {v: VARIANTS[v] for v in variants}, "steps": opts.steps, "warmup": opts.warmup,
            "reps": opts.reps, "n_images": opts.n_images, "quick": opts.quick, "channels_last": True,
            "data": f"{opts.n_images} random 64x64 crops of skimage.data astronaut/coffee/chelsea/rocket, uint8 on the device",
        },
        "machine": {**machine_info(), **device_info(opts.device)},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "results": results,
        "ratios": ratios,
    }


def markdown(res: dict[str, Any]) -> str:
    st, m = res["settings"], res["machine"]
    where = m.get("name") or f"{st['device']} ({m.get('threads')} threads)"
    lines = [
        f"### Training at 64x64 RGB on {where} (dcgan width {st['width']}, {st['reps']} reps x {st['steps']} steps, torch {m['torch']})",
        "",
        "| variant | batch | img/s (median) | s/step | peak allocated MB | peak reserved MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v, per_b in res["results"].items():
        for b, e in per_b.items():
            lines.append(f"| {v} | {b} | {e['images_per_s']:.0f} | {e['s_per_step']:.4f} | {e.get('peak_allocated_mb', '-')} | {e.get('peak_reserved_mb', '-')} |")
    for k, per_b in res["ratios"].items():
        lines.append(f"\n{k}: " + ", ".join(f"batch {b}: x{r}" for b, r in per_b.items()))
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help=f"default {DEFAULTS['batch_sizes']}")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=None, help=f"timed steps per block (default {DEFAULTS['steps']})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed steps per trainer first (default {DEFAULTS['warmup']})")
    p.add_argument("--reps", type=int, default=None, help=f"repetitions, trainers taking turns (default {DEFAULTS['reps']})")
    p.add_argument("--width", type=int, default=None, help=f"dcgan base filters (default {DEFAULTS['width']})")
    p.add_argument("--n-images", type=int, default=None, help=f"training crops (default {DEFAULTS['n_images']})")
    p.add_argument("--threads", type=int, default=1, help="torch threads with --device cpu (default 1)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help=f"tiny smoke-test settings {QUICK} (explicit flags still win)")
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not (a.device == "cpu" or a.device == "cuda" or (a.device.startswith("cuda:") and a.device[5:].isdigit())):
        p.error(f"--device {a.device!r}: use cuda, cuda:N or cpu")
    for k in ("steps", "reps", "width", "threads"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be >= 1")
    if a.warmup < 0 or min(a.batch_sizes) < 1 or a.n_images < 2:
        p.error("--warmup must be >= 0, --batch-sizes >= 1 and --n-images >= 2")
    return a


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    opts = parse_args(argv)
    if opts.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                f"bench_gpu: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is False); "
                "run it on a machine with an NVIDIA GPU and a CUDA build of torch, or use --device cpu --quick for a smoke test",
                file=sys.stderr,
            )
            return NO_CUDA_EXIT
    res = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(res))
    write_result(opts.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
