"""What augmentation costs a training step, per default scenario, measured side by side.

For each scenario the same trainer (the scenario's own recipe, its images from the
built-in source) runs in four variants, in blocks of steps that alternate between the
variants so that the machine's load falls on all of them alike:

- ``plain``        no augmentation at all;
- ``reals``        + the real-image transforms of the scenario, per batch (albumentations,
                   through :func:`pipelines.steps.augment.batch_transform`);
- ``reals+d``      + the ops routed to D's input (real and generated images);
- ``reals+d+ada``  + ADA adapting their probability.

Reported: median milliseconds per step and the ratio to ``plain`` (the goal: at most
1.10 for ``reals``, the albumentations pipeline in the training loop).

    python -m benchmarks.bench_train_augment                      # 4 scenarios, 6 rounds of 20 steps
    python -m benchmarks.bench_train_augment --quick              # seconds: a smoke test
    python -m benchmarks.bench_train_augment --scenarios faces --rounds 10 --out faces.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("plain", "reals", "reals+d", "reals+d+ada")
DEFAULTS = {"rounds": 6, "block": 20, "warmup": 5}
QUICK = {"rounds": 2, "block": 2, "warmup": 1}


def _trainers(name: str, threads: int, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The four trainers of one scenario, and what each variant applies."""
    import torch

    from gan_core.trainer import Trainer
    from pipelines import builtin_data
    from pipelines.scenario import SCENARIO_DIR, load_scenario
    from pipelines.steps.augment import batch_transform, build_pipeline, discriminator_ops, route_transforms

    torch.set_num_threads(threads)
    sc = load_scenario(SCENARIO_DIR / f"{name}.yaml")
    images = builtin_data.load(sc.data.builtin, sc.image.size)
    if sc.image.channels == 1 and images.shape[-1] == 3:  # the scenario's grey, as ingestion makes it
        images = images.mean(-1, keepdims=True).round().astype(images.dtype)
    routes = route_transforms(sc)
    reals = [r.index for r in routes if r.target == "reals"]
    ops = discriminator_ops(routes)
    pipeline = build_pipeline(sc.augmentation, size=sc.image.size, channels=sc.image.channels, only=reals)
    applies = {
        "plain": "nothing",
        "reals": ", ".join(sc.augmentation.transforms[i].name for i in reals) or "nothing (no real-image transform)",
        "reals+d": ", ".join(o["op"] for o in ops) or "no D-side op",
        "reals+d+ada": "ADA" if ops else "no D-side op to adapt",
    }
    trainers = {}
    for v in VARIANTS:
        d_ops = ops if v in ("reals+d", "reals+d+ada") else None
        cfg = sc.gan_config(augment=d_ops)
        if v == "reals+d+ada" and ops:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ada": True, "ada_p_init": 0.5})})
        transform = batch_transform(pipeline) if v != "plain" and reals else None
        trainers[v] = Trainer(cfg, images, out / v, progress=False, resume=False, real_transform=transform)
    return trainers, applies


def run_scenario(name: str, opts: argparse.Namespace, log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        trainers, applies = _trainers(name, opts.threads, Path(tmp))
        step = {v: 0 for v in VARIANTS}

        def block(v: str, n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                step[v] += 1
                trainers[v].train_step(step[v])
            return (time.perf_counter() - t0) / n

        for v in VARIANTS:
            block(v, opts.warmup)
        per_step: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(opts.rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for v in order:
                per_step[v].append(block(v, opts.block))
        med = {v: statistics.median(x) for v, x in per_step.items()}
        res = {
            "applies": applies,
            "batch_size": trainers["plain"].cfg.train.batch_size,
            "ms_per_step": {v: round(1000 * m, 3) for v, m in med.items()},
            "ratio_to_plain": {v: round(m / med["plain"], 4) for v, m in med.items()},
            "ms_per_step_rounds": {v: [round(1000 * x, 3) for x in xs] for v, xs in per_step.items()},
        }
        log(f"{name}: " + ", ".join(f"{v} {res['ms_per_step'][v]:.1f} ms ({res['ratio_to_plain'][v]:.3f}x)" for v in VARIANTS))
        return res


def markdown(res: dict[str, Any]) -> str:
    st = res["settings"]
    lines = [
        f"### Augmentation in the training loop: ms per step, side by side ({st['rounds']} rounds of {st['block']} steps per variant, "
        f"{st['threads']} torch thread(s), loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| scenario | batch | plain | reals (albumentations per batch) | reals + D's input | + ADA | what reals / D's input apply |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in res["scenarios"].items():
        ms, ratio = r["ms_per_step"], r["ratio_to_plain"]
        cells = " | ".join(f"{ms[v]:.1f} ({ratio[v]:.3f}x)" for v in VARIANTS[1:])
        lines.append(f"| {name} | {r['batch_size']} | {ms['plain']:.1f} | {cells} | {r['applies']['reals']} / {r['applies']['reals+d']} |")
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train_augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", default=["digits", "faces", "histology", "textures"])
    p.add_argument("--rounds", type=int, default=None, help=f"rounds of alternating blocks (default {DEFAULTS['rounds']})")
    p.add_argument("--block", type=int, default=None, help=f"steps per block (default {DEFAULTS['block']})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed steps per variant first (default {DEFAULTS['warmup']})")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)), help="torch threads (default $OMP_NUM_THREADS or 1)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help=f"smoke test {QUICK} (explicit flags still win)")
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("rounds", "block", "threads"):
        if getattr(a, k) < 1:
            p.error(f"--{k} must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from benchmarks.harness import machine_info

    opts = parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    scenarios = {name: run_scenario(name, opts, log) for name in opts.scenarios}
    res = {
        "settings": {k: getattr(opts, k) for k in ("rounds", "block", "warmup", "threads")},
        "machine": machine_info(),
        "loadavg_before": round(load0, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - t0, 1),
        "scenarios": scenarios,
    }
    print(markdown(res))
    write_result(opts.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
