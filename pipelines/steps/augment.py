"""Augmentation step: the validated images of one scenario -> an augmented dataset.

The scenario's ``augmentation.transforms`` list is turned into an albumentations
``Compose`` (each ``{name, params}`` is ``albumentations.<name>(**params)``), checked
(known transform, valid params, output keeps the image size, channel axis and uint8
dtype), seeded, and written with albumentations' own serialization, so training (or
anyone) can rebuild exactly the same pipeline from ``pipeline.json``.

Outputs in ``paths.augmented`` (all written atomically, ``manifest.json`` last):

    pipeline.json   A.to_dict(compose) + a "scenario_gan" block (seed, size, channels)
    images/         only with offline copies (gan_core.shards, written a chunk at a
                    time): uint8 (N * (1 + copies), H, W, C) -- the originals first,
                    then copy 1 of every image, copy 2, ...; columns source_index: row ->
                    original row; copy_index: 0 for originals, k for copy k
    preview.png     rows = images, first column the original, then augmentations
    manifest.json   counts, content hash, file hashes, notes

Seeding: albumentations 2.0.8 ``Compose(seed=s)`` gives *every* transform its own
generator seeded with the same ``s``, so transforms with equal probabilities make the
same decisions (HorizontalFlip(p=.5) + VerticalFlip(p=.5) flip both or neither, never
one). :func:`seed_pipeline` instead gives the whole pipeline one shared stream; use it
(not ``compose.set_random_seed``) to reseed. ``A.load("pipeline.json")`` rebuilds the
same transforms, but only :func:`load_pipeline` restores the seeding.

No dagster imports; albumentations is imported lazily (it takes ~4 s and checks for
updates online unless ``NO_ALBUMENTATIONS_UPDATE=1``, which this module sets).
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..io import IMAGES_DIR, LEGACY_IMAGES_FILE, atomic_write, json_bytes, sha256_bytes, validation_summary_path
from gan_core.shards import ShardWriter, dataset_digest, remove_dataset
from ..paths import ScenarioPaths
from ..scenario import SCENARIO_DIR, AugmentationSpec, Scenario

if TYPE_CHECKING:  # pragma: no cover
    import albumentations as A

    from gan_core.shards import ShardedImages

PIPELINE_FILE = "pipeline.json"
POLICY_FILE = "policy.json"
POLICY_FORMAT = "scenario-gan.augment-policy/1"
IMAGES_FILE = IMAGES_DIR
CHUNK_IMAGES = 4096
"""Images augmented and written per block (memory does not grow with the dataset)."""
PREVIEW_FILE = "preview.png"
MANIFEST_FILE = "manifest.json"
PREVIEW_COLUMNS = 8
"""Columns of preview.png: the original, then PREVIEW_COLUMNS - 1 augmentations."""
PREVIEW_PADDING = 2

# Names that exist in albumentations but cannot be a step of this pipeline: abstract
# bases, code (not serializable), tensor conversion, 3-D volumes.
_NOT_USABLE = frozenset({"BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D", "Lambda", "ToTensorV2", "ToTensor3D"})
# albumentations 1.x names that 2.x removed, with what to use instead.
_RENAMED = {
    "Cutout": "CoarseDropout",
    "JpegCompression": "ImageCompression",
    "Flip": "HorizontalFlip / VerticalFlip (or SquareSymmetry for all 8 flips and turns)",
    "RandomContrast": "RandomBrightnessContrast",
    "RandomBrightness": "RandomBrightnessContrast",
    "IAAAffine": "Affine",
    "IAAPerspective": "Perspective",
    "IAASharpen": "Sharpen",
    "IAAEmboss": "Emboss",
    "IAAPiecewiseAffine": "PiecewiseAffine",
    "IAAAdditiveGaussianNoise": "GaussNoise",
    "ToTensor": "nothing (training converts to tensors itself)",
}
# albumentations 1.x parameters that 2.x renamed.
_PARAM_HINTS = {
    "always_apply": "removed in albumentations 2; use p: 1.0",
    "height": "2.x crops that resize take size: [height, width]",
    "width": "2.x crops that resize take size: [height, width]",
    "var_limit": "GaussNoise now takes std_range (fractions of the maximum value)",
    "quality_lower": "ImageCompression now takes quality_range: [low, high]",
    "quality_upper": "ImageCompression now takes quality_range: [low, high]",
    "max_holes": "CoarseDropout now takes num_holes_range / hole_height_range / hole_width_range",
    "value": "border/fill values are now fill (image) and fill_mask",
    "cval": "border/fill values are now fill (image) and fill_mask",
    "mode": "border modes are now border_mode",
    "alpha_affine": "removed from ElasticTransform in albumentations 2",
}


class AugmentationError(ValueError):
    """The augmentation policy is invalid, or the step cannot run."""


class MissingInputError(AugmentationError, FileNotFoundError):
    """The validated images this step reads are missing."""


@dataclass
class AugmentResult:
    scenario: str
    n_original: int
    n_images: int
    offline_copies: int
    """Copies actually written (0 when the pipeline is the identity)."""
    content_hash: str
    images_path: Path
    """What training reads: the offline copies, or the validated images."""
    pipeline_path: Path
    policy_path: Path
    preview_path: Path
    manifest_path: Path
    transforms: list[str] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata / DVC logs."""
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# --------------------------------------------------------------------------- helpers


