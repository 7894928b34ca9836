"""Ruler and verdict on reference models whose ranking by a person is known by construction.

    python -m benchmarks.bench_verdict --workdir /tmp/verdict-models --out verdict.json  # ~30 min on 2 busy cores, ~1 min once trained
    python -m benchmarks.bench_verdict --cases faces digits50 --out verdict.json         # a subset
    python -m benchmarks.bench_verdict --quick --out /tmp/verdict.json                   # smoke test, ~7 s

Cases: the four default scenarios (``digits`` 1797 16x16 grey, ``faces`` 100 32x32
grey, ``histology`` 300 32x32 RGB, ``textures`` 300 32x32 grey; the images of
``pipelines.builtin_data``, which are what ``validated/images/`` holds) and
``digits50``, a seeded choice of 50 digits. Each is split as the pipeline splits it
(``heldout_originals(.., 0.2, 0)``: 20 % held out).

Reference models per case (``MODELS``; what a person decides is in ``person_label``):

- ``ideal``      the held-out real images;
- ``jitter``     the held-out reals shifted by up to 1 px (reflect padding);
- ``good``       the default scenarios' CPU recipe (``RECIPE``) trained for 3000 steps;
- ``default``    the same recipe for the scenario's own CPU budget (400-800 steps);
- ``early``      the same recipe after 100 steps;
- ``seed-dcgan`` (textures) ``arch: seed-dcgan`` for 300 steps: it collapses;
- ``collapsed``  the good generator fed one latent: every sample the same image;
- ``untrained``  the recipe's generator at initialization;
- ``uniform``    uniform noise in [-1, 1];
- ``gaussian``   Gaussian noise with the real images' per-pixel mean and std;
- ``blurred``    the held-out reals, Gaussian-blurred (sigma 1 px): layout without detail;
- ``copies``     training images drawn with replacement: memorization.

Every model is scored by :func:`gan_core.verdict.verdict_metrics` with one ruler per
case (``train_feature_net(train, seed=0, steps=300)``, as ``evaluate_generator``
does) and judged with the default :class:`gan_core.verdict.Bar`; the table also shows
the old gate (FID/floor <= 20 and near-copy share <= 0.05). Generators are trained
with one thread, one at a time; ``--workdir`` keeps them (a rerun with the same config
and data reuses them).

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary
that ``--out`` writes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.harness import loadavg, machine_info


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # pipelines.builtin_data name (also the scenario file's name)
    size: int
    subset: int | None  # use this many images (seeded choice) instead of all
    good_steps: int
    default_steps: int | None  # the scenario's CPU budget (its ``gan.train.steps``)
    early_steps: int = 100
    batch_size: int | None = None  # None: the scenario's
    seed_dcgan_steps: int | None = None  # also train arch seed-dcgan (collapses) this long


CASES = {
    "digits": Case("digits", "digits", 16, None, 3000, 800),
    "faces": Case("faces", "faces", 32, None, 3000, 600),
    "histology": Case("histology", "histology", 32, None, 3000, 400),
    "textures": Case("textures", "textures", 32, None, 3000, 400, seed_dcgan_steps=300),
    "digits50": Case("digits50", "digits", 16, 50, 3000, None, batch_size=32),
}

REPO = Path(__file__).resolve().parents[1]


def load_case(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) uint8 (N, C, H, W): the scenario's images (or a seeded subset of
    them), split as the pipeline splits them (``heldout_originals(.., 0.2, 0)``)."""
    from pipelines import builtin_data
    from pipelines.training_data import heldout_originals

    x = builtin_data.load(case.data, case.size)
    if x.ndim == 3:
        x = x[..., None]
    if case.subset is not None:
        keep = np.sort(np.random.default_rng(0).permutation(len(x))[: case.subset])
        x = x[keep]
    src = np.arange(len(x))
    held = heldout_originals(src, 0.2, 0)
    mask = ~np.isin(src, held)
    t = torch.as_tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return t[torch.as_tensor(mask)], t[torch.as_tensor(held)]


#: The default scenarios' CPU recipe (scenarios/*.yaml, ``gan:``), pinned here so that the
#: reference set does not move when a scenario file is edited: pytorch/examples DCGAN of
#: width 32, EMA of G (half-life 2000 images), rotation self-supervision (D 1.0, G 0.2).
RECIPE = {"model": {"arch": "dcgan", "width": 32}, "train": {"batch_size": 32, "ema_half_life_images": 2000, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2}}
BATCH_SIZE = {"digits": 64}  # the scenario's batch size where it is not 32


