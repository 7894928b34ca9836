"""Augmentation ablation per default scenario, at equal budget: which augmentation buys
quality, measured with the scenario's own ruler and verdict.

For each scenario the real pipeline steps run (ingest and validate once, then per variant
augment -> train -> evaluate with one shared ruler), with the scenario's recipe and
budget, changing only the augmentation:

- ``none``            no transform at all;
- ``albumentations``  the scenario's transforms as routed (symmetries to the real images
                      per batch, the rest on D's input at their listed p), ADA off;
- ``ada``             only the transforms on D's input, their probability adapted by ADA
                      (a scenario with none gets ``Affine`` translate 1/8, p 1: DiffAugment's
                      translation);
- ``both``            the scenario's transforms as routed, ADA on (with that translation
                      added when the scenario has nothing on D's input).

Reported per variant: FID/floor, precision, recall, the classifier two-sample accuracy,
the sharpness ratio, the verdict, ADA's final p and the training wall time.

    python -m benchmarks.bench_ablation --out ablation.json                    # 4 scenarios x 4 variants (~1 h on 2 cores)
    python -m benchmarks.bench_ablation --scenarios faces --variants none both
    python -m benchmarks.bench_ablation --quick --out /tmp/ablation.json       # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("none", "albumentations", "ada", "both")
TRANSLATION = {"name": "Affine", "params": {"translate_percent": [-0.125, 0.125], "p": 1.0}}
SYMMETRIES = {"HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "SquareSymmetry", "D4"}


def variant_augmentation(aug: dict[str, Any], variant: str) -> dict[str, Any]:
    """The scenario's ``augmentation`` block changed for ``variant``."""
    transforms = list(aug.get("transforms") or [])
    d_side = [t for t in transforms if t["name"] not in SYMMETRIES]
    if variant == "none":
        return {**aug, "transforms": [], "ada": False}
    if variant == "albumentations":
        return {**aug, "ada": False}
    if variant == "ada":
        return {**aug, "transforms": d_side or [TRANSLATION], "ada": True}
    return {**aug, "transforms": transforms if d_side else transforms + [TRANSLATION], "ada": True}


def run_scenario(name: str, opts: argparse.Namespace, work: Path, log) -> dict[str, Any]:
    from benchmarks.harness import MEASURES, ScenarioBench, load_raw

    raw = load_raw(name, steps=opts.steps, threads=opts.threads, quick=opts.quick)
    bench = ScenarioBench.prepare(raw, work / name)
    rows = {}
    for v in opts.variants:
        variant = {**raw, "augmentation": variant_augmentation(raw.get("augmentation") or {}, v)}
        r, m, wall = bench.run(v, variant, keep_grids=opts.keep_grids)
        aug = variant["augmentation"]
        rows[v] = {
            "transforms": [t["name"] for t in aug.get("transforms") or []],
            "ada": bool(aug.get("ada")),
            "ada_p": r.ada_p,
            "steps": r.steps,
            "train_wall_s": round(wall, 1),
            **{k: m[k] for k in MEASURES},
        }
        log(f"{name}/{v}: FID/floor {m['fid_over_floor']:.2f}, P {m['precision']:.2f}, R {m['recall']:.2f}, C2ST {m['c2st_accuracy']:.2f}, sharpness {m['sharpness_ratio']:.2f}, promote {m['promote']}, {wall:.0f} s")
    return rows


def markdown(res: dict[str, Any]) -> str:
    from benchmarks.harness import verdict_text

    lines = [
        f"### Augmentation ablation at equal budget ({res['settings']['threads']} torch thread(s), loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| scenario | variant | steps | FID/floor | precision | recall | classifier acc. | sharpness | verdict | ADA p | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, rows in res["scenarios"].items():
        for v, r in rows.items():
            verdict = verdict_text(r)
            ada = f"{r['ada_p']:.2f}" if r["ada_p"] is not None else "-"
            lines.append(
                f"| {name} | {v} | {r['steps']} | {r['fid_over_floor']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} | {r['c2st_accuracy']:.2f} "
                f"| {r['sharpness_ratio']:.2f} | {verdict} | {ada} | {r['train_wall_s']:.0f} |"
            )
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.harness import common_arguments, run_and_report

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ablation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", default=["digits", "faces", "histology", "textures"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    common_arguments(p)
    opts = p.parse_args(argv)
    if opts.quick and not opts.steps:
        opts.steps = 4
    settings = {"steps": opts.steps, "threads": opts.threads, "variants": list(opts.variants)}
    return run_and_report(opts, "scenarios", settings, lambda work, log: {name: run_scenario(name, opts, work, log) for name in opts.scenarios}, markdown)

if __name__ == "__main__":
    sys.exit(main())