def _albu():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def available_transforms() -> list[str]:
    """Names of albumentations transforms a scenario may list (installed version)."""
    A = _albu()
    from albumentations.core.transforms_interface import BasicTransform

    return sorted(
        n
        for n in dir(A)
        if not n.startswith("_") and n not in _NOT_USABLE and not n.endswith("3D")
        and inspect.isclass(obj := getattr(A, n)) and issubclass(obj, BasicTransform)
    )


def _param_names(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items() if n not in ("self", "strict") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _short(err: BaseException) -> str:
    """One line: pydantic errors as 'field: message', others as their text
    without pydantic's 'For further information visit ...' lines."""
    cause = err if hasattr(err, "errors") else err.__cause__
    if cause is not None and callable(getattr(cause, "errors", None)):
        try:
            items = cause.errors()
        except Exception:  # noqa: BLE001
            items = None
        if items:
            parts = []
            for it in items:
                loc = ".".join(str(x) for x in it.get("loc", ()))
                msg = str(it.get("msg", "")).removeprefix("Value error, ")
                parts.append(f"{loc}: {msg}" if loc else msg)
            return "; ".join(parts)
    lines = [ln.rstrip() for ln in str(err).splitlines() if "errors.pydantic.dev" not in ln]
    return " ".join(ln.strip() for ln in lines if ln.strip())


def _resolve_class(name: str, key: str, source: str):
    A = _albu()
    valid = available_transforms()
    if name in valid:
        return getattr(A, name)
    if name in _RENAMED:
        hint = f"albumentations {A.__version__} removed it; use {_RENAMED[name]}"
    elif hasattr(A, name):
        hint = "it is not an image transform this pipeline can use (compositions such as OneOf, code (Lambda), tensor conversion and 3-D transforms are not supported)"
    else:
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6) or difflib.get_close_matches(name.lower(), [v.lower() for v in valid], n=3, cutoff=0.6)
        close = [v for v in valid if v in close or v.lower() in close]
        hint = f"did you mean {', '.join(close)}?" if close else "no albumentations transform has this name"
    examples = ", ".join(n for n in ("HorizontalFlip", "VerticalFlip", "RandomRotate90", "Affine", "RandomResizedCrop", "RandomBrightnessContrast", "GaussNoise", "CoarseDropout") if n in valid)
    raise AugmentationError(
        f"{source}: {key} = {name!r} is not a usable albumentations {A.__version__} transform: {hint}. "
        f"Examples of valid names: {examples} ({len(valid)} in all; see pipelines.steps.augment.available_transforms())"
    )


