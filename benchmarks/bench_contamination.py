"""Contamination checks: how many mixed-in images ``outlier_score`` flags, how many real
ones it flags, what ``near_duplicate_of`` catches, and what it all costs per image.

    python -m benchmarks.bench_contamination                         # ~2 min on 2 busy cores
    python -m benchmarks.bench_contamination --draws 10 --sizes 1000 10000 100000 --out contamination.json
    python -m benchmarks.bench_contamination --quick --out /tmp/contamination.json   # smoke test, seconds

Every number uses one bound, ``outlier_score > OUTLIER_THRESHOLD`` (robust z, 4.0), the
same for every scenario and contaminant; nothing is tuned per case. Images are the real
ones that installed packages ship (``pipelines.builtin_data``), at the scenario's size and
channels, scored by :func:`pipelines.contamination.outlier_scores` over clean + mixed-in
images together, as ingestion does:

- ``nonfaces_among_faces``       30 of lfw_subset's 100 non-face patches among its 100 faces;
- ``photo_patches_among_faces``  30 grey 25x25 patches of other scikit-image photos
  (camera, coins, moon, astronaut, page, text, coffee, chelsea, rocket), resized as the
  faces are;
- ``histology_among_textures``   30 histology crops (not the scenario's own), in grey, among
  the 300 textures;
- more cases, never used to choose anything either: photo patches of photos first shrunk
  to 1/2 and 1/4 (more of the photo in 25x25: harder), patches of other photos (cell, clock,
  hubble_deep_field, retina, cat, ...), faces among textures, grey textures and grey photo
  patches among the RGB histology, textures and non-faces among the 16 px digits, and 10 or
  50 non-faces among the faces.

Each case is drawn ``--draws`` times (different contaminants); reported: the mean and the
minimum share of contaminants flagged, and the mean share of real images flagged (false
positives). For the three faces cases the share the hand-set bounds of
``scenarios/faces.yaml`` (mean, std, max) would catch is given beside it.

``clean``: the real ``ingest`` + ``validate`` steps on each shipped scenario as it ships
(``scenarios/<name>.yaml``, its own built-in images): how many images ``set_aside``
removes from data that holds no contamination.

``near_duplicates``: per scenario's images, distinct images paired by mistake (should be
0), and for a sample of images the share of edited copies caught (JPEG at quality
90/75/50, brightness +8 %, contrast 0.9, Gaussian blur 0.5 px, noise sigma 3, shrunk to
3/4 and back, and - not meant to be caught - a 1 px crop or shift).

``cost``: CPU seconds per 1,000 images of the contamination columns (features, outlier
score, perceptual hash, near-duplicate search) on N random crops of the texture photos
(32 px grey) and of the histology slide (32 px RGB) for each of ``--sizes``; one thread.
The crops overlap more as N grows, so more of them are near-duplicates (reported), and
each pair found costs a pixel comparison.

``main(argv)`` returns the exit status; ``run(opts)`` returns the result dictionary that
``--out`` writes.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.harness import loadavg, machine_info

DEFAULTS = {"draws": 5, "sizes": [1000, 10000, 100000], "edit_sample": 50}
QUICK = {"draws": 1, "sizes": [500, 2000], "edit_sample": 10}
OTHER_PHOTOS = ("cell", "clock", "hubble_deep_field", "retina", "cat", "shepp_logan_phantom", "microaneurysms", "colorwheel", "checkerboard")
FACE_BOUNDS = {"mean": (0.25, 0.75), "std": (0.08, 0.35), "max": (0.5, None)}
"""The hand-set bounds of scenarios/faces.yaml, for comparison."""
EDITS = ("jpeg90", "jpeg75", "jpeg50", "brighter", "contrast", "blur", "noise", "down_up", "crop1", "shift1")


def _rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def cases(draw: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean images, contaminants) for one draw."""
    from pipelines import builtin_data as bd

    rng = np.random.default_rng(draw)
    faces, textures, histology, digits = bd.faces(32), bd.textures(32), bd.histology(32), bd.digits(16)
    nonfaces = bd.nonfaces(32)
    return {
        "nonfaces_among_faces": (faces, nonfaces[rng.choice(100, 30, replace=False)]),
        "photo_patches_among_faces": (faces, bd.photo_patches(32, n=30, seed=draw)),
        "histology_among_textures": (textures, bd.to_grey(bd.histology(32, n=30, seed=100 + draw))),
        "photo_patches_1/2_among_faces": (faces, bd.photo_patches(32, n=30, scale=0.5, seed=200 + draw)),
        "photo_patches_1/4_among_faces": (faces, bd.photo_patches(32, n=30, scale=0.25, seed=300 + draw)),
        "other_photo_patches_among_faces": (faces, bd.photo_patches(32, n=30, seed=400 + draw, names=OTHER_PHOTOS)),
        "faces_among_textures": (textures, faces[rng.choice(100, 30, replace=False)]),
        "grey_textures_among_histology": (histology, _rgb(textures[rng.choice(300, 30, replace=False)])),
        "grey_photo_patches_among_histology": (histology, _rgb(bd.photo_patches(32, n=30, seed=500 + draw))),
        "textures_among_digits": (digits, bd.textures(16)[rng.choice(300, 30, replace=False)]),
        "nonfaces_among_digits": (digits, bd.nonfaces(16)[rng.choice(100, 30, replace=False)]),
        "10_nonfaces_among_faces": (faces, nonfaces[rng.choice(100, 10, replace=False)]),
        "50_nonfaces_among_faces": (faces, nonfaces[rng.choice(100, 50, replace=False)]),
    }


