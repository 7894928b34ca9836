"""The bad-input catalogue of docs/RELIABILITY.md, one test (or test case) per row.

Folder cases run the real :func:`pipelines.steps.ingest.ingest` on real images (crops
of scikit-image photos and textures) mixed with the bad file(s): every bad file is
quarantined with its reason, every odd-but-valid file is kept, and every good image
comes out byte-identical to a run without the bad files (count and hashes). Then the
scenario file, ``.npz`` and checkpoint cases: refused with an error that names the
file and the key (or the fix), and no payload ever runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from pipelines.io import load_images, read_table
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import ScenarioError, load_scenario, parse_scenario
from pipelines.steps.ingest import IngestError, ingest

from .test_ingest import bomb_png, encode

SIZE = 16


# --------------------------------------------------------------------------- good images
def _good_images() -> dict[str, bytes]:
    """Real images, several formats, sizes and modes, under ``good/``."""
    import skimage.data

    astronaut, coffee, chelsea = skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()
    grey = np.asarray(Image.fromarray(chelsea).convert("L"))
    return {
        "good/astronaut.png": encode(Image.fromarray(astronaut[60:108, 180:220]), "PNG"),  # 40 x 48, RGB
        "good/coffee.jpg": encode(Image.fromarray(coffee[100:164, 200:264]), "JPEG", quality=92),
        "good/chelsea_grey.png": encode(Image.fromarray(grey[80:130, 150:200]), "PNG"),
        "good/brick.png": encode(Image.fromarray(skimage.data.brick()[:32, :32]), "PNG"),
        "good/rocket.webp": encode(Image.fromarray(skimage.data.rocket()[100:140, 300:340]), "WEBP", lossless=True),
        "good/gravel.bmp": encode(Image.fromarray(skimage.data.gravel()[200:236, 200:236]), "BMP"),
    }


GOOD = _good_images()


def scenario(channels: int, name: str = "bad"):
    return parse_scenario({"name": name, "data": {"source": "folder"}, "image": {"size": SIZE, "channels": channels}})


def write_good(raw: Path) -> None:
    for rel, data in GOOD.items():
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(data)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, dict[str, tuple[str, bytes]]]:
    """channels -> {good file: (sha256, pixel bytes)} from a folder of good images only."""
    out = {}
    for channels in (1, 3):
        roots = Roots.under(tmp_path_factory.mktemp(f"ref{channels}"))
        paths = ScenarioPaths("bad", roots)
        write_good(paths.raw)
        res = ingest(scenario(channels), paths)
        assert res.n_quarantined == 0 and res.n_images == len(GOOD)
        table, images = read_table(res.table_path), load_images(res.images_path)
        out[channels] = {f: (h, images[i].tobytes()) for f, h, i in zip(table["file"], table["sha256"], table["index"])}
    return out


def assert_good_kept(res, ref: dict[str, tuple[str, bytes]]) -> None:
    """Every good image is in the output, once, with the same hash and pixels."""
    table, images = read_table(res.table_path), load_images(res.images_path)
    assert len(images) == len(table) == res.n_images
    rows = table[table["file"].isin(list(ref))]
    assert sorted(rows["file"]) == sorted(ref), "a good image was lost"
    for f, h, i in zip(rows["file"], rows["sha256"], rows["index"]):
        assert h == ref[f][0], f
        assert images[i].tobytes() == ref[f][1], f


# --------------------------------------------------------------------------- folder cases
def _frames_gif() -> bytes:
    import skimage.data

    brick = skimage.data.brick()
    frames = [Image.fromarray(brick[:24, :24]), Image.fromarray(255 - brick[:24, :24]), Image.fromarray(brick[24:48, :24])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def _exif_rotated() -> bytes:
    stored = np.zeros((20, 40), np.uint8)  # 40 wide x 20 high: left black, right white
    stored[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 20 wide x 40 high
    return encode(Image.fromarray(stored, "L"), "JPEG", quality=95, exif=exif)


def _five_channel_tiff() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(0).integers(0, 256, (24, 24, 5), dtype=np.uint8), photometric="minisblack", planarconfig="contig")
    return buf.getvalue()


def _jpeg_bomb() -> bytes:
    """A small JPEG whose frame header claims 65000 x 65000 pixels."""
    data = bytearray(encode(Image.new("L", (16, 16), 90), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") * 2
    return bytes(data)


def _rgba() -> bytes:
    a = np.full((20, 20, 4), 255, np.uint8)
    a[:, :10, 3] = 0  # left half transparent white -> black
    return encode(Image.fromarray(a, "RGBA"), "PNG")


def _check_16bit(row, px) -> None:
    assert row["orig_mode"].startswith("I;16") and abs(int(px.mean()) - 128) <= 1  # 0x8080 scaled, not clipped to 255


def _check_exif(row, px) -> None:
    assert (row["orig_width"], row["orig_height"]) == (20, 40)  # as displayed
    g = px.mean(axis=2)
    assert g[:4].mean() < 40 and g[-4:].mean() > 215  # rotated: top black, bottom white


def _check_rgba(row, px) -> None:
    assert row["orig_mode"] == "RGBA" and px[:, :6].max() == 0 and px[:, -6:].min() == 255


def _check_cmyk(row, px) -> None:
    assert row["orig_mode"] == "CMYK" and 0 < px.mean() < 255


def _check_palette(row, px) -> None:
    assert row["orig_mode"] == "P"


def _check_la(row, px) -> None:
    assert row["orig_mode"] == "LA" and abs(float(px.mean()) - 100) <= 1  # 200 at alpha 128/255, on black


def _check_gif(row, px) -> None:
    assert row["n_frames"] == 3  # the first frame is used, the count recorded


def _check_non_utf8(row, px) -> None:
    assert row["file"] == "caf\\xe9.png"  # printable and valid UTF-8 in table.csv and logs


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, Path], None]
    """(raw folder, a folder outside the data root) -> writes the case's file(s)."""
    reasons: dict[str, str | None]
    """file -> quarantine reason, or None for a file that is kept."""
    check: Callable | None = None
    """(table row, pixels (H, W, C)) of the kept file -> assertions."""