def _make_transform(i: int, name: str, params: dict[str, Any], source: str, *, force_p: bool = False):
    """albumentations.<name>(**params) with every problem reported against the YAML key."""
    cls = _resolve_class(name, f"augmentation.transforms[{i}].name", source)
    key = f"augmentation.transforms[{i}].params"
    allowed = _param_names(cls)
    unknown = [k for k in params if k not in allowed]
    if unknown:
        hints = "; ".join(f"{k}: {_PARAM_HINTS[k]}" for k in unknown if k in _PARAM_HINTS)
        raise AugmentationError(
            f"{source}: {key} = {params!r}: {name} has no parameter(s) {', '.join(map(repr, unknown))}"
            f"{' (' + hints + ')' if hints else ''}. Valid parameters of {name}: {', '.join(allowed)}"
        )
    kwargs = dict(params, p=1.0) if force_p else dict(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                # strict: albumentations raises instead of warning and using defaults.
                t = cls(**kwargs, strict=True)
            except TypeError as e:
                if "'strict'" not in str(e):
                    raise
                t = cls(**kwargs)  # a class whose __init__ takes no strict (e.g. RandomRotate90)
        except (ValueError, TypeError) as e:
            raise AugmentationError(f"{source}: {key} = {params!r} is not valid for {name}: {_short(e).rstrip('.')}. Valid parameters of {name}: {', '.join(allowed)}") from None
    return t, [f"{name}: {w.message}" for w in caught]


def seed_pipeline(pipeline: "A.Compose", seed: int | None) -> "A.Compose":
    """Seed the whole pipeline with ONE random stream shared by all its transforms.

    (``Compose.set_random_seed`` seeds every transform with the same seed, which makes
    transforms with equal probabilities fire together.) Returns ``pipeline``."""
    pipeline.seed = seed
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline


def _probe_image(size: int, channels: int) -> np.ndarray:
    # Smooth structure plus noise, so content-dependent transforms have something to work on.
    rng = np.random.default_rng(12345)
    yy, xx = np.mgrid[0:size, 0:size]
    base = (yy * 7 + xx * 3) % 256
    img = (base[..., None] + rng.integers(0, 40, (size, size, channels))) % 256
    return img.astype(np.uint8)


def _check_keeps_shape(spec: AugmentationSpec, size: int, channels: int, source: str) -> list[str]:
    """Run every transform with p=1, chained as in the pipeline, on a dummy image; the
    output must keep (size, size, channels) and uint8 after each one."""
    notes: list[str] = []
    img = _probe_image(size, channels)
    for i, t in enumerate(spec.transforms):
        probe, _ = _make_transform(i, t.name, t.params, source, force_p=True)
        probe.set_random_seed(0)
        shape_in = img.shape
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = probe(image=img)["image"]
            except Exception as e:  # noqa: BLE001 - any failure of the library is reported against the key
                why = _short(e)
                hint = ". Transforms that need masks, boxes or reference images cannot be used here" if ("requires" in why or "missing keys" in why or isinstance(e, KeyError)) else ""
                raise AugmentationError(
                    f"{source}: augmentation.transforms[{i}] ({t.name} {t.params!r}) fails on a {size}x{size}x{channels} uint8 image "
                    f"(image.channels = {channels}): {type(e).__name__}: {why}{hint}"
                ) from None
        notes += [f"{t.name} on {channels}-channel images: {w.message}" for w in caught]
        out = np.asarray(out)
        if out.ndim == 2 and channels == 1:
            out = out[..., None]
        if out.shape != shape_in or out.dtype != np.uint8:
            raise AugmentationError(
                f"{source}: augmentation.transforms[{i}] ({t.name} {t.params!r}) turns a {shape_in} uint8 image into "
                f"{out.shape} {out.dtype}; the pipeline must keep image.size {size} x {size}, {channels} channel(s) and uint8"
                + (f" (e.g. give crops size: [{size}, {size}])" if out.shape[:2] != shape_in[:2] else "")
            )
        img = out
    return notes


# --------------------------------------------------------------------------- routes
#
# Where each listed transform acts in training. G learns whatever the real images look
# like, so a transform applied to the real images only must keep the data's
# distribution: only the symmetries the scenario declares (augmentation.invariances).
# A transform that changes the images (shifts, zooms, brightness, holes) is applied to
# real and generated images alike on D's input, as the differentiable op of gan_core
# that does the same thing (DiffAugment / ADA): D is harder to overfit and G is not
# taught the transform. Anything else is refused.

INVARIANCES = ("horizontal_flip", "vertical_flip", "rotate90", "transpose")
SYMMETRIES: dict[str, tuple[str, ...]] = {
    "HorizontalFlip": ("horizontal_flip",),
    "VerticalFlip": ("vertical_flip",),
    "RandomRotate90": ("rotate90",),
    "Transpose": ("transpose",),
    "SquareSymmetry": INVARIANCES,
    "D4": INVARIANCES,
}


@dataclass(frozen=True)
class Route:
    """Where ``augmentation.transforms[index]`` acts: ``reals`` (albumentations, real
    images only, per batch) or ``discriminator`` (``ops`` on D's input, real and
    generated images alike)."""

    index: int
    name: str
    target: str
    why: str
    ops: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "to": self.target, "why": self.why, **({"ops": list(self.ops)} if self.ops else {})}