def _bounds_flag(images: np.ndarray) -> np.ndarray:
    """Which images the hand-set faces.yaml bounds reject."""
    from pipelines.decode import image_stats

    out = []
    for im in images:
        st = image_stats(im)
        out.append(any((lo is not None and st[k] < lo) or (hi is not None and st[k] > hi) for k, (lo, hi) in FACE_BOUNDS.items()))
    return np.array(out)


def measure_cases(draws: int, log: Callable[[str], None]) -> dict[str, Any]:
    from pipelines import contamination

    bound = contamination.OUTLIER_THRESHOLD
    per: dict[str, list[dict[str, float]]] = {}
    for draw in range(draws):
        for name, (clean, bad) in cases(draw).items():
            z = contamination.outlier_scores(contamination.feature_matrix(list(np.concatenate([clean, bad]))))
            row = {"flagged": float(np.mean(z[len(clean) :] > bound)), "false_positive": float(np.mean(z[: len(clean)] > bound))}
            if name.endswith("_among_faces") and not name[0].isdigit():
                row["bounds_flagged"] = float(np.mean(_bounds_flag(bad)))
                row["bounds_false_positive"] = float(np.mean(_bounds_flag(clean)))
            per.setdefault(name, []).append(row)
        log(f"  draw {draw + 1}/{draws} done")
    out = {}
    for name, rows in per.items():
        out[name] = {
            "n_clean": int(len(cases(0)[name][0])), "n_contaminants": int(len(cases(0)[name][1])),
            "flagged_mean": round(statistics.mean(r["flagged"] for r in rows), 4),
            "flagged_min": round(min(r["flagged"] for r in rows), 4),
            "false_positive_mean": round(statistics.mean(r["false_positive"] for r in rows), 4),
            "false_positive_max": round(max(r["false_positive"] for r in rows), 4),
        }
        if "bounds_flagged" in rows[0]:
            out[name]["hand_set_bounds_flagged_mean"] = round(statistics.mean(r["bounds_flagged"] for r in rows), 4)
            out[name]["hand_set_bounds_false_positive"] = round(statistics.mean(r["bounds_false_positive"] for r in rows), 4)
    return out


def measure_clean(log: Callable[[str], None]) -> dict[str, Any]:
    """The shipped scenarios through the real ingest and validate steps."""
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import SCENARIO_DIR, load_scenario
    from pipelines.steps.ingest import ingest
    from pipelines.steps.validate import validate

    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_contamination-") as tmp:
        for name in ("faces", "textures", "histology", "digits"):
            sc = load_scenario(SCENARIO_DIR / f"{name}.yaml")
            paths = ScenarioPaths(name, Roots.under(tmp))
            ing = ingest(sc, paths)
            res = validate(sc, paths)
            report = json.loads(res.report_path.read_text())
            out[name] = {
                "n_images": res.n_rows, "passed": res.passed, "set_aside": res.n_set_aside,
                "set_aside_share": round(res.n_set_aside / res.n_rows, 4), "by_check": report["set_aside"]["by_check"],
                "near_duplicates": ing.n_near_duplicates, "duplicates": ing.n_duplicates,
            }
            log(f"  clean {name}: set aside {res.n_set_aside} of {res.n_rows}")
    return out