def _write(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path, Path], None]:
    def make(raw: Path, outside: Path) -> None:
        (raw / name).write_bytes(data() if callable(data) else data)

    return make


def _outside_link(raw: Path, outside: Path) -> None:
    (outside / "secret.png").write_bytes(GOOD["good/astronaut.png"])
    os.symlink(outside / "secret.png", raw / "outside_link.png")


def _non_utf8(raw: Path, outside: Path) -> None:
    gradient = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with open(os.path.join(os.fsencode(raw), b"caf\xe9.png"), "wb") as fh:  # Latin-1 bytes, not UTF-8
        fh.write(encode(Image.fromarray(gradient), "PNG"))


def _duplicates(raw: Path, outside: Path) -> None:
    (raw / "copy_of_astronaut.png").write_bytes(GOOD["good/astronaut.png"])  # same bytes
    reencoded = Image.open(io.BytesIO(GOOD["good/astronaut.png"]))
    (raw / "astronaut_as.tif").write_bytes(encode(reencoded, "TIFF"))  # same pixels, other bytes


CASES = [
    Case("truncated_png", _write("truncated.png", GOOD["good/astronaut.png"][:400]), {"truncated.png": "truncated"}),
    Case("truncated_jpeg", _write("truncated.jpg", GOOD["good/coffee.jpg"][: len(GOOD["good/coffee.jpg"]) // 2]), {"truncated.jpg": "truncated"}),
    Case("zero_byte_file", _write("empty.png", b""), {"empty.png": "empty_file"}),
    Case("text_named_png", _write("notes.png", b"scan of sample 12 (see lab book)\n"), {"notes.png": "not_an_image"}),
    Case("png_16bit", _write("grey16.png", lambda: encode(Image.fromarray(np.full((24, 24), 0x8080, np.uint16)), "PNG")), {"grey16.png": None}, _check_16bit),
    Case("cmyk_jpeg", _write("cmyk.jpg", lambda: encode(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG")), {"cmyk.jpg": None}, _check_cmyk),
    Case("palette_png", _write("palette.png", lambda: encode(Image.open(io.BytesIO(GOOD["good/astronaut.png"])).convert("P"), "PNG")), {"palette.png": None}, _check_palette),
    Case("palette_png_transparent", _write("palette_trns.png", lambda: encode(Image.open(io.BytesIO(GOOD["good/astronaut.png"])).convert("P"), "PNG", transparency=0)),
         {"palette_trns.png": None}, _check_palette),
    Case("alpha_png", _write("rgba.png", _rgba), {"rgba.png": None}, _check_rgba),
    Case("grey_alpha_png", _write("la.png", lambda: encode(Image.new("LA", (20, 20), (200, 128)), "PNG")), {"la.png": None}, _check_la),
    Case("animated_gif", _write("anim.gif", _frames_gif), {"anim.gif": None}, _check_gif),
    Case("exif_rotated_jpeg", _write("exif_rot.jpg", _exif_rotated), {"exif_rot.jpg": None}, _check_exif),
    Case("one_by_one", _write("dot.png", lambda: encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")), {"dot.png": "too_small"}),
    Case("decompression_bomb_png", _write("bomb.png", bomb_png()), {"bomb.png": "decompression_bomb"}),
    Case("decompression_bomb_jpeg", _write("bomb.jpg", _jpeg_bomb), {"bomb.jpg": "decompression_bomb"}),
    Case("non_utf8_name", _non_utf8, {"caf\\xe9.png": None}, _check_non_utf8),
    Case("symlink_outside_root", _outside_link, {"outside_link.png": "symlink_outside_root"}),
    Case("broken_symlink", lambda raw, out: os.symlink(raw / "gone.png", raw / "dangling.png"), {"dangling.png": "broken_symlink"}),
    Case("symlinked_directory", lambda raw, out: os.symlink(out, raw / "linked_dir"), {"linked_dir": "symlinked_directory"}),
    Case("fifo", lambda raw, out: os.mkfifo(raw / "pipe.png"), {"pipe.png": "not_a_regular_file"}),
    Case("duplicates", _duplicates, {"copy_of_astronaut.png": None, "astronaut_as.tif": None}),
    Case("five_channel_tiff", _write("multispectral.tif", _five_channel_tiff), {"multispectral.tif": "decode_error"}),
]


def _build(tmp_path: Path, cases: list[Case]) -> ScenarioPaths:
    """A scenario folder holding the good images and every file of ``cases``."""
    paths = ScenarioPaths("bad", Roots.under(tmp_path))
    write_good(paths.raw)
    outside = tmp_path / "outside"
    outside.mkdir()
    for c in cases:
        c.make(paths.raw, outside)
    return paths


def _run(tmp_path: Path, cases: list[Case], channels: int):
    paths = _build(tmp_path, cases)
    return paths, ingest(scenario(channels), paths)


def _assert_case(res, case: Case) -> None:
    quarantined = {q["file"]: q for q in res.quarantine}
    table, images = read_table(res.table_path), load_images(res.images_path)
    kept = dict(zip(table["file"], table.index))
    for f, reason in case.reasons.items():
        if reason is None:
            assert f in kept and f not in quarantined, (f, quarantined.get(f))
            if case.check:
                row = table.loc[kept[f]]
                case.check(row, images[int(row["index"])])
        else:
            assert f in quarantined and f not in kept, f
            assert quarantined[f]["reason"] == reason and quarantined[f]["detail"], quarantined[f]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_folder_case(tmp_path, reference, case, channels):
    """One bad (or odd) input among the good images: only it is quarantined, with its
    reason (or it is kept), and every good image comes out unchanged. Channels 1 and 3:
    every colour input is also a wrong-channel-count input for the grey scenario, and
    every grey one for the RGB scenario."""
    paths, res = _run(tmp_path, [case], channels)
    assert_good_kept(res, reference[channels])
    assert {q["file"] for q in res.quarantine} == {f for f, r in case.reasons.items() if r is not None}
    _assert_case(res, case)
    assert res.n_images == len(GOOD) + sum(r is None for r in case.reasons.values())


@pytest.mark.parametrize("channels", [1, 3])
def test_every_bad_file_at_once_loses_no_good_image(tmp_path, reference, channels):
    """All the cases in one folder: each bad file has its reason, nothing crashes, the
    originals are untouched, and the good images are all there, byte for byte."""
    paths = _build(tmp_path, CASES)
    before = {p: p.read_bytes() for p in sorted(paths.raw.rglob("*")) if p.is_file() and not p.is_symlink() and not p.is_fifo()}
    res = ingest(scenario(channels), paths)

    assert_good_kept(res, reference[channels])
    expected = {f: r for c in CASES for f, r in c.reasons.items()}
    assert {q["file"]: q["reason"] for q in res.quarantine} == {f: r for f, r in expected.items() if r is not None}
    for c in CASES:
        _assert_case(res, c)
    assert res.n_images == len(GOOD) + sum(r is None for r in expected.values())
    assert json.loads(res.quarantine_path.read_text()) == res.quarantine
    assert {p: p.read_bytes() for p in before} == before  # nothing deleted, moved or changed


def test_duplicates_are_kept_flagged_and_caught_by_validation(tmp_path):
    """Duplicates are not quarantined (both files are real images): ingestion links them
    with ``duplicate_of`` and a ``expect_column_values_to_be_unique`` on ``sha256``
    names every copy."""
    from pipelines.steps.validate import validate

    paths, res = _run(tmp_path, [c for c in CASES if c.id == "duplicates"], 3)
    table = read_table(res.table_path).set_index("file")
    group = ["astronaut_as.tif", "copy_of_astronaut.png", "good/astronaut.png"]  # in table order
    assert table.loc[group, "sha256"].nunique() == 1 and res.n_duplicates == 2
    first = int(table.loc["astronaut_as.tif", "index"])
    assert table.loc[group[1:], "duplicate_of"].tolist() == [first, first]
    sc = parse_scenario({"name": "bad", "data": {"source": "folder"}, "image": {"size": SIZE, "channels": 3},
                         "validation": {"min_images": 2, "expectations": [{"expectation": "expect_column_values_to_be_unique", "kwargs": {"column": "sha256"}}]}})
    val = validate(sc, paths)
    unique = next(r for r in val.results if r["expectation"] == "expect_column_values_to_be_unique")
    assert not val.passed and not unique["success"] and sorted(unique["unexpected_files"]) == group


# --------------------------------------------------------------------------- scenario files
BASE = "name: x\ndata: {source: builtin, builtin: faces}\n"


@pytest.mark.parametrize(
    "text, key, needles",
    [
        pytest.param(BASE + "imgae: {size: 32}\n", "imgae", ["unknown key", "image, validation"], id="unknown_key"),
        pytest.param(BASE + "image: {size: 32, chanels: 3}\n", "image.chanels", ["unknown key", "size, channels, fit"], id="unknown_nested_key"),
        pytest.param(BASE + "gan: {train: {stepz: 300}}\n", "train.stepz", ["unknown key", "steps"], id="unknown_gan_key"),
        pytest.param(BASE + "image: {size: big}\n", "image.size", ["16", "128"], id="wrong_type_enum"),
        pytest.param("name: x\ndata: {source: builtin, builtin: faces, limit: lots}\n", "data.limit", ["integer"], id="wrong_type_int"),
        pytest.param(BASE + "augmentation: {transforms: HorizontalFlip}\n", "augmentation.transforms", ["list"], id="wrong_type_list"),
        pytest.param(BASE + "gan: {train: {steps: many}}\n", "train.steps", ["integer"], id="wrong_type_gan_value"),
        pytest.param(BASE + "gan: {train: 300}\n", "gan.train", ["mapping", "int"], id="wrong_type_gan_section"),
        pytest.param(BASE + "gpu: {train: [steps, 20000]}\n", "gpu.train", ["mapping", "list"], id="wrong_type_gpu_section"),
        pytest.param("name: x\ndata: {source: npz}\n", "data.path", ["required", "npz"], id="missing_data_path"),
    ],
)
def test_bad_scenario_file_names_the_file_and_the_key(tmp_path, text, key, needles):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert str(p) in msg and key in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_scenario_data_path_that_does_not_exist_is_a_clear_error(tmp_path):
    """The file is valid; the folder it points at is missing: ingestion says which
    folder, and which key to change."""
    p = tmp_path / "x.yaml"
    p.write_text("name: x\ndata: {source: folder, path: x/incoming}\nimage: {size: 16, channels: 1}\n")
    sc = load_scenario(p)
    with pytest.raises(IngestError) as info:
        ingest(sc, ScenarioPaths("x", Roots.under(tmp_path)))
    msg = str(info.value)
    assert "x/incoming does not exist" in msg and "data.path" in msg and "scenarios/x.yaml" in msg


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("!!python/object/apply:os.mkdir [{marker}]", id="object_apply"),
        pytest.param("!!python/object/new:os.mkdir [{marker}]", id="object_new"),
        pytest.param("!!python/name:os.mkdir", id="name"),
        pytest.param("!!python/module:os", id="module"),
    ],
)
def test_yaml_tags_that_would_construct_objects_are_refused(tmp_path, tag):
    marker = tmp_path / "payload_ran"
    p = tmp_path / "x.yaml"
    p.write_text(BASE + f"description: {tag.format(marker=json.dumps(str(marker)))}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert str(p) in msg and "tags such as" in msg and "line 3" in msg, msg
    assert not marker.exists()


# --------------------------------------------------------------------------- npz sources
class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:  # must never be called
    Path(path).write_text("payload ran")


def _npz_bitflip(d: Path) -> None:
    np.savez(d / "a.npz", train_images=np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8))
    data = bytearray((d / "a.npz").read_bytes())
    data[600] ^= 0xFF  # inside the array data: the zip CRC no longer matches
    (d / "a.npz").write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, needles",
    [
        pytest.param(_npz_bitflip, ["damaged", "CRC", "np.savez"], id="corrupt_bitflip"),
        pytest.param(lambda d: np.savez(d / "a.npz", train_images=np.array([_Payload(str(d / "payload_ran"))], dtype=object)),
                     ["pickle", "refused"], id="pickle_payload"),
        pytest.param(lambda d: np.savez(d / "a.npz", train_images=np.zeros((4, 28, 28, 2), np.uint8)), ["2 channels", "1 (grey) or 3 (RGB)"], id="wrong_channel_count"),
        pytest.param(lambda d: np.savez(d / "a.npz", train_images=np.zeros((4, 3, 28, 28), np.uint8)), ["channels-first", "transpose"], id="channels_first"),
        pytest.param(lambda d: np.savez(d / "a.npz", train_images=np.zeros((0, 28, 28), np.uint8)), ["holds no images", "(0, 28, 28)"], id="no_images"),
    ],
)
def test_npz_source_is_refused_with_a_clear_error(tmp_path, make, needles):
    roots = Roots.under(tmp_path)
    d = roots.data / "med"
    d.mkdir(parents=True)
    make(d)
    sc = parse_scenario({"name": "med", "data": {"source": "npz", "path": "med/a.npz"}, "image": {"size": 28, "channels": 1}})
    with pytest.raises(IngestError) as info:
        ingest(sc, ScenarioPaths("med", roots))
    msg = str(info.value)
    assert "scenario med" in msg and "a.npz" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    assert not (d / "payload_ran").exists()


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("loader", ["load_tensors", "load_generator", "resume"])
def test_torch_save_checkpoint_with_a_payload_is_refused_unrun(tmp_path, loader):
    """A ``torch.save`` file (zip + pickle) named like a checkpoint, carrying an object
    whose unpickling would run code: refused as not safetensors, nothing runs."""
    import torch
    from sklearn.datasets import load_digits

    from gan_core.checkpoint import CheckpointError, load_generator, load_tensors
    from gan_core.config import load_config
    from gan_core.trainer import train

    from .conftest import tiny_config

    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-00000004.safetensors"
    ckpt.parent.mkdir(parents=True)
    torch.save({"G.main.0.weight": torch.zeros(1), "meta": _Payload(str(marker))}, ckpt)
    with pytest.raises(CheckpointError) as info:
        if loader == "load_tensors":
            load_tensors(ckpt)
        elif loader == "load_generator":
            load_generator(ckpt)
        else:
            digits = np.kron(load_digits().images[:64], np.ones((2, 2))) * (255 / 16)  # real 8x8 digits at 16x16
            train(load_config(tiny_config(steps=8)), digits.round().astype(np.uint8), tmp_path / "run")
    msg = str(info.value)
    assert str(ckpt) in msg and "not a safetensors file" in msg, msg
    assert not marker.exists()
    shutil.rmtree(tmp_path / "run")
