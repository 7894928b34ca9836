"""Augmentation step (pipelines.steps.augment) with the real albumentations."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

# NO_ALBUMENTATIONS_UPDATE=1 is set by conftest.py, imported before any test module.

from gan_core.shards import open_images, write_images  # noqa: E402
from pipelines.paths import Roots, ScenarioPaths  # noqa: E402
from pipelines.scenario import COLOUR_TRANSFORMS, SCENARIO_DIR, ScenarioError, load_all, load_scenario, parse_scenario  # noqa: E402
from pipelines.steps.augment import (  # noqa: E402
    PREVIEW_COLUMNS,
    PREVIEW_PADDING,
    AugmentationError,
    MissingInputError,
    augment,
    augment_batch,
    build_pipeline,
    batch_transform,
    content_hash,
    load_pipeline,
    preview_scale,
    route_transforms,
)


def images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Distinct, asymmetric uint8 (N, H, W, C) images: every flip or turn changes them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)


ALL_SYMMETRIES = ["horizontal_flip", "vertical_flip", "rotate90", "transpose"]


def scenario(transforms: list[dict], *, size: int = 16, channels: int = 1, domain: str = "other", invariances=ALL_SYMMETRIES, **aug):
    return parse_scenario(
        {
            "name": "t",
            "domain": domain,
            "data": {"source": "folder"},
            "image": {"size": size, "channels": channels},
            "augmentation": {"transforms": transforms, "invariances": invariances, **aug},
        },
        "scenarios/t.yaml",
    )


def setup(tmp_path, sc, n: int = 6, seed: int = 0, name: str = "t") -> ScenarioPaths:
    paths = ScenarioPaths(name, Roots.under(tmp_path))
    paths.validated.mkdir(parents=True)
    write_images(paths.validated / "images", images(n, sc.image.size, sc.image.channels, seed))
    (paths.validated / "report.json").write_text(json.dumps({"passed": True}))  # validation writes it last
    return paths


FLIPS = [
    {"name": "HorizontalFlip", "params": {"p": 0.5}},
    {"name": "VerticalFlip", "params": {"p": 0.5}},
    {"name": "RandomRotate90", "params": {"p": 0.5}},
]


def dihedral(img: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/turns of an (H, W, C) image."""
    out = []
    for k in range(4):
        r = np.rot90(img, k, axes=(0, 1))
        out += [r, r[:, ::-1]]
    return out


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", sorted(load_all()))
@pytest.mark.parametrize("channels", [1, 3])
def test_default_scenarios_build_and_keep_size_and_channel_axis(name, channels):
    sc = load_scenario(SCENARIO_DIR / f"{name}.yaml")
    size = sc.image.size
    p = build_pipeline(sc.augmentation, size=size, channels=channels, source=f"scenarios/{name}.yaml")
    x = images(20, size, channels)
    y = augment_batch(p, x)
    assert y.shape == x.shape and y.dtype == np.uint8  # grey images keep (H, W, 1)
    changed = (y != x).any(axis=(1, 2, 3)).sum()
    if sc.augmentation.transforms:
        assert changed >= 5  # the policy does something
    else:
        assert changed == 0  # a scenario without transforms (digits) trains on its images as they are
    # (N, H, W) grey input comes back as (N, H, W)
    assert augment_batch(p, x[..., 0]).shape == x.shape[:3]


def test_histology_has_no_colour_transform_and_medical_colour_jitter_is_rejected():
    histology = load_scenario(SCENARIO_DIR / "histology.yaml")
    assert histology.domain == "medical"
    assert not {t.name for t in histology.augmentation.transforms} & COLOUR_TRANSFORMS
    with pytest.raises(ScenarioError, match="ColorJitter"):
        scenario([{"name": "ColorJitter", "params": {"p": 0.5}}], channels=3, domain="medical")
    scenario([{"name": "ColorJitter", "params": {"p": 0.5}}], channels=3, domain="art")  # fine elsewhere