def _symmetric(name: str, key: str, lo_hi: Any, what: str) -> float:
    lo, hi = (float(v) for v in lo_hi)
    if abs(lo + hi) > 1e-9:
        raise ValueError(f"{key} {[lo, hi]} is not symmetric around 0; on D's input {what} is drawn from [-x, x]: give [-x, x]")
    return hi


def _same_xy(key: str, d: Any) -> Any:
    if isinstance(d, dict):
        if d.get("x") != d.get("y"):
            raise ValueError(f"{key} differs between x and y ({d}); on D's input it is the same in both directions")
        return d["x"]
    return d


def _brightness_contrast_ops(d: dict[str, Any]) -> list[dict[str, Any]]:
    if not d.get("brightness_by_max", True):
        raise ValueError("brightness_by_max: false (brightness relative to the image mean) has no counterpart on D's input; use the default (true)")
    b = _symmetric("RandomBrightnessContrast", "brightness_limit", d["brightness_limit"], "the brightness shift")
    c = _symmetric("RandomBrightnessContrast", "contrast_limit", d["contrast_limit"], "the contrast factor")
    ops = [{"op": "brightness", "limit": b, "p": d["p"]}] if b > 0 else []
    return ops + ([{"op": "contrast", "limit": c, "p": d["p"]}] if c > 0 else [])


def _affine_ops(d: dict[str, Any]) -> list[dict[str, Any]]:
    if any(abs(float(v)) > 1e-9 for v in _same_xy("shear", d["shear"])):
        raise ValueError(f"shear {list(_same_xy('shear', d['shear']))} has no counterpart on D's input; remove it")
    px = d.get("translate_px")
    if px is not None and any(int(v) != 0 for v in (*px["x"], *px["y"])):
        raise ValueError("translate_px has no counterpart on D's input; give translate_percent")
    pct = d.get("translate_percent")
    t = 0.0 if pct is None else _symmetric("Affine", "translate_percent", _same_xy("translate_percent", pct), "the shift")
    lo, hi = (float(v) for v in _same_xy("scale", d["scale"]))
    r = _symmetric("Affine", "rotate", d["rotate"], "the angle")
    return [{"op": "affine", "translate": t, "scale": [lo, hi], "rotate": r, "p": d["p"]}]


def _random_resized_crop_ops(d: dict[str, Any]) -> list[dict[str, Any]]:
    lo, hi = (float(v) for v in d["scale"])
    rlo, rhi = (float(v) for v in d["ratio"])
    if rlo < 0.75 or rhi > 4 / 3:
        raise ValueError(f"ratio {[rlo, rhi]} distorts the aspect; on D's input the crop keeps it: use a ratio within [0.75, 1.33]")
    # A crop of a share a of the area, resized back, is a zoom by 1/sqrt(a) around a random centre.
    return [{"op": "affine", "translate": round((1 - math.sqrt(lo)) / 2, 6), "scale": [round(1 / math.sqrt(hi), 6), round(1 / math.sqrt(lo), 6)], "rotate": 0.0, "p": d["p"]}]


def _coarse_dropout_ops(d: dict[str, Any]) -> list[dict[str, Any]]:
    if tuple(d["num_holes_range"]) != (1, 1):
        raise ValueError(f"num_holes_range {list(d['num_holes_range'])}: on D's input cutout makes one square hole; use [1, 1]")
    hh, hw = (tuple(float(v) for v in d[k]) for k in ("hole_height_range", "hole_width_range"))
    if hh != hw or hh[1] > 1:
        raise ValueError("on D's input the hole is a square given as a share of the side: make hole_height_range equal to hole_width_range, with values <= 1")
    return [{"op": "cutout", "ratio": round((hh[0] + hh[1]) / 2, 6), "p": d["p"]}]


# albumentations transform -> the differentiable ops on D's input that do the same.
DISCRIMINATOR_OPS = {
    "RandomBrightnessContrast": _brightness_contrast_ops,
    "Affine": _affine_ops,
    "RandomResizedCrop": _random_resized_crop_ops,
    "CoarseDropout": _coarse_dropout_ops,
}


