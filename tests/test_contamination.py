"""Contamination columns on real images: ``outlier_score`` flags other kinds of images
mixed into a scenario with one bound for every scenario (lfw's non-faces among the faces,
and contaminants the method was never tuned on), while clean scenarios keep almost every
image; ``near_duplicate_of`` finds re-encoded or slightly edited copies without pairing
distinct faces or distinct digits of one class."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from pipelines import builtin_data, contamination
from pipelines.io import read_table
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import parse_scenario
from pipelines.steps.ingest import ingest

BOUND = contamination.OUTLIER_THRESHOLD


def rates(clean: np.ndarray, contaminants: np.ndarray) -> tuple[float, float]:
    """(share of contaminants flagged, share of clean images flagged) when mixed."""
    z = contamination.outlier_scores(contamination.feature_matrix(list(np.concatenate([clean, contaminants]))))
    return float(np.mean(z[len(clean) :] > BOUND)), float(np.mean(z[: len(clean)] > BOUND))


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return builtin_data.faces(32)


def test_lfw_nonfaces_among_faces_are_flagged(faces):
    nonfaces = builtin_data.nonfaces(32)[np.random.default_rng(0).choice(100, 30, replace=False)]
    flagged, false_positive = rates(faces, nonfaces)
    assert flagged >= 0.9, flagged
    assert false_positive <= 0.05, false_positive


@pytest.mark.parametrize("case", ["photo_patches_among_faces", "histology_among_textures"])
def test_contaminants_never_tuned_on_are_flagged(faces, case):
    if case == "photo_patches_among_faces":  # 25x25 patches of other photos, the faces' pipeline
        clean, contaminants = faces, builtin_data.photo_patches(32, n=30, seed=0)
    else:  # histology crops the scenario does not hold, in the textures' grey
        clean, contaminants = builtin_data.textures(32), builtin_data.to_grey(builtin_data.histology(32, n=30, seed=100))
    flagged, false_positive = rates(clean, contaminants)
    assert flagged >= 0.9, (case, flagged)
    assert false_positive <= 0.05, (case, false_positive)


@pytest.mark.parametrize("name, size", [("faces", 32), ("textures", 32), ("histology", 32), ("digits", 16)])
def test_clean_scenarios_keep_almost_every_image(name, size):
    z = contamination.outlier_scores(contamination.feature_matrix(list(builtin_data.load(name, size))))
    assert np.mean(z > BOUND) <= 0.05, (name, int((z > BOUND).sum()))


def test_score_is_deterministic_linear_and_defined_for_tiny_scenarios():
    ref = contamination.reference_rows(50_000, 2000)
    assert len(ref) == 2000 and np.all(np.diff(ref) > 0) and np.array_equal(ref, contamination.reference_rows(50_000, 2000))
    assert np.array_equal(contamination.reference_rows(300, 2000), np.arange(300))
    feats = np.random.default_rng(0).normal(size=(3000, contamination.N_FEATURES_GREY)).astype(np.float32)
    a = contamination.outlier_scores(feats, reference_size=500)
    assert a.shape == (3000,) and np.isfinite(a).all()
    assert np.array_equal(a, contamination.outlier_scores(feats, reference_size=500))
    assert 0.0 < np.mean(a > BOUND) < 0.02  # Gaussian data: a thin tail, no mass flagging
    assert contamination.outlier_scores(feats[:4]).tolist() == [0.0] * 4
    same = np.zeros((40, contamination.N_FEATURES_GREY), np.float32)  # every image alike: no division by zero
    assert np.array_equal(contamination.outlier_scores(same), np.zeros(40))


@pytest.mark.parametrize("channels", [3, 1])
def test_an_images_features_and_hash_do_not_depend_on_its_batch(faces, channels):
    """Ingestion describes images in blocks whose size depends on the source and the
    workers: every value must be the image's own, bit for bit, whatever its neighbours."""
    images = builtin_data.histology(32, n=70, seed=0) if channels == 3 else faces[:70]
    whole = contamination.image_features(images)
    hashes = contamination.perceptual_hashes(images)
    assert whole.shape == (70, contamination.N_FEATURES_RGB if channels == 3 else contamination.N_FEATURES_GREY)
    assert np.isfinite(whole).all() and len(set(hashes.tolist())) > 60
    for start, stop in [(0, 1), (5, 12), (3, 67), (69, 70)]:
        assert np.array_equal(contamination.image_features(images[start:stop]).view(np.uint64), whole[start:stop].view(np.uint64)), (start, stop)
        assert np.array_equal(contamination.perceptual_hashes(images[start:stop]), hashes[start:stop]), (start, stop)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0], "L").save(buf, "PNG")
    return buf.getvalue()