def test_unknown_transform_name_names_the_key_value_and_valid_names():
    sc = scenario([FLIPS[0], {"name": "HorizontalFlipp"}])
    with pytest.raises(AugmentationError) as e:
        build_pipeline(sc.augmentation, size=16, channels=1, source="scenarios/t.yaml")
    msg = str(e.value)
    assert "scenarios/t.yaml" in msg and "augmentation.transforms[1].name" in msg and "'HorizontalFlipp'" in msg
    assert "did you mean HorizontalFlip" in msg and "RandomRotate90" in msg
    # removed in albumentations 2: say what replaced it
    with pytest.raises(AugmentationError, match=r"transforms\[0\]\.name.*'Cutout'.*CoarseDropout"):
        build_pipeline(scenario([{"name": "Cutout"}]).augmentation, size=16, channels=1)
    # exists, but is not an image transform
    with pytest.raises(AugmentationError, match="'Compose' is not a usable"):
        build_pipeline(scenario([{"name": "Compose"}]).augmentation, size=16, channels=1)


@pytest.mark.parametrize(
    "transform, expected",
    [
        # albumentations 1.x spelling: height/width became size
        ({"name": "RandomResizedCrop", "params": {"height": 16, "width": 16}}, r"no parameter\(s\) 'height', 'width'.*size: \[height, width\].*Valid parameters of RandomResizedCrop: size"),
        ({"name": "HorizontalFlip", "params": {"always_apply": True}}, r"'always_apply'.*removed in albumentations 2"),
        ({"name": "HorizontalFlip", "params": {"p": 2}}, r"p: Input should be less than or equal to 1"),
        ({"name": "Affine", "params": {"rotate": "a lot"}}, r"\{'rotate': 'a lot'\} is not valid for Affine: rotate"),
    ],
)
def test_bad_params_name_the_key_and_the_value(transform, expected):
    sc = scenario([FLIPS[0], transform])
    with pytest.raises(AugmentationError, match=r"scenarios/t\.yaml: augmentation\.transforms\[1\]\.params = .*" + expected):
        build_pipeline(sc.augmentation, size=16, channels=1, source="scenarios/t.yaml")


@pytest.mark.parametrize(
    "transform, channels, expected",
    [
        ({"name": "RandomCrop", "params": {"height": 8, "width": 8}}, 1, r"into \(8, 8, 1\).*keep image\.size 16 x 16.*size: \[16, 16\]"),
        ({"name": "ToFloat"}, 1, r"float32; the pipeline must keep .*uint8"),
        ({"name": "ToRGB"}, 1, r"into \(16, 16, 3\)"),
        ({"name": "ISONoise"}, 1, r"fails on a 16x16x1 uint8 image \(image.channels = 1\).*3-channel"),
        ({"name": "MaskDropout"}, 3, r"requires \['mask'\].*need masks"),
    ],
)
def test_pipelines_that_change_size_channels_or_dtype_are_refused(transform, channels, expected):
    sc = scenario([transform], channels=channels)
    with pytest.raises(AugmentationError, match=r"augmentation\.transforms\[0\] .*" + expected):
        build_pipeline(sc.augmentation, size=16, channels=channels, source="scenarios/t.yaml")


def test_random_crop_with_p_below_one_is_still_caught():
    # With p=0.5 one dummy run could miss it; every transform is probed with p=1.
    sc = scenario([{"name": "RandomResizedCrop", "params": {"size": [8, 8], "p": 0.01}}])
    with pytest.raises(AugmentationError, match=r"transforms\[0\].*into \(8, 8, 1\)"):
        build_pipeline(sc.augmentation, size=16, channels=1)


# --------------------------------------------------------------------------- seeding


def test_same_seed_same_images_other_seed_different():
    x = images(30, 16, 3)
    spec = scenario(FLIPS, channels=3, seed=7).augmentation
    a = augment_batch(build_pipeline(spec, size=16, channels=3), x)
    b = augment_batch(build_pipeline(spec, size=16, channels=3), x)
    c = augment_batch(build_pipeline(scenario(FLIPS, channels=3, seed=8).augmentation, size=16, channels=3), x)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_transforms_draw_independently_under_a_seed():
    # albumentations 2.0.8 Compose(seed=s) seeds every transform with s, so two flips
    # with p=0.5 would always fire together; the step shares one stream instead.
    x = images(1, 16, 1)
    p = build_pipeline(scenario(FLIPS[:2], seed=0).augmentation, size=16, channels=1)
    seen = set()
    for y in augment_batch(p, np.repeat(x, 64, axis=0)):
        seen.add(next(k for k, r in enumerate([x[0], x[0][:, ::-1], x[0][::-1], x[0][::-1, ::-1]]) if np.array_equal(y, r)))
    assert seen == {0, 1, 2, 3}


