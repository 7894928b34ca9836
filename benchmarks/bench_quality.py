"""Quality at equal step budgets: the small-data recipe against ``seed-dcgan``.

Data: the 100 real faces of scikit-image's ``lfw_subset`` (32x32 grey; the other
100 images of that set are non-face patches and are not used). Every variant trains
for the same number of steps with the same batch size and seed; then 1,000 samples
from each (EMA generator where the variant has one) are scored against the 100 real
faces with one fixed ruler: a small CNN trained once by rotation prediction on those
faces (``gan_core.features``). Reported with two reference points measured with the
same ruler and sample counts: the floor (the real faces themselves, 100 vs 100 — the
best achievable with these counts) and uniform noise.

    python -m benchmarks.bench_quality                      # budgets 300 and 1000 steps
    python -m benchmarks.bench_quality --budgets 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

VARIANTS: dict[str, dict] = {
    # the founding baseline
    "seed-dcgan": {"model": {"arch": "seed-dcgan"}, "train": {}},
    # pytorch/examples DCGAN, then the small-data pieces added one at a time
    "dcgan": {"model": {"arch": "dcgan", "width": 32}, "train": {}},
    "dcgan+ema": {"model": {"arch": "dcgan", "width": 32}, "train": {"ema_half_life_images": 2000}},
    # the recipe the default scenarios use: EMA of G + self-supervised rotation loss
    "recipe": {"model": {"arch": "dcgan", "width": 32}, "train": {"ema_half_life_images": 2000, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2}},
    "recipe+sn+hinge": {
        "model": {"arch": "dcgan", "width": 32, "spectral_norm": True},
        "train": {"loss": "hinge", "ema_half_life_images": 2000, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2},
    },
    "recipe+sn+hinge+diffaug": {
        "model": {"arch": "dcgan", "width": 32, "spectral_norm": True},
        "train": {"loss": "hinge", "diffaug": "translation,cutout", "ema_half_life_images": 2000, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2},
    },
}
DEFAULT_VARIANTS = list(VARIANTS)


def config_for(variant: str, steps: int, batch_size: int, seed: int, threads: int) -> dict:
    v = VARIANTS[variant]
    model = {"resolution": 32, "channels": 1, **v["model"]}
    train = {"steps": steps, "batch_size": batch_size, "seed": seed, "num_threads": threads, "checkpoint_every": steps, **v["train"]}
    return {"model": model, "train": train}


def score(real: torch.Tensor, fake: torch.Tensor, extractor) -> dict[str, float]:
    from gan_core.features import extract_features
    from gan_core.fid import fid_from_features, kid_from_features
    from gan_core.manifold import precision_recall

    f_real = extract_features(real, extractor)
    f_fake = extract_features(fake, extractor)
    size = min(len(real), len(fake), 100)
    kid_m, _ = kid_from_features(f_real, f_fake, subsets=50, subset_size=size, seed=0)
    pr = precision_recall(f_real, f_fake, k=3)
    return {"fd": fid_from_features(f_real, f_fake), "kid": kid_m, "precision": pr["precision"], "recall": pr["recall"]}


def run(budgets: list[int], variants: list[str], *, batch_size: int, seed: int, threads: int, n_fake: int, workdir: Path) -> dict:
    from gan_core import load_config, load_generator, train
    from gan_core.features import train_feature_net
    from gan_core.manifold import memorization_audit
    from gan_core.sampling import generate, latents
    from pipelines.builtin_data import faces

    torch.set_num_threads(threads)
    real_u8 = torch.as_tensor(faces(32)).permute(0, 3, 1, 2).contiguous()  # (100, 1, 32, 32)
    real = real_u8.float() / 127.5 - 1
    t0 = time.perf_counter()
    extractor = train_feature_net(real, seed=0, steps=400)
    ruler_s = time.perf_counter() - t0
    noise = torch.rand(n_fake, *real.shape[1:], generator=torch.Generator().manual_seed(1)) * 2 - 1
    # Floor: real vs real with the same counts as a model (all 100 real vs 1000 "samples"
    # drawn with replacement from the real faces would reward copying), so the floor is
    # measured as the two halves of the real faces against each other, 50 vs 50, and
    # the full table also scores the real faces against themselves for reference.
    half = torch.randperm(len(real), generator=torch.Generator().manual_seed(2))
    floor = score(real[half[:50]], real[half[50:]], extractor)
    rows = []
    for steps in budgets:
        for name in variants:
            cfg = load_config(config_for(name, steps, batch_size, seed, threads), source=f"variant {name}")
            t0 = time.perf_counter()
            res = train(cfg, real_u8, workdir / f"{name}-{steps}", progress=False, resume=False)
            wall = time.perf_counter() - t0
            g, _, _ = load_generator(res.generator_path)
            fake = generate(g, latents(n_fake, cfg.model.z_dim, seed=123))
            s = score(real, fake, extractor)
            audit = memorization_audit(real, fake[:500])
            rows.append({"variant": name, "steps": steps, "wall_s": round(wall, 1), **{k: round(v, 4) for k, v in s.items()}, "near_copy_share": audit["near_copy_share"]})
            print(json.dumps(rows[-1]), flush=True)
    return {
        "data": "skimage lfw_subset faces, 100 images, 32x32x1",
        "ruler": "SSLFeatureNet (rotation prediction, 400 steps, seed 0) trained on the 100 faces",
        "ruler_train_s": round(ruler_s, 1),
        "n_fake": n_fake,
        "batch_size": batch_size,
        "seed": seed,
        "floor_50_vs_50": {k: round(v, 4) for k, v in floor.items()},
        "noise": {k: round(v, 4) for k, v in score(real, noise, extractor).items()},
        "rows": rows,
        "machine": {"torch": torch.__version__, "threads": threads, "platform": platform.platform()},
    }


def to_markdown(result: dict) -> str:
    lines = [
        f"Data: {result['data']}. Ruler: {result['ruler']}. {result['n_fake']} samples per model, batch {result['batch_size']}, seed {result['seed']}.",
        "",
        "| variant | steps | wall s | FD ↓ | KID ↓ | precision ↑ | recall ↑ | near-copies |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['steps']} | {r['wall_s']} | {r['fd']:.2f} | {r['kid']:.4f} | {r['precision']:.2f} | {r['recall']:.2f} | {r['near_copy_share']:.3f} |")
    f, n = result["floor_50_vs_50"], result["noise"]
    lines.append(f"| *floor: real 50 vs real 50* | | | {f['fd']:.2f} | {f['kid']:.4f} | {f['precision']:.2f} | {f['recall']:.2f} | |")
    lines.append(f"| *uniform noise* | | | {n['fd']:.2f} | {n['kid']:.4f} | {n['precision']:.2f} | {n['recall']:.2f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[300, 1000])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-fake", type=int, default=1000)
    p.add_argument("--json", type=Path)
    p.add_argument("--workdir", type=Path, help="keep the trained models here (default: a temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        result = run(args.budgets, args.variants, batch_size=args.batch_size, seed=args.seed, threads=args.threads, n_fake=args.n_fake, workdir=workdir)
    print(to_markdown(result))
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