def edit(image: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """One edited copy of a uint8 (H, W, C) image, through Pillow where a codec is involved."""
    from PIL import Image, ImageEnhance, ImageFilter

    mode = "L" if image.shape[-1] == 1 else "RGB"
    pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
    s = image.shape[0]
    if how.startswith("jpeg"):
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=int(how[4:]))
        pil = Image.open(io.BytesIO(buf.getvalue())).convert(mode)
    elif how == "brighter":
        pil = ImageEnhance.Brightness(pil).enhance(1.08)
    elif how == "contrast":
        pil = ImageEnhance.Contrast(pil).enhance(0.9)
    elif how == "blur":
        pil = pil.filter(ImageFilter.GaussianBlur(0.5))
    elif how == "noise":
        return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).round().astype(np.uint8)
    elif how == "down_up":
        pil = pil.resize((s * 3 // 4, s * 3 // 4), Image.Resampling.LANCZOS).resize((s, s), Image.Resampling.LANCZOS)
    elif how == "crop1":
        pil = pil.crop((1, 1, s - 1, s - 1)).resize((s, s), Image.Resampling.LANCZOS)
    elif how == "shift1":
        return np.roll(image, 1, axis=1)
    a = np.asarray(pil)
    return a[..., None] if a.ndim == 2 else a


def measure_near_duplicates(sample: int, log: Callable[[str], None]) -> dict[str, Any]:
    from pipelines import builtin_data as bd, contamination

    out = {}
    rng = np.random.default_rng(0)
    for name, size in (("faces", 32), ("digits", 16), ("textures", 32), ("histology", 32)):
        images = list(bd.load(name, size))
        first: dict[bytes, int] = {}
        exact = [first.setdefault(im.tobytes(), i) != i for i, im in enumerate(images)]
        hashes = contamination.perceptual_hashes(images)
        near = contamination.near_duplicates(images, hashes, exact)
        caught: dict[str, list[bool]] = {k: [] for k in EDITS}
        for i in np.linspace(0, len(images) - 1, min(sample, len(images))).round().astype(int):
            for how in EDITS:
                e = edit(images[i], how, rng)
                # the edited copy after the original: what near_duplicate_of would say
                pair = contamination.near_duplicates([images[i], e], contamination.perceptual_hashes([images[i], e]), [False, False])
                caught[how].append(pair[1] == 0)
        out[name] = {
            "n_images": len(images), "distinct_images_paired": sum(j is not None for j in near),
            "edited_copies_caught": {k: round(float(np.mean(v)), 3) for k, v in caught.items()}, "n_edited_per_kind": len(caught[EDITS[0]]),
        }
        log(f"  near duplicates {name}: {out[name]['distinct_images_paired']} distinct images paired")
    return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def measure_cost(sizes: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    from pipelines import builtin_data as bd, contamination

    out: dict[str, Any] = {}
    for label, make in (("32px_grey", lambda n: bd.textures(32, per_texture=-(-n // 3))[:n]), ("32px_rgb", lambda n: bd.histology(32, n=n))):
        rows = {}
        for n in sizes:
            images = list(make(n))
            feats, t_feat = _timed(lambda: contamination.feature_matrix(images))
            _, t_score = _timed(lambda: contamination.outlier_scores(feats))
            hashes, t_hash = _timed(lambda: contamination.perceptual_hashes(images))
            near, t_near = _timed(lambda: contamination.near_duplicates(images, hashes, [False] * n))
            total = t_feat + t_score + t_hash + t_near
            rows[str(n)] = {k: round(v / n * 1000, 4) for k, v in (("features", t_feat), ("outlier_score", t_score), ("phash", t_hash), ("near_duplicates", t_near), ("total", total))}
            # Overlapping random crops of one photo: the more crops, the more of them are
            # near-duplicates, and each found pair costs a pixel comparison.
            rows[str(n)]["near_duplicates_found"] = sum(j is not None for j in near)
            log(f"  cost {label} N={n}: {rows[str(n)]['total']:.3f} CPU s per 1k images")
        first, last = rows[str(sizes[0])]["total"], rows[str(sizes[-1])]["total"]
        out[label] = {"cpu_s_per_1k_images": rows, "largest_over_smallest": round(last / first, 3) if first else None}
    return out


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    from pipelines import contamination

    wall0 = time.perf_counter()
    load_before = loadavg()
    log(f"# bench_contamination: {opts.draws} draws, cost at {opts.sizes}, loadavg {load_before}")
    result = {
        "benchmark": "bench_contamination",
        "settings": {
            "draws": opts.draws, "sizes": opts.sizes, "edit_sample": opts.edit_sample, "quick": opts.quick,
            "outlier_threshold": contamination.OUTLIER_THRESHOLD, "k": contamination.K, "reference_size": contamination.REFERENCE_SIZE,
            "near_hash_bits": contamination.NEAR_HASH_BITS, "near_residual": contamination.NEAR_RESIDUAL,
        },
        "machine": machine_info(),
        "loadavg_before": load_before,
        "cases": measure_cases(opts.draws, log),
        "clean": measure_clean(log),
        "near_duplicates": measure_near_duplicates(opts.edit_sample, log),
        "cost": measure_cost(opts.sizes, log),
    }
    result["loadavg_after"] = loadavg()
    result["wall_s"] = round(time.perf_counter() - wall0, 1)
    return result


def markdown(res: dict[str, Any]) -> str:
    st = res["settings"]
    lines = [
        f"### Contamination: outlier_score > {st['outlier_threshold']} ({st['draws']} draws; k {st['k']}, reference <= {st['reference_size']}; "
        f"loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| case | clean + mixed in | flagged (mean, min) | real images flagged (mean, max) | hand-set bounds of faces.yaml: flagged / real flagged |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in res["cases"].items():
        bounds = f"{c['hand_set_bounds_flagged_mean']:.0%} / {c['hand_set_bounds_false_positive']:.0%}" if "hand_set_bounds_flagged_mean" in c else ""
        lines.append(f"| {name} | {c['n_clean']} + {c['n_contaminants']} | {c['flagged_mean']:.1%} ({c['flagged_min']:.0%}) | {c['false_positive_mean']:.1%} ({c['false_positive_max']:.1%}) | {bounds} |")
    lines += ["", "| shipped scenario (clean) | images | set aside | share | passed |", "|---|---:|---:|---:|---|"]
    for name, c in res["clean"].items():
        lines.append(f"| {name} | {c['n_images']} | {c['set_aside']} | {c['set_aside_share']:.1%} | {c['passed']} |")
    lines += ["", "| images | distinct images paired | " + " | ".join(EDITS) + " |", "|---|---:|" + "---:|" * len(EDITS)]
    for name, c in res["near_duplicates"].items():
        lines.append(f"| {name} ({c['n_images']}) | {c['distinct_images_paired']} | " + " | ".join(f"{c['edited_copies_caught'][k]:.0%}" for k in EDITS) + " |")
    lines += ["", "| images | N | features | outlier_score | phash | near duplicates (found) | total CPU s per 1k images |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, c in res["cost"].items():
        for n, r in c["cpu_s_per_1k_images"].items():
            lines.append(f"| {label} | {int(n):,} | {r['features']:.3f} | {r['outlier_score']:.3f} | {r['phash']:.3f} | {r['near_duplicates']:.3f} ({r['near_duplicates_found']:,}) | {r['total']:.3f} |")
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_contamination", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", type=int, default=None, help=f"random draws of contaminants per case (default {DEFAULTS['draws']})")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help=f"image counts for the cost measurement (default {DEFAULTS['sizes']})")
    p.add_argument("--edit-sample", type=int, default=None, help=f"images per scenario that get edited copies (default {DEFAULTS['edit_sample']})")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--quick", action="store_true", help=f"smoke test {QUICK} (explicit flags still win)")
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.draws < 1 or a.edit_sample < 1 or min(a.sizes) < 10:
        p.error("--draws and --edit-sample must be >= 1 and every --sizes value >= 10")
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