def _edited(a: np.ndarray, how: str) -> bytes:
    im = Image.fromarray(a[:, :, 0], "L")
    buf = io.BytesIO()
    if how in ("jpeg", "bmp"):
        im.save(buf, "JPEG" if how == "jpeg" else "BMP", **({"quality": 90} if how == "jpeg" else {}))
        return buf.getvalue()
    if how == "brighter":
        im = ImageEnhance.Brightness(im).enhance(1.08)
    elif how == "blur":
        im = im.filter(ImageFilter.GaussianBlur(0.5))
    im.save(buf, "PNG")
    return buf.getvalue()


def test_near_duplicates_through_ingestion(tmp_path, faces):
    roots = Roots.under(tmp_path)
    raw = roots.data / "faces" / "raw"
    raw.mkdir(parents=True)
    for i in range(12):
        (raw / f"a_{i:02d}.png").write_bytes(_png(faces[i]))
    (raw / "b_jpeg_of_01.jpg").write_bytes(_edited(faces[1], "jpeg"))
    (raw / "b_brighter_02.png").write_bytes(_edited(faces[2], "brighter"))
    (raw / "b_blur_03.png").write_bytes(_edited(faces[3], "blur"))
    (raw / "b_copy_of_04.bmp").write_bytes(_edited(faces[4], "bmp"))  # the same pixels, another format
    sc = parse_scenario({"name": "faces", "data": {"source": "folder"}, "image": {"size": 32, "channels": 1}})
    res = ingest(sc, ScenarioPaths("faces", roots))
    table = read_table(res.table_path).set_index("file")
    index = {f: int(i) for f, i in table["index"].items()}
    near = {f: None if v is pd.NA else int(v) for f, v in table["near_duplicate_of"].items()}
    assert near["b_jpeg_of_01.jpg"] == index["a_01.png"]
    assert near["b_brighter_02.png"] == index["a_02.png"]
    assert near["b_blur_03.png"] == index["a_03.png"]
    # A pixel-identical copy is a duplicate, not a near-duplicate.
    assert table.loc["b_copy_of_04.bmp", "duplicate_of"] == index["a_04.png"] and near["b_copy_of_04.bmp"] is None
    assert all(near[f"a_{i:02d}.png"] is None for i in range(12))
    assert res.n_near_duplicates == 3
    assert table["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert table.loc["b_jpeg_of_01.jpg", "phash"] != table.loc["a_05.png", "phash"]

    # Validation sets the copies aside and names what each one repeats; the originals stay.
    from pipelines.steps.validate import validate

    copies = [{"expectation": "expect_column_values_to_be_null", "kwargs": {"column": c}, "on_failure": "set_aside"} for c in ("duplicate_of", "near_duplicate_of")]
    sc = parse_scenario({**sc.model_dump(), "validation": {"min_images": 2, "max_quarantined_share": 0.5, "expectations": copies}})
    val = validate(sc, ScenarioPaths("faces", roots))
    assert val.passed and val.n_kept == 12
    assert {a["file"]: a["copy_of"] for a in val.set_aside} == {
        "b_blur_03.png": "a_03.png", "b_brighter_02.png": "a_02.png", "b_copy_of_04.bmp": "a_04.png", "b_jpeg_of_01.jpg": "a_01.png",
    }


@pytest.mark.parametrize("name, size", [("faces", 32), ("digits", 16)])
def test_no_near_duplicates_among_distinct_images(name, size):
    """The 1,797 digits hold many same-class digits whose 8x8 hashes collide; only
    pixel-identical copies (left to ``duplicate_of``) may pair up."""
    images = list(builtin_data.load(name, size))
    first: dict[bytes, int] = {}
    exact = [first.setdefault(im.tobytes(), i) != i for i, im in enumerate(images)]
    near = contamination.near_duplicates(images, contamination.perceptual_hashes(images), exact)
    assert [i for i, j in enumerate(near) if j is not None] == []


def test_hash_look_ups_find_every_close_pair_a_brute_force_finds(monkeypatch):
    """_close_pairs (block tables, look-ups in chunks of rows) against every pair compared."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 150, dtype=np.int64).astype(np.uint64)
    hashes = base[rng.integers(0, len(base), 1200)]
    for k in range(5):  # 0-5 flipped bits: some within NEAR_HASH_BITS, some beyond
        flip = rng.random(len(hashes)) < 0.5
        hashes[flip] ^= np.uint64(1) << rng.integers(0, 64, int(flip.sum())).astype(np.uint64)
    eligible = rng.random(len(hashes)) < 0.9
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero((dist <= contamination.NEAR_HASH_BITS) & np.tri(len(hashes), k=-1, dtype=bool))
    keep = eligible[i] & eligible[j]
    expected = np.stack([i[keep], j[keep]], axis=1)
    for chunk in (contamination._PROBE_CHUNK, 100):
        monkeypatch.setattr(contamination, "_PROBE_CHUNK", chunk)
        got = contamination._close_pairs(hashes, eligible)
        assert len(expected) > 500 and got.tolist() == expected.tolist()


def test_residuals_from_sums_equal_an_explicit_least_squares_fit():
    """Near-duplicate pairs are judged from per-image sums and one dot product per pair;
    that equals fitting ``a ~ s * b + t`` by least squares and taking the RMS residual
    (the worse direction), for edited copies, unrelated images and a flat image."""
    rng = np.random.default_rng(3)
    base = builtin_data.faces(32)[:6].astype(np.float64)
    a = np.concatenate([base, base[:2], np.full((1, 32, 32, 1), 77.0)])
    b = np.concatenate([
        np.clip(base * 0.8 + 20 + rng.normal(0, 2, base.shape), 0, 255),  # brightness/contrast + noise
        base[::-1][:2],  # unrelated faces
        base[:1],  # a flat image against a face
    ])
    a8, b8 = a.astype(np.uint8), np.rint(b).astype(np.uint8)

    def explicit(u8, v8):
        u = u8.reshape(-1).astype(np.float64) / 255.0
        v = v8.reshape(-1).astype(np.float64) / 255.0
        if v.std() < 1e-9:
            return np.sqrt(((u - u.mean()) ** 2).mean())
        design = np.stack([v, np.ones_like(v)], axis=1)
        coef = np.linalg.lstsq(design, u, rcond=None)[0]
        return np.sqrt(((u - design @ coef) ** 2).mean())

    want = np.array([max(explicit(x, y), explicit(y, x)) for x, y in zip(a8, b8)])
    got = contamination.linear_residuals(a8, b8)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (got[:6] <= contamination.NEAR_RESIDUAL).all() and (got[6:] > contamination.NEAR_RESIDUAL).all()


def test_outlier_scores_from_features_on_disk_equal_those_in_memory(tmp_path):
    """Ingestion keeps the features in a file and reads them by rows: the scores are the
    same as from the array, with a reference sample smaller than the rows (so rows are
    read both in consecutive chunks and one by one)."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(700, 9)).astype(np.float32)
    f[:10] += 6  # a few outliers
    with open(tmp_path / "features", "w+b") as fh:
        fh.write(f.tobytes())
        fh.flush()
        rows = contamination.FeatureRows(fh, len(f), f.shape[1])
        np.testing.assert_array_equal(rows[np.array([5, 3, 699, 4])], f[[5, 3, 699, 4]])
        np.testing.assert_array_equal(rows[100:356], f[100:356])
        with pytest.raises(IndexError):
            rows[[700]]
        on_disk = contamination.outlier_scores(rows, reference_size=300)
    in_memory = contamination.outlier_scores(f, reference_size=300)
    np.testing.assert_array_equal(on_disk, in_memory)
    assert (in_memory[:10] > contamination.OUTLIER_THRESHOLD).all()