# --------------------------------------------------------------------------- routes: reals, D's input, refused


@pytest.mark.parametrize("name", sorted(load_all()))
def test_every_default_transform_has_a_route(name):
    sc = load_scenario(SCENARIO_DIR / f"{name}.yaml")
    routes = route_transforms(sc)
    assert [r.index for r in routes] == list(range(len(sc.augmentation.transforms)))
    for r in routes:  # real images get only symmetries the scenario declares
        assert r.target in ("reals", "discriminator")
        if r.target == "reals":
            assert r.name in ("HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "SquareSymmetry", "D4")
        else:
            assert r.ops


def test_faces_flip_goes_to_the_reals_and_shifts_and_light_to_d():
    routes = {r.name: r for r in route_transforms(load_scenario(SCENARIO_DIR / "faces.yaml"))}
    assert routes["HorizontalFlip"].target == "reals"
    assert routes["Affine"].target == "discriminator"
    assert routes["Affine"].ops == ({"op": "affine", "translate": 0.04, "scale": [0.95, 1.05], "rotate": 5.0, "p": 0.5},)
    assert [o["op"] for o in routes["RandomBrightnessContrast"].ops] == ["brightness", "contrast"]
    assert all(o["limit"] == 0.1 and o["p"] == 0.3 for o in routes["RandomBrightnessContrast"].ops)


def test_random_resized_crop_becomes_a_zoom_on_d_input():
    sc = scenario([{"name": "RandomResizedCrop", "params": {"size": [16, 16], "scale": [0.64, 1.0], "ratio": [0.9, 1.1], "p": 0.5}}])
    (r,) = route_transforms(sc)
    assert r.target == "discriminator"
    assert r.ops == ({"op": "affine", "translate": 0.1, "scale": [1.0, 1.25], "rotate": 0.0, "p": 0.5},)


@pytest.mark.parametrize(
    "transforms,invariances,expected",
    [
        ([{"name": "VerticalFlip", "params": {"p": 0.5}}], ["horizontal_flip"], r"transforms\[0\] = VerticalFlip: .*does not declare \['vertical_flip'\] in augmentation.invariances"),
        ([{"name": "RandomRotate90"}], [], r"RandomRotate90: .*\['rotate90'\]"),
        ([{"name": "GaussianBlur"}], ALL_SYMMETRIES, r"GaussianBlur: it changes what the images look like, so applied to the real images G would learn it"),
        ([{"name": "Affine", "params": {"shear": 10}}], ALL_SYMMETRIES, r"Affine .*shear .* has no counterpart on D's input"),
        ([{"name": "Affine", "params": {"translate_percent": [0.0, 0.1]}}], ALL_SYMMETRIES, r"translate_percent \[0.0, 0.1\] is not symmetric"),
        ([{"name": "CoarseDropout", "params": {"num_holes_range": [2, 4]}}], ALL_SYMMETRIES, r"num_holes_range \[2, 4\]"),
    ],
)
def test_transforms_that_would_leak_into_g_are_refused_by_name(transforms, invariances, expected):
    with pytest.raises(AugmentationError, match=expected) as e:
        route_transforms(scenario(transforms, invariances=invariances), "scenarios/t.yaml")
    assert str(e.value).startswith("scenarios/t.yaml: augmentation.transforms[0]")


def test_ada_needs_a_transform_on_d_input():
    with pytest.raises(AugmentationError, match="augmentation.ada is true but no transform acts on D's input"):
        route_transforms(scenario(FLIPS, ada=True))
    route_transforms(scenario([{"name": "Affine", "params": {"translate_percent": [-0.1, 0.1]}}], ada=True))


def test_d_side_keys_in_the_gan_block_are_refused():
    raw = {"name": "t", "data": {"source": "folder"}, "gan": {"train": {"diffaug": "translation"}}}
    with pytest.raises(ScenarioError, match=r"gan.train.diffaug: what D sees is set in the augmentation block"):
        parse_scenario(raw, "scenarios/t.yaml")


def test_batch_transform_is_a_pure_function_of_the_batch_and_the_seed():
    import torch

    apply = batch_transform(build_pipeline(scenario(FLIPS).augmentation, size=16, channels=1))
    batch = torch.from_numpy(images(32, 16, 1)).permute(0, 3, 1, 2).contiguous()
    a, b, c = apply(batch, 7), apply(batch, 7), apply(batch, 8)
    assert a.shape == batch.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    for out, img in zip(a.permute(0, 2, 3, 1).numpy(), batch.permute(0, 2, 3, 1).numpy()):
        assert any(np.array_equal(out, d) for d in dihedral(img))


def test_policy_and_preview_show_what_d_sees(tmp_path):
    sc = scenario([{"name": "HorizontalFlip", "params": {"p": 0.5}}, {"name": "CoarseDropout", "params": {"num_holes_range": [1, 1], "hole_height_range": [0.25, 0.25], "hole_width_range": [0.25, 0.25], "fill": 0, "p": 1.0}}], invariances=["horizontal_flip"], preview=2)
    paths = setup(tmp_path, sc, n=4)
    res = augment(sc, paths)
    policy = json.loads(res.policy_path.read_text())
    assert policy["reals"]["transforms"] == ["HorizontalFlip"] and policy["reals"]["applied"].startswith("per batch")
    assert policy["discriminator"]["ops"] == [{"op": "cutout", "ratio": 0.25, "p": 1.0}]
    from PIL import Image

    grid = np.asarray(Image.open(res.preview_path))[:: preview_scale(16), :: preview_scale(16)]
    pad = PREVIEW_PADDING
    view = grid[pad : pad + 16, 2 * pad + 16 : 2 * pad + 32].astype(int)  # the first augmented view of image 0
    # a cutout of 0 in [-1, 1] is mid-grey (127 or 128) over a 4x4 square
    assert ((view == 127) | (view == 128)).sum() >= 16


# --------------------------------------------------------------------------- the step


def test_augment_writes_all_outputs_with_offline_copies(tmp_path):
    sc = scenario(FLIPS, size=16, channels=3, offline_copies=2, preview=4)
    paths = setup(tmp_path, sc, n=6)
    res = augment(sc, paths)
    out = paths.augmented
    assert {p.name for p in out.iterdir()} == {"images", "pipeline.json", "policy.json", "preview.png", "manifest.json"}
    data = open_images(out / "images")
    imgs, src, copy = data.load(), data.column("source_index"), data.column("copy_index")
    orig = images(6, 16, 3)
    assert imgs.shape == (18, 16, 16, 3) and imgs.dtype == np.uint8
    assert src.tolist() == list(range(6)) * 3 and copy.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert np.array_equal(imgs[:6], orig)
    for row, s in zip(imgs[6:], src[6:]):  # every copy is a flip/turn of its own original
        assert any(np.array_equal(row, d) for d in dihedral(orig[s]))
    assert not np.array_equal(imgs[6:12], imgs[12:18])  # the two copies differ
    assert (res.n_original, res.n_images, res.offline_copies) == (6, 18, 2)
    man = json.loads((out / "manifest.json").read_text())
    assert man["scenario"] == "t" and man["n_images"] == 18 and man["n_original"] == 6 and man["offline_copies"] == 2
    files = {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in ("pipeline.json", "policy.json")}
    files["images"] = hashlib.sha256((out / "images/index.json").read_bytes()).hexdigest()  # lists every shard's sha256
    assert man["files"] == {**files, "preview.png": hashlib.sha256((out / "preview.png").read_bytes()).hexdigest()}
    assert man["content_hash"] == res.content_hash == content_hash(hashlib.sha256((paths.validated / "images/index.json").read_bytes()).hexdigest(), files)
    assert res.images_path == out / "images" and man["training_reads"] == "t/augmented/images"
    assert man["transforms"] == ["HorizontalFlip", "VerticalFlip", "RandomRotate90"]


def test_preview_grid_shape(tmp_path):
    from PIL import Image

    sc = scenario(FLIPS, size=16, channels=1, preview=3)
    paths = setup(tmp_path, sc, n=5)
    res = augment(sc, paths)
    img = Image.open(io.BytesIO(res.preview_path.read_bytes()))
    s, pad = preview_scale(16), PREVIEW_PADDING
    assert img.mode == "L"
    assert img.size == ((PREVIEW_COLUMNS * (16 + pad) + pad) * s, (3 * (16 + pad) + pad) * s)
    grid = np.asarray(img)[::s, ::s]
    orig = images(5, 16, 1)
    for r in range(3):  # first column: the originals, in order
        y = pad + r * (16 + pad)
        assert np.array_equal(grid[y : y + 16, pad : pad + 16], orig[r, ..., 0])


def test_same_seed_same_bytes_other_seed_different(tmp_path):
    def run(base, seed):
        sc = scenario(FLIPS, channels=3, offline_copies=1, seed=seed)
        return augment(sc, setup(tmp_path / base, sc, n=8))

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    tree = lambda r: {p.relative_to(r.manifest_path.parent): p.read_bytes() for p in r.manifest_path.parent.rglob("*") if p.is_file()}  # noqa: E731
    assert tree(a) == tree(b)  # no paths or times inside
    assert a.content_hash == b.content_hash != c.content_hash


def test_pipeline_json_round_trip_gives_identical_outputs(tmp_path):
    import albumentations as A

    sc = load_scenario(SCENARIO_DIR / "faces.yaml")
    paths = setup(tmp_path, sc, n=4, name="faces")
    res = augment(sc, paths)
    d = json.loads(res.pipeline_path.read_text())
    assert d["transform"]["__class_fullname__"] == "Compose" and d["scenario_gan"]["seed"] == sc.augmentation.seed
    assert isinstance(A.load(str(res.pipeline_path)), A.Compose)  # albumentations' own loader reads it
    x = images(40, 32, 1, seed=3)
    reals = [r["index"] for r in res.routes if r["to"] == "reals"]
    assert [sc.augmentation.transforms[i].name for i in reals] == ["HorizontalFlip"]  # the rest acts on D's input
    assert [t["__class_fullname__"] for t in d["transform"]["transforms"]] == ["HorizontalFlip"]
    fresh = augment_batch(build_pipeline(sc.augmentation, size=32, channels=1, only=reals), x)
    loaded = augment_batch(load_pipeline(res.pipeline_path), x)
    assert np.array_equal(fresh, loaded)
    assert not np.array_equal(fresh, x)


def test_no_transforms_is_the_identity_and_skips_offline_copies(tmp_path):
    sc = scenario([], offline_copies=3, preview=2)
    paths = setup(tmp_path, sc, n=5)
    res = augment(sc, paths)
    assert res.images_path == paths.validated / "images"  # training reads the validated images
    assert not (paths.augmented / "images").exists()
    assert res.offline_copies == 0 and res.n_images == 5
    assert any("offline_copies=3 skipped" in n for n in res.notes)
    man = json.loads(res.manifest_path.read_text())
    assert man["offline_copies"] == 0 and man["offline_copies_requested"] == 3
    x = images(3, 16, 1)
    assert np.array_equal(augment_batch(load_pipeline(res.pipeline_path), x), x)


def test_missing_validated_images_says_run_validation_first(tmp_path):
    sc = scenario(FLIPS)
    paths = ScenarioPaths("t", Roots.under(tmp_path))
    with pytest.raises(MissingInputError, match="run validation first"):
        augment(sc, paths)
    with pytest.raises(FileNotFoundError):
        augment(sc, paths)
    assert not paths.augmented.exists()


def test_validated_images_without_the_report_are_not_consumed(tmp_path):
    sc = scenario(FLIPS)
    paths = setup(tmp_path, sc)
    (paths.validated / "report.json").unlink()  # a validation killed before its last write
    with pytest.raises(MissingInputError, match="validation has not finished"):
        augment(sc, paths)
    assert not paths.augmented.exists()


def test_failed_validation_report_stops_the_step(tmp_path):
    sc = scenario(FLIPS)
    paths = setup(tmp_path, sc)
    (paths.validated / "report.json").write_text(json.dumps({"passed": False}))
    with pytest.raises(AugmentationError, match="validation did not pass"):
        augment(sc, paths)


def test_validated_images_of_the_wrong_shape_are_refused(tmp_path):
    sc = scenario(FLIPS, size=16, channels=3)
    paths = setup(tmp_path, scenario(FLIPS, size=32, channels=3))
    with pytest.raises(AugmentationError, match=r"wants uint8 \(N, 16, 16, 3\)"):
        augment(sc, paths)