def route_transforms(scenario: Scenario, source: str | None = None) -> list[Route]:
    """Where each of the scenario's transforms acts in training (see the comment above
    :data:`INVARIANCES`). Raises :class:`AugmentationError` naming the file, the key,
    the transform and why it cannot be used."""
    from albumentations.core.serialization import to_dict

    source = source or str(SCENARIO_DIR / f"{scenario.name}.yaml")
    spec = scenario.augmentation
    declared = set(spec.invariances)
    routes = []
    for i, t in enumerate(spec.transforms):
        key = f"augmentation.transforms[{i}]"
        tr, _ = _make_transform(i, t.name, t.params, source)
        if t.name in SYMMETRIES:
            missing = [v for v in SYMMETRIES[t.name] if v not in declared]
            if missing:
                raise AugmentationError(
                    f"{source}: {key} = {t.name}: applied to the real images it would teach G to generate transformed images, and scenario "
                    f"{scenario.name!r} does not declare {missing} in augmentation.invariances (declared: {sorted(declared)}). "
                    "Remove the transform, or add the invariance if a transformed image is still an image of this scenario."
                )
            routes.append(Route(i, t.name, "reals", f"the data is invariant to {', '.join(SYMMETRIES[t.name])} (augmentation.invariances)"))
            continue
        convert = DISCRIMINATOR_OPS.get(t.name)
        if convert is None:
            raise AugmentationError(
                f"{source}: {key} = {t.name}: it changes what the images look like, so applied to the real images G would learn it, "
                f"and it has no differentiable counterpart for D's input. Usable: the symmetries {sorted(SYMMETRIES)} (applied to the "
                f"real images when the scenario declares them in augmentation.invariances) and {sorted(DISCRIMINATOR_OPS)} (applied "
                "to real and generated images alike on D's input)."
            )
        try:
            ops = convert(to_dict(tr)["transform"])
        except ValueError as e:
            raise AugmentationError(f"{source}: {key} = {t.name} {t.params!r}: {e}") from None
        routes.append(Route(i, t.name, "discriminator", "changes the images: applied to real and generated images alike on D's input", tuple(ops)))
    if spec.ada and not any(r.target == "discriminator" for r in routes):
        raise AugmentationError(
            f"{source}: augmentation.ada is true but no transform acts on D's input for ADA to adapt; "
            f"list one of {sorted(DISCRIMINATOR_OPS)} or set ada: false"
        )
    return routes


def discriminator_ops(routes: list[Route]) -> list[dict[str, Any]]:
    """The ``train.augment`` list of gan_core: every op of the discriminator routes, in order."""
    return [op for r in routes for op in r.ops]


def batch_transform(pipeline: "A.Compose"):
    """``(batch, seed) -> batch`` for gan_core's ``real_transform``: uint8 (B, C, H, W)
    tensors through ``pipeline`` reseeded with ``seed`` (one stream per batch)."""
    import torch

    def apply(batch: "torch.Tensor", seed: int) -> "torch.Tensor":
        images = batch.permute(0, 2, 3, 1).numpy()
        out = augment_batch(seed_pipeline(pipeline, seed), images)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    return apply


# --------------------------------------------------------------------------- public API


def build_pipeline(
    spec: AugmentationSpec,
    *,
    size: int,
    source: str = "<scenario>",
    channels: int = 3,
    notes: list[str] | None = None,
    only: Sequence[int] | None = None,
) -> "A.Compose":
    """The scenario's augmentation policy as a seeded ``albumentations.Compose``
    (``only``: the indices of the transforms to include, e.g. the ones routed to the
    real images; default all).

    Raises :class:`AugmentationError` naming ``source`` and the key
    (``augmentation.transforms[i].name`` / ``.params``) for an unknown transform, bad
    params, or a pipeline that does not keep ``size`` x ``size`` x ``channels`` uint8
    (checked by running every transform with p=1 on a dummy image; pass the scenario's
    ``image.channels``: some transforms only work on 3-channel images). Warnings that
    albumentations emits (deprecations, ...) are appended to ``notes`` if given."""
    A = _albu()
    found: list[str] = []
    transforms = []
    for i, t in enumerate(spec.transforms):
        tr, w = _make_transform(i, t.name, t.params, source)
        if only is None or i in only:
            transforms.append(tr)
        found += w
    found += _check_keeps_shape(spec, size, channels, source)
    pipeline = seed_pipeline(A.Compose(transforms, seed=spec.seed), spec.seed)
    if notes is not None:
        notes.extend(dict.fromkeys(found))  # de-duplicated, in order
    return pipeline


