"""Ingestion on real files: every kind of bad file lands in the quarantine with a reason,
no good image is lost, outputs are atomic and byte-identical on reruns."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import builtin_data
from pipelines.io import load_images, read_table
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import parse_scenario
from pipelines.steps import ingest as ingest_mod
from pipelines.steps.ingest import TABLE_COLUMNS, IngestError, first_copies, ingest

OUTPUTS = ("images", "table.csv", "quarantine.json", "manifest.json")


def scenario(name: str = "mix", **over):
    raw = {"name": name, "data": {"source": "folder"}, "image": {"size": 16, "channels": 1}}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) and k in raw else v
    return parse_scenario(raw)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


# Expected outcome of every entry in the mixed folder: None = good image, else the reason.
EXPECTED = {
    "good_rgb.png": None,
    "good_grey.jpg": None,
    "sub/dir/nested.png": None,
    "dup_copy.png": None,  # byte copy of good_rgb.png
    "dup_as.bmp": None,  # same pixels, other encoding
    "inside_link.png": None,  # symlink to good_rgb.png, inside the data root
    "grey16.png": None,
    "cmyk.jpg": None,
    "palette.png": None,
    "rgba.png": None,
    "anim.gif": None,
    "exif_rot.jpg": None,
    "caf\\xe9.png": None,  # non-UTF-8 name (bytes b"caf\xe9.png")
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "empty.png": "empty_file",
    "text.png": "not_an_image",
    "tiny.png": "too_small",
    "bomb.png": "decompression_bomb",
    "outside_link.png": "symlink_outside_root",
    "dangling.png": "broken_symlink",
    "linked_dir": "symlinked_directory",
    "pipe.png": "not_a_regular_file",  # a FIFO must not hang the run
}


def make_mixed_folder(base: Path) -> Roots:
    roots = Roots.under(base)
    raw = roots.data / "mix" / "raw"
    (raw / "sub" / "dir").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")  # non-square
    good_png = encode(rgb, "PNG")
    (raw / "good_rgb.png").write_bytes(good_png)
    grey_jpg = encode(Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), "L"), "JPEG", quality=90)
    (raw / "good_grey.jpg").write_bytes(grey_jpg)
    (raw / "sub" / "dir" / "nested.png").write_bytes(encode(Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L"), "PNG"))
    (raw / "dup_copy.png").write_bytes(good_png)
    (raw / "dup_as.bmp").write_bytes(encode(rgb, "BMP"))
    os.symlink(raw / "good_rgb.png", raw / "inside_link.png")
    # 16-bit grey: a constant 0x8080 must become 128, not be clipped to 255.
    (raw / "grey16.png").write_bytes(encode(Image.fromarray(np.full((24, 24), 0x8080, np.uint16)), "PNG"))
    (raw / "cmyk.jpg").write_bytes(encode(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG"))
    (raw / "palette.png").write_bytes(encode(rgb.convert("P"), "PNG"))
    # RGBA: left half fully transparent white (-> black), right half opaque white.
    rgba = np.full((20, 20, 4), 255, np.uint8)
    rgba[:, :10, 3] = 0
    (raw / "rgba.png").write_bytes(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    frames = [Image.new("L", (20, 20), v) for v in (0, 255, 128)]
    (raw / "anim.gif").write_bytes(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50))
    # Stored 40 wide x 20 high, left half black / right half white, EXIF orientation 6
    # (rotate 90 degrees clockwise to display): displayed 20 x 40, top black, bottom white.
    stored = np.zeros((20, 40), np.uint8)
    stored[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    (raw / "exif_rot.jpg").write_bytes(encode(Image.fromarray(stored, "L"), "JPEG", quality=95, exif=exif))
    with open(os.path.join(os.fsencode(raw), b"caf\xe9.png"), "wb") as fh:
        fh.write(encode(Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L"), "PNG"))
    (raw / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (raw / "truncated.jpg").write_bytes(grey_jpg[: len(grey_jpg) // 2])
    (raw / "empty.png").write_bytes(b"")
    (raw / "text.png").write_text("this is not an image\n")
    (raw / "tiny.png").write_bytes(encode(Image.new("L", (1, 1), 7), "PNG"))
    (raw / "bomb.png").write_bytes(bomb_png())
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(good_png)
    os.symlink(outside / "secret.png", raw / "outside_link.png")
    os.symlink(raw / "missing.png", raw / "dangling.png")
    os.symlink(outside, raw / "linked_dir")
    os.mkfifo(raw / "pipe.png")
    return roots


@pytest.fixture
def mixed(tmp_path):
    roots = make_mixed_folder(tmp_path)
    sc = scenario()
    paths = ScenarioPaths("mix", roots)
    return sc, paths, ingest(sc, paths)


def test_builtin_faces(tmp_path):
    sc = parse_scenario({"name": "faces", "data": {"source": "builtin", "builtin": "faces"}, "image": {"size": 32, "channels": 1}})
    res = ingest(sc, ScenarioPaths("faces", Roots.under(tmp_path)))
    table = read_table(res.table_path)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == res.n_images == 100 and res.n_quarantined == 0
    assert table["sha256"].is_unique and res.n_duplicates == 0 and table["duplicate_of"].isna().all()
    assert table["file"].tolist() == [f"builtin:faces#{i}" for i in range(100)]
    assert table["index"].tolist() == list(range(100))
    images = load_images(res.images_path)
    assert images.dtype == np.uint8 and images.shape == (100, 32, 32, 1)
    np.testing.assert_array_equal(images, builtin_data.faces(32))  # same size: passed through unchanged
    assert ((table["symmetry"] >= -1) & (table["symmetry"] <= 1)).all()
    assert ((table["min"] >= 0) & (table["max"] <= 1) & (table["std"] > 0)).all()
    manifest = json.loads(res.manifest_path.read_text())
    assert manifest["scenario"] == "faces" and manifest["n_images"] == 100 and manifest["content_hash"] == res.content_hash
    assert manifest["source"] == {"type": "builtin", "name": "faces"}


def test_builtin_limit_and_channel_conversion(tmp_path):
    sc = parse_scenario({"name": "faces", "data": {"source": "builtin", "builtin": "faces", "limit": 10}, "image": {"size": 16, "channels": 3}})
    res = ingest(sc, ScenarioPaths("faces", Roots.under(tmp_path)))
    images = load_images(res.images_path)
    assert images.shape == (10, 16, 16, 3)
    assert read_table(res.table_path)["file"].tolist()[-1] == "builtin:faces#9"
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey replicated to RGB


def test_mixed_folder_every_file_lands_where_it_should(mixed):
    sc, paths, res = mixed
    table = read_table(res.table_path)
    reasons = {q["file"]: q["reason"] for q in res.quarantine}
    assert all(q["detail"] for q in res.quarantine)
    assert reasons == {f: r for f, r in EXPECTED.items() if r is not None}
    good = {f for f, r in EXPECTED.items() if r is None}
    assert set(table["file"]) == good  # no good image lost
    assert res.n_images == len(good) and res.n_quarantined == len(reasons)
    assert table["file"].tolist() == sorted(table["file"], key=lambda s: s.encode())  # stable order
    assert json.loads(res.quarantine_path.read_text()) == res.quarantine
    # Originals are never deleted or moved.
    assert sorted(os.listdir(paths.raw)) == sorted({f.split("/")[0] for f in EXPECTED if "xe9" not in f} | {"caf\udce9.png"})

    row = table.set_index("file")
    images = load_images(res.images_path)
    assert images.shape == (len(good), 16, 16, 1)

    def pixels(name):
        return images[int(row.loc[name, "index"]), :, :, 0]

    assert (row.loc["good_rgb.png", ["orig_width", "orig_height", "orig_mode"]].tolist()) == [40, 30, "RGB"]
    assert row.loc["good_grey.jpg", "orig_mode"] == "L"
    assert row.loc["grey16.png", "orig_mode"].startswith("I;16")
    assert np.abs(pixels("grey16.png").astype(int) - 128).max() <= 1  # scaled, not clipped
    assert row.loc["cmyk.jpg", "orig_mode"] == "CMYK" and 0 < pixels("cmyk.jpg").mean() < 255
    assert row.loc["palette.png", "orig_mode"] == "P"
    rgba = pixels("rgba.png")
    assert row.loc["rgba.png", "orig_mode"] == "RGBA"
    assert rgba[:, :6].max() == 0 and rgba[:, -6:].min() == 255  # composited on black
    assert row.loc["anim.gif", "n_frames"] == 3 and pixels("anim.gif").max() == 0  # first (black) frame
    # EXIF orientation applied: displayed portrait 20x40, top half black, bottom white.
    assert row.loc["exif_rot.jpg", ["orig_width", "orig_height"]].tolist() == [20, 40]
    rot = pixels("exif_rot.jpg").astype(int)
    assert rot[:5].mean() < 40 and rot[-5:].mean() > 215
    assert abs(rot[:, :5].mean() - rot[:, -5:].mean()) < 20  # not left/right as stored
    # Duplicates are kept and flagged against the first row with the same pixels.
    first = int(row.loc["dup_as.bmp", "index"])  # sorts before dup_copy/good_rgb/inside_link
    for name in ("dup_copy.png", "good_rgb.png", "inside_link.png"):
        assert row.loc[name, "duplicate_of"] == first
        assert row.loc[name, "sha256"] == row.loc["dup_as.bmp", "sha256"]
    assert row.loc["dup_copy.png", "source_sha256"] == row.loc["good_rgb.png", "source_sha256"] != row.loc["dup_as.bmp", "source_sha256"]
    assert pd_isna(row.loc["dup_as.bmp", "duplicate_of"])
    assert res.n_duplicates == 3
    assert (table["width"] == 16).all() and (table["height"] == 16).all() and (table["channels"] == 1).all()


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_rgb_channels_and_fit_modes(tmp_path):
    roots = Roots.under(tmp_path)
    raw = roots.data / "fit" / "raw"
    raw.mkdir(parents=True)
    # 40 wide x 20 high: red left half, blue right half.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20, 0] = 255
    a[:, 20:, 2] = 255
    (raw / "wide.png").write_bytes(encode(Image.fromarray(a, "RGB"), "PNG"))
    (raw / "grey.png").write_bytes(encode(Image.new("L", (20, 20), 200), "PNG"))
    out = {}
    for fit in ("center_crop", "pad", "stretch"):
        sc = scenario("fit", image={"size": 16, "channels": 3, "fit": fit})
        res = ingest(sc, ScenarioPaths("fit", roots))
        out[fit] = load_images(res.images_path)
        assert out[fit].shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out["center_crop"][0][..., 0], out["center_crop"][0][..., 2])  # grey -> RGB
    pad = out["pad"][1]
    assert pad[:3].max() < 10 and pad[-3:].max() < 10  # black bars above and below
    assert pad[8, 2, 0] > 240 and pad[8, -3, 2] > 240
    crop = out["center_crop"][1]
    assert crop[8, 1, 0] > 240 and crop[8, -2, 2] > 240 and crop[:, :, 1].max() < 10
    stretch = out["stretch"][1]
    assert stretch[0, 2, 0] > 240  # no bars


def test_decompression_bound_is_a_parameter(tmp_path):
    roots = Roots.under(tmp_path)
    raw = roots.data / "mix" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.png").write_bytes(encode(Image.new("L", (64, 64), 10), "PNG"))  # 4096 px
    (raw / "b.png").write_bytes(encode(Image.new("L", (32, 32), 20), "PNG"))  # 1024 px
    res = ingest(scenario(), ScenarioPaths("mix", roots), max_image_pixels=3000)
    assert [q["file"] for q in res.quarantine] == ["a.png"] and res.quarantine[0]["reason"] == "decompression_bomb"
    assert res.n_images == 1
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS != 3000  # restored


def test_outputs_atomic_manifest_last_and_rerun_identical(mixed):
    sc, paths, res = mixed
    out = paths.ingested
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)  # no temp files left
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert all(p.stat().st_mtime_ns <= (out / "manifest.json").stat().st_mtime_ns for p in files)
    shards = json.loads((out / "images/index.json").read_text())["shards"]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(["index.json", *(s["file"] for s in shards)])
    before = {p: p.read_bytes() for p in files}
    res2 = ingest(sc, paths)
    assert {p: p.read_bytes() for p in sorted(p for p in out.rglob("*") if p.is_file())} == before
    assert res2.content_hash == res.content_hash
    for s in shards:  # plain .npy files, no pickle, each named by its content's hash
        data = (out / "images" / s["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and s["file"] == s["sha256"][:20] + ".npy"
        assert np.load(out / "images" / s["file"], allow_pickle=False).shape[0] == s["rows"]


def test_crash_mid_write_leaves_no_manifest_and_no_temp_files(mixed, monkeypatch):
    sc, paths, _ = mixed
    real = ingest_mod.atomic_writer
    writes = []

    @contextlib.contextmanager
    def crash_inside_table(path, size_hint=None):
        with real(path, size_hint) as f:
            if path.name != "table.csv":
                yield f
                return

            class Failing:  # the disk fills after the header and the first rows
                def write(self, data):
                    writes.append(len(data))
                    if len(writes) == 2:
                        raise OSError("disk full (simulated)")
                    return f.write(data)

            yield Failing()

    monkeypatch.setattr(ingest_mod, "_TABLE_CHUNK", 4)
    monkeypatch.setattr(ingest_mod, "atomic_writer", crash_inside_table)
    before = (paths.ingested / "table.csv").read_bytes()
    with pytest.raises(OSError, match="simulated"):
        ingest(sc, paths)
    assert len(writes) == 2  # the table was being written in parts when it failed
    assert not (paths.ingested / "manifest.json").exists()  # the step is not marked complete
    assert (paths.ingested / "table.csv").read_bytes() == before  # never half written
    assert not [p for p in os.listdir(paths.ingested) if p.endswith(".tmp") or p.startswith(".")]


def test_npz_round_trip(tmp_path):
    roots = Roots.under(tmp_path)
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)
    (roots.data / "med").mkdir(parents=True)
    np.savez(roots.data / "med" / "grey.npz", train_images=grey, train_labels=np.arange(12))
    np.savez(roots.data / "med" / "rgb.npz", val_images=rgb)
    sc = parse_scenario({"name": "med", "data": {"source": "npz", "path": "med/grey.npz"}, "image": {"size": 28, "channels": 1}})
    res = ingest(sc, ScenarioPaths("med", roots))
    np.testing.assert_array_equal(load_images(res.images_path)[..., 0], grey)
    table = read_table(res.table_path)
    assert table["file"].tolist() == [f"npz:train_images#{i}" for i in range(12)]
    import hashlib

    assert table["source_sha256"][3] == hashlib.sha256(grey[3].tobytes()).hexdigest()
    assert json.loads(res.manifest_path.read_text())["source"]["path"] == "med/grey.npz"
    sc = parse_scenario({"name": "med", "data": {"source": "npz", "path": "med/rgb.npz", "npz_key": "val_images"}, "image": {"size": 16, "channels": 3, "fit": "stretch"}})
    res = ingest(sc, ScenarioPaths("med", roots))
    assert load_images(res.images_path).shape == (5, 16, 16, 3)
    assert read_table(res.table_path)["orig_width"].tolist() == [24] * 5


def test_npz_errors_are_clear(tmp_path):
    roots = Roots.under(tmp_path)
    d = roots.data / "med"
    d.mkdir(parents=True)
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    np.savez(d / "objects.npz", train_images=np.array([{"a": 1}], dtype=object))
    np.savez(d / "floats.npz", train_images=np.zeros((3, 28, 28), np.float32))
    np.savez(d / "other.npz", images=np.zeros((3, 28, 28), np.uint8))
    np.save(d / "plain.npy", np.zeros((3, 28, 28), np.uint8))
    (d / "cut.npz").write_bytes((d / "other.npz").read_bytes()[:300])

    def run(path):
        sc = parse_scenario({"name": "med", "data": {"source": "npz", "path": path}, "image": {"size": 28, "channels": 1}})
        with pytest.raises(IngestError) as info:
            ingest(sc, ScenarioPaths("med", roots))
        msg = str(info.value)
        assert "scenario med" in msg and path.split("/")[-1] in msg
        return msg

    assert "np.savez" in run("med/corrupt.npz")
    assert "pickle" in run("med/objects.npz")
    assert "uint8" in run("med/floats.npz")
    assert "'images'" in run("med/other.npz") and "npz_key" in run("med/other.npz")
    assert "does not exist" in run("med/missing.npz")
    assert "single .npy array" in run("med/plain.npy")
    assert "np.savez" in run("med/cut.npz")


def test_missing_empty_and_all_bad_folders(tmp_path):
    roots = Roots.under(tmp_path)
    paths = ScenarioPaths("mix", roots)
    with pytest.raises(IngestError, match=r"mix/raw does not exist.*data\.path"):
        ingest(scenario(), paths)
    paths.raw.mkdir(parents=True)
    with pytest.raises(IngestError, match="holds no images"):
        ingest(scenario(), paths)
    (paths.raw / "a.png").write_bytes(b"")
    (paths.raw / "b.png").write_text("nope")
    with pytest.raises(IngestError, match="no usable image") as info:
        ingest(scenario(), paths)
    assert "quarantine.json" in str(info.value)
    q = json.loads((paths.ingested / "quarantine.json").read_text())
    assert [e["reason"] for e in q] == ["empty_file", "not_an_image"]
    assert not (paths.ingested / "manifest.json").exists()


def test_large_folder_streams(tmp_path):
    """Many files, one decoded at a time; the table keeps the sorted order."""
    roots = Roots.under(tmp_path)
    raw = roots.data / "many" / "raw"
    raw.mkdir(parents=True)
    img = builtin_data.faces(32)[:, :, :, 0]
    for i in range(150):
        (raw / f"{i:04d}.png").write_bytes(encode(Image.fromarray(img[i % 100]), "PNG"))
    res = ingest(scenario("many", image={"size": 32, "channels": 1}), ScenarioPaths("many", roots))
    assert res.n_images == 150 and res.n_duplicates == 50
    np.testing.assert_array_equal(load_images(res.images_path)[:100], builtin_data.faces(32))
    shutil.rmtree(raw)


def test_parallel_decode_gives_the_same_files_as_one_process(tmp_path, monkeypatch):
    """Two decode processes (a small folder made to count as large) write byte for byte
    what one process writes: same order, same quarantine (reasons and details), same
    shards and table. The workers' images reach the output a window at a time."""
    from pipelines import sources

    roots = make_mixed_folder(tmp_path)
    out = roots.data / "mix" / "ingested"
    monkeypatch.setattr(sources, "PARALLEL_MIN_FILES", 4)
    monkeypatch.setattr(sources, "CHUNK_FILES", 3)
    calls = []
    real = sources._iter_parallel
    monkeypatch.setattr(sources, "_iter_parallel", lambda *a: calls.append(a[-1]) or real(*a))
    tree = lambda base: {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}  # noqa: E731
    monkeypatch.setenv(sources.WORKERS_ENV, "1")
    one = ingest(scenario(), ScenarioPaths("mix", roots))
    files = tree(out)
    shutil.rmtree(out)
    monkeypatch.setenv(sources.WORKERS_ENV, "2")
    two = ingest(scenario(), ScenarioPaths("mix", roots))
    assert calls == [2]  # the second run went through the worker pool
    assert one.n_quarantined > 0 and one.quarantine == two.quarantine
    assert tree(out) == files
    monkeypatch.setenv(sources.WORKERS_ENV, "lots")
    with pytest.raises(IngestError, match="SCENARIO_GAN_DECODE_WORKERS='lots' is not a number"):
        ingest(scenario(), ScenarioPaths("mix", roots))