def gan_config(case: Case, model: str, *, quick: bool, threads: int) -> dict:
    """The recipe with the step budget of ``model`` ('good', 'default', 'early' or
    'seed-dcgan'), as a plain dict."""
    steps = {"good": case.good_steps, "default": case.default_steps, "early": case.early_steps, "seed-dcgan": case.seed_dcgan_steps}[model]
    if steps is None:
        raise ValueError(f"case {case.name} has no {model!r} model")
    if quick:
        steps = {"good": 30, "default": 10, "early": 3, "seed-dcgan": 3}[model]
    batch = case.batch_size or BATCH_SIZE.get(case.data, RECIPE["train"]["batch_size"])
    model_cfg = {**RECIPE["model"], "resolution": case.size, "channels": 3 if case.data == "histology" else 1}
    train_cfg = {
        **RECIPE["train"],
        "batch_size": batch,
        "steps": steps,
        "checkpoint_every": steps,
        "log_every": max(1, steps // 100),
        "num_threads": threads,
        "seed": 0,
        "device": "cpu",
    }
    if model == "seed-dcgan":
        model_cfg = {"arch": "seed-dcgan", "resolution": case.size, "channels": model_cfg["channels"]}
    return {"model": model_cfg, "train": train_cfg}


def trained_generator(case: Case, model: str, workdir: str | Path, *, threads: int, quick: bool) -> Path:
    """Path of the generator for (case, model), trained unless ``workdir`` already holds
    one trained with the same config on the same images."""
    from gan_core import load_config, train

    cfg = gan_config(case, model, quick=quick, threads=threads)
    train_x, _ = load_case(case)
    key = {"config": cfg, "n_train": int(len(train_x)), "data_sum": int(train_x.sum())}
    out = Path(workdir) / case.name / model
    spec = out / "spec.json"
    gen = out / "generator.safetensors"
    if gen.is_file() and spec.is_file() and json.loads(spec.read_text()) == key:
        return gen
    train(load_config(cfg, source=f"{case.name}/{model}"), train_x, out, progress=False, resume=False)
    spec.write_text(json.dumps(key, sort_keys=True))
    return gen


#: model -> what it is (what a person decides about it: ``person_label``).
MODELS: dict[str, str] = {
    "ideal": "held-out real images",
    "jitter": "held-out reals shifted by up to 1 px",
    "good": "recipe, good_steps (3000) steps",
    "default": "recipe, the scenario's CPU budget",
    "early": "recipe, 100 steps",
    "seed-dcgan": "arch seed-dcgan, 300 steps (collapses)",
    "collapsed": "good generator fed one latent: one image repeated",
    "untrained": "generator at initialization",
    "uniform": "uniform noise",
    "gaussian": "Gaussian noise, per-pixel mean/std of the reals",
    "blurred": "held-out reals, Gaussian blur sigma 1 px",
    "copies": "training images drawn with replacement",
}
#: (case, model) -> what a person decides: "promote", "refuse" or "borderline" (not
#: counted). By construction for everything but the trained generators, whose labels
#: come from looking at their sample grids (docs/BENCHMARKS.md says what they show).
PROMOTE_BY_CONSTRUCTION = {"ideal", "jitter"}
PERSON_TRAINED = {
    ("faces", "good"): "promote",  # recognisable faces, some artefacts: the best 80 faces give at this budget
    ("textures", "good"): "borderline",  # fair bricks and gravel, smeared stones, some brick/gravel hybrids, no grass
    ("histology", "good"): "refuse",  # right colours, no membranes and no nuclei
    ("digits", "good"): "refuse",  # digit shapes, grey speckled background, many illegible
    ("digits50", "good"): "refuse",  # few blurry shapes, speckled background
    ("digits", "default"): "refuse",  # blurrier digits than at 3000 steps, speckled background
    ("faces", "default"): "refuse",  # ghostly, smooth, dark faces
    ("histology", "default"): "refuse",  # blurry brown and white fields
    ("textures", "default"): "refuse",  # blurry grey blotches
}
#: the criterion that must refuse each bad model made by construction
EXPECTED_FAILURE = {
    "early": "fidelity",
    "collapsed": "diversity",
    "untrained": "fidelity",
    "uniform": "fidelity",
    "gaussian": "realism",
    "blurred": "realism",
    "copies": "memorization",
    "seed-dcgan": "diversity",
}


#: How a person ranks the models of one case: 1 promote; 2 refuse for one missing property
#: (detail, diversity, originality, structure: it still resembles the data); 3 not the data.
TIER_3 = {"early", "untrained", "uniform", "gaussian", "seed-dcgan"}


def person_tier(case: str, model: str) -> int | None:
    label = person_label(case, model)
    if label == "borderline":
        return None
    return 1 if label == "promote" else 3 if model in TIER_3 else 2


def person_label(case: str, model: str) -> str:
    if model in PROMOTE_BY_CONSTRUCTION:
        return "promote"
    if model in ("good", "default"):
        return PERSON_TRAINED.get((case, model), "borderline")
    return "refuse"


QUICK = {"cases": ["digits50"], "n_samples": 60, "ruler_steps": 30}


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius ceil(3 sigma), reflect padding) of float (N, C, H, W)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def jitter(x: torch.Tensor, g: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Each image shifted by a random whole number of pixels in [-pixels, pixels] along
    each axis (reflect padding): a change no person would call a defect."""
    p = pixels
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    dy = torch.randint(0, 2 * p + 1, (len(x),), generator=g)
    dx = torch.randint(0, 2 * p + 1, (len(x),), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(len(x))])


def reference_samples(case: Case, train: torch.Tensor, held: torch.Tensor, *, workdir: Path, n: int, threads: int, quick: bool, log) -> dict[str, torch.Tensor]:
    """model name -> float samples (N, C, H, W) in [-1, 1]."""
    from gan_core import build_models, load_config, load_generator
    from gan_core.sampling import generate, latents

    g = torch.Generator().manual_seed(1234)
    shape = tuple(train.shape[1:])
    out: dict[str, torch.Tensor] = {"ideal": held, "jitter": jitter(held, g)}
    trained = ["good"] + (["default"] if case.default_steps else []) + ["early"] + (["seed-dcgan"] if case.seed_dcgan_steps else [])
    for model in trained:
        t0 = time.perf_counter()
        path = trained_generator(case, model, workdir, threads=threads, quick=quick)
        log(f"  {case.name}/{model}: generator ready ({time.perf_counter() - t0:.0f} s)")
        gen, cfg, _ = load_generator(path)
        out[model] = generate(gen, latents(n, gen.z_dim, seed=1))
        if model == "good":
            out["collapsed"] = generate(gen, latents(1, gen.z_dim, seed=1).repeat(n, 1))
    cfg = load_config(gan_config(case, "good", quick=quick, threads=threads))
    untrained, _ = build_models(cfg, seed=0)
    out["untrained"] = generate(untrained, latents(n, cfg.model.z_dim, seed=1))
    out["uniform"] = torch.rand(n, *shape, generator=g) * 2 - 1
    out["gaussian"] = (train.mean(0) + train.std(0) * torch.randn(n, *shape, generator=g)).clamp(-1, 1)
    out["blurred"] = gaussian_blur(held, 1.0).clamp(-1, 1)
    out["copies"] = train[torch.randint(0, len(train), (n,), generator=g)]
    return out


def old_gate(m: dict[str, Any]) -> bool:
    """The promotion gate before the verdict: FID/floor <= 20 and near-copy share <= 0.05."""
    return m["fid_over_floor"] <= 20 and m["near_copy_share"] <= 0.05


def run_case(case: Case, opts: argparse.Namespace, workdir: Path, log) -> dict[str, Any]:
    from gan_core.features import train_feature_net
    from gan_core.verdict import Bar, judge, verdict_metrics

    train_u8, held_u8 = load_case(case)
    train = train_u8.float() / 127.5 - 1
    held = held_u8.float() / 127.5 - 1
    n = opts.n_samples or max(len(train), 500)
    samples = reference_samples(case, train, held, workdir=workdir, n=n, threads=opts.threads, quick=opts.quick, log=log)
    t0 = time.perf_counter()
    ruler = train_feature_net(train, seed=0, steps=opts.ruler_steps)
    ruler_s = time.perf_counter() - t0
    bar = Bar()
    rows = []
    for model, fake in samples.items():
        m = verdict_metrics(train, held, fake, extractor=ruler, seed=opts.seed)
        v = judge(m, bar)
        row = {
            "case": case.name,
            "model": model,
            "what": MODELS[model],
            "person": person_label(case.name, model) if not opts.quick else "n/a (quick)",
            "person_tier": person_tier(case.name, model) if not opts.quick else None,
            "failed_checks": len(v.failed),
            "n_samples": int(len(fake)),
            **{k: v_ for k, v_ in m.items() if k != "details"},
            "c2st_fold_accuracies": m["details"]["c2st"]["fold_accuracies"],
            "old_gate": old_gate(m),
            "verdict": v.to_dict(),
        }
        rows.append(row)
        log(short_line(row))
    return {"case": case.name, "n_train": int(len(train)), "n_heldout": int(len(held)), "n_samples": n, "ruler_train_s": round(ruler_s, 2), "rows": rows}


def short_line(r: dict[str, Any]) -> str:
    v = r["verdict"]
    return (
        f"  {r['case']:9s} {r['model']:9s} FID/floor {r['fid_over_floor']:7.2f} P {r['precision']:.2f} R {r['recall']:.2f} "
        f"C2ST {r['c2st_accuracy']:.2f} (n={r['c2st_n']}) sharp {r['sharpness_ratio']:.2f} 1NN {r['nn1_accuracy']:.2f} "
        f"copies {r['near_copy_share']:.2f} -> {'PASS' if v['passed'] else 'fail: ' + ','.join(v['failed_criteria'])}"
    )


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| case | model | FID / floor | precision (floor) | recall (floor) | C2ST acc [95 % CI] (n/class) | sharpness [floor band] | 1-NN acc | near-copies | old gate | verdict (failed checks) | person |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for c in result["cases"]:
        for r in c["rows"]:
            v = r["verdict"]
            verdict = "**pass**" if v["passed"] else f"refuse: {', '.join(v['failed_criteria'])} ({r['failed_checks']})"
            person = r["person"]
            lines.append(
                f"| {r['case']} | {r['model']} | {r['fid_over_floor']:.2f} | {r['precision']:.2f} ({r['precision_floor']:.2f}) | "
                f"{r['recall']:.2f} ({r['recall_floor']:.2f}) | {r['c2st_accuracy']:.2f} [{r['c2st_ci_low']:.2f}, {r['c2st_ci_high']:.2f}] ({r['c2st_n']}) | "
                f"{r['sharpness_ratio']:.2f} [{r['sharpness_floor_low']:.2f}, {r['sharpness_floor_high']:.2f}] | {r['nn1_accuracy']:.2f} | "
                f"{r['near_copy_share']:.3f} | {'pass' if r['old_gate'] else 'refuse'} | {verdict} | {person} |"
            )
    return "\n".join(lines)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Agreement with the person, and which criterion refused each bad model."""
    rows = [r for c in result["cases"] for r in c["rows"]]
    decided = [r for r in rows if r["person"] in ("promote", "refuse")]
    agree = [r for r in decided if r["verdict"]["passed"] == (r["person"] == "promote")]
    expected = [
        r for r in rows
        if r["model"] in EXPECTED_FAILURE and EXPECTED_FAILURE[r["model"]] in r["verdict"]["failed_criteria"]
    ]
    # ranking: within a case, for every pair a person puts in different tiers, does the
    # model with more failed checks sit in the worse tier?
    concordant = tied = discordant = 0
    for c in result["cases"]:
        ranked = [r for r in c["rows"] if r["person_tier"] is not None]
        for i, a in enumerate(ranked):
            for b in ranked[i + 1 :]:
                if a["person_tier"] == b["person_tier"]:
                    continue
                d = (a["person_tier"] - b["person_tier"]) * (a["failed_checks"] - b["failed_checks"])
                concordant += d > 0
                tied += d == 0
                discordant += d < 0
    seconds: dict[str, list[float]] = {}
    for r in rows:
        for k, s in r["seconds"].items():
            seconds.setdefault(k, []).append(s)
    return {
        "rows": len(rows),
        "rows_with_a_clear_person_verdict": len(decided),
        "verdict_agrees_with_person": len(agree),
        "old_gate_agrees_with_person": sum(r["old_gate"] == (r["person"] == "promote") for r in decided),
        "disagreements": [f"{r['case']}/{r['model']}" for r in decided if r not in agree],
        "borderline": {f"{r['case']}/{r['model']}": "pass" if r["verdict"]["passed"] else "refuse" for r in rows if r["person"] == "borderline"},
        "ranking_pairs_by_failed_checks": {"concordant": concordant, "tied": tied, "discordant": discordant},
        "bad_models_refused_by_expected_criterion": f"{len(expected)}/{sum(r['model'] in EXPECTED_FAILURE for r in rows)}",
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
        "seconds_max": {k: round(max(v), 3) for k, v in seconds.items()},
    }


def margins(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per check: its bar, the value closest to failing among the models a person
    promotes (and that pass it), and the value closest to passing among the models a
    person refuses that this check refuses -- the room on either side of the bar."""
    rows = [r for c in result["cases"] for r in c["rows"]]
    out = []
    names = [(c["criterion"], c["measure"], c["op"]) for c in rows[0]["verdict"]["checks"]] if rows else []
    for i, (criterion, measure, op) in enumerate(names):
        passing, refusing = [], []
        for r in rows:
            c = r["verdict"]["checks"][i]
            where = f"{r['case']}/{r['model']}"
            if r["person"] == "promote" and c["passed"]:
                passing.append((c["margin"], c["value"], c["bar"], where))
            if r["person"] == "refuse" and not c["passed"]:
                refusing.append((-c["margin"], c["value"], c["bar"], where))
        entry: dict[str, Any] = {"criterion": criterion, "measure": measure, "op": op}
        if passing:
            m, v, b, w = min(passing)
            entry["closest_promoted"] = {"model": w, "value": v, "bar": b, "margin": m}
        if refusing:
            m, v, b, w = min(refusing)
            entry["closest_refused"] = {"model": w, "value": v, "bar": b, "margin": -m}
            entry["refuses"] = len(refusing)
        out.append(entry)
    return out


def run(opts: argparse.Namespace, log=print) -> dict[str, Any]:
    from gan_core.verdict import Bar
    from dataclasses import asdict

    torch.set_num_threads(opts.threads)
    t0 = time.perf_counter()
    load0 = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(opts.workdir) if opts.workdir else Path(tmp)
        cases = [run_case(CASES[name], opts, workdir, log) for name in opts.cases]
    result = {
        "benchmark": "bench_verdict",
        "settings": {
            "cases": opts.cases,
            "quick": opts.quick,
            "n_samples": opts.n_samples,
            "ruler_steps": opts.ruler_steps,
            "seed": opts.seed,
            "threads": opts.threads,
        },
        "bar": asdict(Bar()),
        "cases": cases,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": {**machine_info(), "torch": torch.__version__, "threads": opts.threads, "loadavg_start": load0, "loadavg_end": loadavg()},
    }
    result["summary"] = summarize(result)
    result["margins"] = margins(result)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_verdict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=None, help="cases to run (default: all)")
    p.add_argument("--n-samples", type=int, default=None, help="samples per generated model (default max(n_train, 500))")
    p.add_argument("--ruler-steps", type=int, default=None, help="feature-net training steps (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--workdir", help="keep the trained generators here and reuse them on the next run")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK}, generators trained 30 / 3 steps (explicit flags still win)")
    opts = p.parse_args(argv)
    q = QUICK if opts.quick else {}
    opts.cases = opts.cases or q.get("cases") or list(CASES)
    opts.n_samples = opts.n_samples or q.get("n_samples")
    opts.ruler_steps = opts.ruler_steps or q.get("ruler_steps", 300)
    return opts


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    opts = parse_args(argv)
    result = run(opts)
    print(to_markdown(result))
    print(json.dumps(result["summary"], indent=2))
    for m in result["margins"]:
        p, r = m.get("closest_promoted"), m.get("closest_refused")
        print(
            f"{m['criterion']:12s} {m['measure']:16s} {m['op']} bar: "
            + (f"closest promoted {p['model']} {p['value']:.3g} (bar {p['bar']:.3g}, margin {p['margin']:+.2f}); " if p else "")
            + (f"closest refused {r['model']} {r['value']:.3g} (bar {r['bar']:.3g}, margin {r['margin']:+.2f}), refuses {m['refuses']}" if r else "refuses none")
        )
    write_result(opts.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