def augment_batch(pipeline: "A.Compose", images: np.ndarray) -> np.ndarray:
    """Apply ``pipeline`` to each image of uint8 (N, H, W, C) (or (N, H, W)), in order;
    returns a new array of the same shape and dtype. Advances the pipeline's random
    stream, so the same freshly seeded pipeline gives the same outputs."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise AugmentationError(f"augment_batch wants uint8 (N, H, W, C) images; got {images.dtype} {images.shape}")
    squeeze = images.ndim == 3
    batch = images[..., None] if squeeze else images
    out = np.empty_like(batch)
    for i in range(len(batch)):
        r = pipeline(image=batch[i])["image"]
        if r.ndim == 2:
            r = r[..., None]
        if r.shape != batch.shape[1:] or r.dtype != np.uint8:
            raise AugmentationError(f"the augmentation pipeline turned image {i} of shape {batch.shape[1:]} into {r.shape} {r.dtype}; it must keep the shape and uint8")
        out[i] = r
    return out[..., 0] if squeeze else out


def pipeline_to_json(pipeline: "A.Compose", *, seed: int | None, size: int | None = None, channels: int | None = None) -> bytes:
    """albumentations' own JSON form (``A.to_dict``) plus a ``scenario_gan`` block
    (seed and how it is applied). ``A.from_dict`` / ``A.load`` read it unchanged."""
    _albu()
    from albumentations.core.serialization import serialize_enum, to_dict

    d = serialize_enum(to_dict(pipeline))
    d["scenario_gan"] = {
        "seed": seed,
        "seeding": "one random stream shared by all transforms: pipelines.steps.augment.seed_pipeline",
        "size": size,
        "channels": channels,
    }
    return json_bytes(d, ensure_ascii=True)


def pipeline_from_dict(d: dict[str, Any], source: str = "<pipeline>") -> "A.Compose":
    A = _albu()
    try:
        pipeline = A.from_dict(d)
    except Exception as e:  # noqa: BLE001
        raise AugmentationError(f"{source}: not an albumentations {A.__version__} pipeline ({type(e).__name__}: {_short(e)})") from None
    if not isinstance(pipeline, A.Compose):
        raise AugmentationError(f"{source}: holds a {type(pipeline).__name__}, not a Compose")
    return seed_pipeline(pipeline, (d.get("scenario_gan") or {}).get("seed"))


def load_pipeline(path: str | os.PathLike[str]) -> "A.Compose":
    """Rebuild the seeded Compose that :func:`augment` wrote to ``pipeline.json``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: materialize the augmented dataset first")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AugmentationError(f"{path}: not valid JSON ({e})") from None
    return pipeline_from_dict(d, str(path))


def _check_round_trip(pipeline_json: bytes, pipeline: "A.Compose", probe: np.ndarray, source: str) -> None:
    """``A.from_dict`` must rebuild a pipeline that serializes identically and gives the
    same images for the same seed."""
    d = json.loads(pipeline_json)
    rebuilt = pipeline_from_dict(d, source)
    seed = d["scenario_gan"]["seed"]
    again = json.loads(pipeline_to_json(rebuilt, seed=seed, size=d["scenario_gan"]["size"], channels=d["scenario_gan"]["channels"]))
    if again != d:
        raise AugmentationError(f"{source}: albumentations does not serialize this pipeline faithfully (A.from_dict(A.to_dict(p)) differs); check the transforms' params")
    a = augment_batch(seed_pipeline(pipeline, seed), probe)
    b = augment_batch(rebuilt, probe)
    seed_pipeline(pipeline, seed)
    if not np.array_equal(a, b):
        raise AugmentationError(f"{source}: the pipeline rebuilt from {PIPELINE_FILE} gives different images for the same seed")


def content_hash(input_sha256: str, files: dict[str, str]) -> str:
    """sha256 over the validated images' sha256 and the sha256 of every output but the
    preview (which only illustrates): what training will see."""
    body = {"input": input_sha256, "files": {k: files[k] for k in sorted(files) if k != PREVIEW_FILE}}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())


def _read_validated(scenario: Scenario, paths: ScenarioPaths) -> "ShardedImages":
    """The validated images, read lazily (:mod:`gan_core.shards`)."""
    from gan_core.shards import ShardError, open_images

    f = paths.validated / IMAGES_DIR
    report = paths.validated / "report.json"
    if not report.is_file():  # validation writes its report last: no report, no finished validation
        raise MissingInputError(f"scenario {scenario.name!r}: {report} is missing: validation has not finished; run validation first")
    try:
        rep = json.loads(validation_summary_path(paths.validated).read_text(encoding="utf-8"))
    except ValueError:
        rep = {}
    if isinstance(rep, dict) and (rep.get("passed") is False or rep.get("success") is False):
        raise AugmentationError(f"scenario {scenario.name!r}: validation did not pass ({report}); fix the data or the expectations and rerun validation")
    if not (f / "index.json").is_file():
        raise MissingInputError(
            f"scenario {scenario.name!r}: {f}/index.json is missing: run validation first (validated images are written only "
            "when validation passes; see validated/report.json for failed expectations)"
        )
    try:
        images = open_images(f)
    except ShardError as e:
        raise AugmentationError(f"{e}; rerun validation") from None
    s, c = scenario.image.size, scenario.image.channels
    if images.shape[1:] != (s, s, c):
        raise AugmentationError(
            f"{f}: images are uint8 {images.shape}, but scenario {scenario.name!r} wants uint8 (N, {s}, {s}, {c}) "
            "(image.size, image.channels); rerun ingestion and validation"
        )
    if len(images) == 0:
        raise AugmentationError(f"{f}: no images; rerun ingestion and validation")
    return images