@pytest.mark.parametrize("limit", [1, 4, 7])
def test_a_limit_stops_inside_a_block_where_one_entry_at_a_time_would(tmp_path, monkeypatch, limit):
    """Entries reach ingestion in blocks; with ``data.limit`` the run stops right after the
    limit-th usable image, counting the bad files before it and none after, exactly as
    blocks of one entry do (the mixed folder interleaves good and bad files)."""
    from pipelines import sources

    roots = make_mixed_folder(tmp_path)
    out = roots.data / "mix" / "ingested"
    sc = scenario(data={"limit": limit})
    monkeypatch.setattr(sources, "PARALLEL_MIN_FILES", 4)
    outputs = []
    for chunk, workers in ((1, "1"), (3, "1"), (64, "1"), (3, "2")):
        monkeypatch.setattr(sources, "CHUNK_FILES", chunk)
        monkeypatch.setenv(sources.WORKERS_ENV, workers)
        res = ingest(sc, ScenarioPaths("mix", roots))
        outputs.append({f: (out / f).read_bytes() for f in ("table.csv", "quarantine.json", "manifest.json")})
        shutil.rmtree(out)
    assert res.n_images == limit and all(o == outputs[0] for o in outputs[1:])
    if limit == 7:
        assert res.n_quarantined > 0  # some bad files come before the 7th image


def test_first_copies_name_the_earliest_row_with_the_same_digest():
    d = np.zeros((6, 32), np.uint8)
    d[1, 0] = d[3, 0] = 1
    d[4, 31] = 7
    d[5, 0] = 1
    assert first_copies(d).tolist() == [-1, -1, 0, 1, -1, 1]
    assert first_copies(np.zeros((0, 32), np.uint8)).tolist() == []
