"""Privacy against quality: differentially private training at several budgets, measured
with the scenario's own ruler, verdict and membership-inference audit.

The real pipeline steps run (ingest, validate and the ruler once; then per budget
augment -> train -> evaluate) with the scenario's recipe and budget. Differentially
private training needs a discriminator without BatchNorm, so every budget, and the
``inf`` row (the same network trained without DP), use ``model.d_norm: group``;
the ``default`` row is the scenario as shipped, for reference.

Reported per row: FID/floor, precision, recall, the classifier two-sample accuracy, the
membership-inference AUC with its 95 % interval, the epsilon spent and the noise, the
verdict and the training wall time.

    python -m benchmarks.bench_privacy --out privacy.json                         # histology, inf/10/3/1 + default
    python -m benchmarks.bench_privacy --epsilons inf 8 --steps 2000
    python -m benchmarks.bench_privacy --quick --out /tmp/privacy.json             # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_EPSILONS = ("inf", "10", "3", "1")


def variant_gan(gan: dict[str, Any], epsilon: str, delta: float) -> dict[str, Any]:
    """The scenario's ``gan`` block for one row: ``default`` as shipped; otherwise D with
    GroupNorm, and DP-SGD at ``epsilon`` unless it is ``inf``."""
    if epsilon == "default":
        return gan
    model = {**gan.get("model", {}), "d_norm": "group"}
    train = dict(gan.get("train", {}))
    if not math.isinf(float(epsilon)):
        train["privacy"] = {"epsilon": float(epsilon), "delta": delta}
    return {**gan, "model": model, "train": train}


def run(opts: argparse.Namespace, work: Path, log) -> dict[str, Any]:
    from benchmarks.harness import MEASURES, ScenarioBench, load_raw

    raw = load_raw(opts.scenario, steps=opts.steps, threads=opts.threads, quick=opts.quick)
    bench = ScenarioBench.prepare(raw, work)
    rows = {}
    for eps in opts.epsilons:
        r, m, wall = bench.run(f"eps-{eps}", {**raw, "gan": variant_gan(raw["gan"], eps, opts.delta)}, keep_grids=opts.keep_grids)
        dp = r.privacy or {}
        rows[eps] = {
            "steps": r.steps,
            "epsilon_spent": dp.get("epsilon_spent"),
            "delta": dp.get("delta"),
            "noise_multiplier": dp.get("noise_multiplier"),
            "sample_rate": dp.get("sample_rate"),
            "train_wall_s": round(wall, 1),
            "images_per_s": round(r.images_per_s, 1),
            **{k: m[k] for k in MEASURES},
            "membership_auc_ci": [m["membership_auc_ci_low"], m["membership_auc_ci_high"]],
        }
        log(
            f"{opts.scenario}/eps={eps}: FID/floor {m['fid_over_floor']:.2f}, P {m['precision']:.2f}, R {m['recall']:.2f}, C2ST {m['c2st_accuracy']:.2f}, "
            f"MIA AUC {m['membership_auc']:.3f}, spent {dp.get('epsilon_spent')}, promote {m['promote']}, {wall:.0f} s"
        )
    return rows


def markdown(res: dict[str, Any]) -> str:
    from benchmarks.harness import verdict_text

    s = res["settings"]
    lines = [
        f"### Privacy against quality: {s['scenario']} ({s['threads']} torch thread(s), delta {s['delta']:g}, loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| epsilon | steps | noise | FID/floor | precision | recall | classifier acc. | membership AUC (95 % CI) | verdict | images/s | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for eps, r in res["rows"].items():
        verdict = verdict_text(r)
        spent = "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.2f} spent"
        label = "default (BatchNorm D, no DP)" if eps == "default" else ("∞ (GroupNorm D, no DP)" if eps == "inf" else f"{eps} ({spent})")
        noise = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.2f}"
        lo, hi = r["membership_auc_ci"]
        lines.append(
            f"| {label} | {r['steps']} | {noise} | {r['fid_over_floor']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} | {r['c2st_accuracy']:.2f} "
            f"| {r['membership_auc']:.3f} ({lo:.2f}-{hi:.2f}) | {verdict} | {r['images_per_s']:.0f} | {r['train_wall_s']:.0f} |"
        )
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.harness import common_arguments, run_and_report

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_privacy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="histology")
    p.add_argument("--epsilons", nargs="+", default=list(DEFAULT_EPSILONS) + ["default"], help="budgets; 'inf' = GroupNorm D without DP, 'default' = the scenario as shipped")
    p.add_argument("--delta", type=float, default=1e-5)
    common_arguments(p)
    opts = p.parse_args(argv)
    for e in opts.epsilons:
        if e != "default":
            try:
                if not float(e) > 0:
                    raise ValueError
            except ValueError:
                p.error(f"--epsilons: {e!r} is not a positive number, 'inf' or 'default'")
    if opts.quick and not opts.steps:
        opts.steps = 4
    settings = {"scenario": opts.scenario, "steps": opts.steps, "threads": opts.threads, "delta": opts.delta, "epsilons": list(opts.epsilons)}
    return run_and_report(opts, "rows", settings, lambda work, log: run(opts, work, log), markdown)

if __name__ == "__main__":
    sys.exit(main())