def _preview(pipeline: "A.Compose", d_ops: list[dict[str, Any]], originals: np.ndarray, columns: int, seed: int) -> tuple[bytes, int]:
    """PNG: one row per image, the original then ``columns - 1`` views of it as D sees
    a real image in training: through the real-image pipeline, then the ops on D's input
    (at their listed probabilities, ADA at full strength)."""
    import torch

    from gan_core.diffaug import apply_ops
    from gan_core.sampling import encode_png, make_grid

    g = torch.Generator().manual_seed(seed)
    rows = [originals[None]]
    for _ in range(columns - 1):
        x = augment_batch(pipeline, originals)
        if d_ops:
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 127.5 - 1
            t = apply_ops(t, d_ops, g)
            x = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        rows.append(x[None])
    cells = np.concatenate(rows).transpose(1, 0, 2, 3, 4).reshape(-1, *originals.shape[1:])  # (rows*cols, H, W, C)
    grid = make_grid(torch.from_numpy(np.ascontiguousarray(cells.transpose(0, 3, 1, 2))), nrow=columns, padding=PREVIEW_PADDING)
    scale = preview_scale(originals.shape[1])
    return encode_png(grid, scale=scale), scale


def preview_scale(size: int) -> int:
    """Nearest-neighbour upscaling of preview.png, so small images are visible."""
    return max(1, 64 // size)


def augment(scenario: Scenario, paths: ScenarioPaths, *, source: str | None = None) -> AugmentResult:
    """Route the scenario's transforms (:func:`route_transforms`), write the real-image
    pipeline (``pipeline.json``), what training applies where (``policy.json``), the
    offline copies if asked (``images/``), ``preview.png`` and (last)
    ``manifest.json`` to ``paths.augmented``."""
    source = source or str(SCENARIO_DIR / f"{scenario.name}.yaml")
    spec = scenario.augmentation
    size, channels = scenario.image.size, scenario.image.channels
    originals = _read_validated(scenario, paths)
    notes: list[str] = []
    _albu()
    routes = route_transforms(scenario, source)
    reals = [r.index for r in routes if r.target == "reals"]
    d_ops = discriminator_ops(routes)
    pipeline = build_pipeline(spec, size=size, source=source, channels=channels, notes=notes, only=reals)
    pipeline_json = pipeline_to_json(pipeline, seed=spec.seed, size=size, channels=channels)
    _check_round_trip(pipeline_json, pipeline, originals[: min(4, len(originals))], source)

    copies = spec.offline_copies if reals else 0
    if spec.offline_copies and not reals:
        notes.append(f"offline_copies={spec.offline_copies} skipped: no transform acts on the real images (they would be exact duplicates)")
    policy = {
        "format": POLICY_FORMAT,
        "reals": {
            "transforms": [spec.transforms[i].name for i in reals],
            "pipeline": PIPELINE_FILE,
            "applied": "offline copies" if copies else ("per batch, seeded by (seed, step, rank)" if reals else "none"),
            "offline_copies": copies,
        },
        "discriminator": {"ops": d_ops, "ada": spec.ada, "applied": "to real and generated images alike on D's input (differentiable)" if d_ops else "none"},
        "routes": [r.as_dict() for r in routes],
    }
    policy_json = json_bytes(policy, ensure_ascii=True)

    out = paths.augmented
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a half-updated folder never looks complete
    n = len(originals)
    n_preview = min(spec.preview, n)
    columns = PREVIEW_COLUMNS if routes else 1
    preview_png, scale = _preview(pipeline_from_dict(json.loads(pipeline_json), source), d_ops, originals[:n_preview], columns, spec.seed)
    files = {}
    if copies:
        # Copies come from one freshly seeded pipeline, in a fixed order: the same seed
        # and inputs always give the same rows. Training then reads them instead of
        # augmenting per batch.
        # Streamed a chunk at a time: memory holds one chunk and one shard, not the copies.
        seed_pipeline(pipeline, spec.seed)
        with ShardWriter(out / IMAGES_FILE, (size, size, channels)) as w:
            for block in originals.chunks(CHUNK_IMAGES):
                w.add(block)
            for _ in range(copies):
                for block in originals.chunks(CHUNK_IMAGES):
                    w.add(augment_batch(pipeline, block))
            # Row -> original row and copy number, in chunks (16 bytes per row otherwise).
            w.close(columns={
                "source_index": lambda: (np.arange(a, min(a + CHUNK_IMAGES, n), dtype=np.int64) for _ in range(copies + 1) for a in range(0, n, CHUNK_IMAGES)),
                "copy_index": lambda: (np.full(min(CHUNK_IMAGES, n - a), c, np.int64) for c in range(copies + 1) for a in range(0, n, CHUNK_IMAGES)),
            })
        files[IMAGES_FILE] = dataset_digest(out / IMAGES_FILE)
    else:
        remove_dataset(out / IMAGES_FILE)  # training reads the validated images
    (out / LEGACY_IMAGES_FILE).unlink(missing_ok=True)
    pipeline_path = atomic_write(out / PIPELINE_FILE, pipeline_json)
    policy_path = atomic_write(out / POLICY_FILE, policy_json)
    preview_path = atomic_write(out / PREVIEW_FILE, preview_png)
    files.update({PIPELINE_FILE: sha256_bytes(pipeline_json), POLICY_FILE: sha256_bytes(policy_json), PREVIEW_FILE: sha256_bytes(preview_png)})
    validated_sha = dataset_digest(paths.validated / IMAGES_FILE)
    chash = content_hash(validated_sha, files)
    A = _albu()
    manifest = {
        "scenario": scenario.name,
        "n_original": int(n),
        "n_images": int(n * (copies + 1)),
        "offline_copies": copies,
        "offline_copies_requested": spec.offline_copies,
        "content_hash": chash,
        "content_hash_of": "pipelines.steps.augment.content_hash(input.sha256, files)",
        "size": size,
        "channels": channels,
        "seed": spec.seed,
        "transforms": [t.name for t in spec.transforms],
        "routes": policy["routes"],
        "albumentations_version": A.__version__,
        "preview": {"rows": n_preview, "columns": columns, "scale": scale, "padding": PREVIEW_PADDING, "shows": "each original, then views of it as D sees a real image in training"},
        "training_reads": (paths.augmented / IMAGES_FILE if copies else paths.validated / IMAGES_FILE).relative_to(paths.roots.data).as_posix(),
        "layout": "images/ (only with offline copies; gan_core.shards): originals first, then copy 1 of every image, copy 2, ...; columns source_index: row -> original row; copy_index: 0 = original",
        "input": {"path": (paths.validated / IMAGES_FILE).relative_to(paths.roots.data).as_posix(), "sha256": validated_sha},
        "files": files,
        "notes": notes,
    }
    manifest_path = atomic_write(out / MANIFEST_FILE, json_bytes(manifest, ensure_ascii=True))
    return AugmentResult(
        scenario=scenario.name,
        n_original=int(n),
        n_images=int(n * (copies + 1)),
        offline_copies=copies,
        content_hash=chash,
        images_path=out / IMAGES_FILE if copies else paths.validated / IMAGES_FILE,
        pipeline_path=pipeline_path,
        policy_path=policy_path,
        preview_path=preview_path,
        manifest_path=manifest_path,
        transforms=[t.name for t in spec.transforms],
        routes=policy["routes"],
        notes=notes,
    )


def read_policy(paths: ScenarioPaths) -> dict[str, Any]:
    """``policy.json`` of a finished augmentation step: what training applies where."""
    f = paths.augmented / POLICY_FILE
    if not f.is_file() or not (paths.augmented / MANIFEST_FILE).is_file():
        raise MissingInputError(f"{f} is missing: materialize the augmented dataset of scenario {paths.name!r} first (it needs a passed validation)")
    policy = json.loads(f.read_text(encoding="utf-8"))
    if policy.get("format") != POLICY_FORMAT:
        raise AugmentationError(f"{f}: format {policy.get('format')!r}, expected {POLICY_FORMAT!r}; rerun the augment step")
    return policy
