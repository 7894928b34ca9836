"""Ingestion: turn a scenario's source into one normalized image array plus a per-image table.

    from pipelines.steps.ingest import ingest
    result = ingest(scenario, paths)      # writes paths.ingested/{images.npz,table.csv,quarantine.json,manifest.json}

Sources (``scenario.data.source``):

- ``builtin`` — :func:`pipelines.builtin_data.load` (real images shipped with installed
  packages); rows are named ``builtin:<name>#<i>``;
- ``folder``  — every file under ``scenario.data_path(data_root)``, recursively, in the
  order of their relative paths' bytes; rows are named by that relative path;
- ``npz``     — a MedMNIST-style archive: uint8 ``(N, H, W)`` or ``(N, H, W, C)`` under
  ``scenario.data.npz_key``, loaded with ``allow_pickle=False``; rows ``npz:<key>#<i>``.

Every image, whatever its source, goes through the same code: first frame only (the
frame count is recorded), EXIF orientation applied, mode converted to ``L`` or ``RGB``
per ``scenario.image.channels``, made square per ``scenario.image.fit`` and resized
(antialiased, Lanczos) to ``scenario.image.size``.

Conversion rules (documented choices):

- transparency (RGBA, LA, PA, palette with a transparent index, premultiplied modes) is
  composited on **black** — the same colour ``fit: pad`` pads with, so padded borders
  and transparent regions look alike to the GAN;
- 16-bit greyscale (``I;16*``) is scaled by 255/65535 (not clipped); 32-bit integer
  (``I``) is treated as 8-bit when its maximum is <= 255, as 16-bit when <= 65535,
  and min-max scaled otherwise; float (``F``) as [0, 1] when it lies there, else
  min-max scaled; 16-bit RGB PNGs are reduced to 8 bit by Pillow (high byte);
- CMYK / YCbCr / palette / bilevel are converted by Pillow; RGB -> L uses Pillow's
  ITU-R 601-2 luma;
- ``orig_width``/``orig_height`` are the size *as displayed*, i.e. after the EXIF
  orientation (a portrait photo stored sideways with orientation 6 is recorded as
  portrait).

Bad files never crash the run and are never deleted or moved: they are listed in
``quarantine.json`` as ``{"file", "reason", "detail"}``. Reasons: ``empty_file``,
``not_an_image``, ``truncated``, ``decode_error``, ``too_small`` (a side < 8 px),
``decompression_bomb``, ``file_too_large``, ``unsupported_mode``,
``symlink_outside_root``, ``broken_symlink``, ``symlinked_directory`` (directory links
are never followed), ``not_a_regular_file``, ``unreadable`` (permissions, I/O errors).

``table.csv`` columns (the contract with validation and the scenario files) are
:data:`TABLE_COLUMNS`; ``mean``/``std``/``min``/``max`` are of the normalized pixels
scaled to [0, 1] (population std over all pixels and channels); ``symmetry`` is the
Pearson correlation of the image with its left-right mirror (1.0 for an image that
has no variance, which is trivially mirror-identical); ``duplicate_of`` is the index
of the first row with the same ``sha256`` (empty when none).

Contamination columns (:mod:`pipelines.contamination`, computed over the scenario's own
normalized images after all of them are decoded; numbers in docs/BENCHMARKS.md):

- ``phash`` — 64-bit DCT perceptual hash of the grey image, 16 hex digits;
- ``near_duplicate_of`` — the index of the first earlier row this image is a perceptual
  copy of (re-encoded, brightened, slightly blurred or noised: ``phash`` within
  ``NEAR_HASH_BITS`` bits and the same pixels up to a linear brightness/contrast map),
  empty when none; pixel-identical copies are in ``duplicate_of`` instead;
- ``outlier_score`` — how unlike its scenario the image is, as a robust z-score (median
  and MAD of the scenario's own scores) of its k-NN distance in a standardized space of
  texture, contrast, spectrum and colour features; one bound such as
  ``max_value: 4.0`` means the same in every scenario. Linear in N (each image is
  compared with a fixed, seeded sample of at most 2,000 images); 0 below 5 images.

All outputs are written atomically (``images.npz`` is streamed from the decoded images,
so peak memory stays near the size of the output); ``manifest.json`` is removed
first and written last, so its presence marks a complete, consistent ingestion.
Reruns on the same input give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.paths import ScenarioPaths
from pipelines.scenario import Scenario

FORMAT = "scenario-gan.ingest/2"
TABLE_COLUMNS = (
    "index", "file", "source_sha256", "sha256", "orig_width", "orig_height", "orig_mode",
    "n_frames", "width", "height", "channels", "mean", "std", "min", "max", "symmetry", "duplicate_of",
    "phash", "near_duplicate_of", "outlier_score",
)
"""The columns of ``table.csv``, in order, each described in the module docstring; the
last three are the contamination columns (:mod:`pipelines.contamination`)."""
CONTAMINATION_COLUMNS = ("phash", "near_duplicate_of", "outlier_score")
"""Computed once all images are decoded (they compare images with each other)."""
MIN_SIDE = 8
"""Images with a side shorter than this (after EXIF orientation) are quarantined."""
MAX_IMAGE_PIXELS = 64_000_000
"""Decompression-bomb bound (pixels of the first frame, e.g. 8000x8000). Pillow's own
check uses the same bound during ingestion (restored afterwards)."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""Files larger than this are quarantined without being read."""
IMAGES_KEY = "images"
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "ICO")
"""Pillow formats that are decoded; anything else is ``not_an_image``. Formats that run
external programs (EPS via Ghostscript) or are guessed from weak signatures (TGA) are
deliberately left out."""
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class IngestError(RuntimeError):
    """The source is missing, unreadable as a whole, or yields no usable image."""


@dataclass(frozen=True)
class IngestResult:
    scenario: str
    n_images: int
    n_quarantined: int
    n_duplicates: int
    content_hash: str
    """sha256 over the ordered per-image ``sha256`` values (one per line)."""
    quarantine: list[dict[str, str]]
    images_path: Path
    table_path: Path
    quarantine_path: Path
    manifest_path: Path
    source: dict[str, Any] = field(default_factory=dict)
    n_near_duplicates: int = 0
    """Rows with a ``near_duplicate_of``."""

    @property
    def quarantined_share(self) -> float:
        total = self.n_images + self.n_quarantined
        return self.n_quarantined / total if total else 0.0


# ----------------------------------------------------------------------------- helpers


def printable_name(name: str | bytes) -> str:
    """A UTF-8-safe, printable version of a file name: undecodable bytes become ``\\xNN``
    and control characters are escaped, so names can go into CSV/JSON and logs."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
    return "".join(out)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (same layout as ``np.savez``: stored, no pickle) with fixed zip
    timestamps, so the same arrays always give the same bytes (``np.savez`` stamps the
    current time into every entry)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_images_npz(path: Path, images: list[np.ndarray], key: str = IMAGES_KEY) -> Path:
    """Atomically write ``images`` (equal-shape uint8 arrays) as one ``(N, ...)`` array
    under ``key`` in an ``.npz``, streamed to disk one image at a time: the same bytes as
    ``npz_bytes({key: np.stack(images)})`` without a stacked copy or an in-memory archive.
    Written through :func:`gan_core.checkpoint.atomic_writer` (temp file, fsync, rename;
    a full disk is an ``OSError`` naming the file, the previous file stays as it was)."""
    if not images:
        raise ValueError("write_images_npz needs at least one image")
    first = images[0]
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": (len(images), *first.shape)}
    from gan_core.checkpoint import atomic_writer  # lazy: pulls in torch

    with atomic_writer(path, len(images) * first.nbytes) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array_header_1_0(entry, header)
                for im in images:
                    if im.shape != first.shape or im.dtype != first.dtype:
                        raise ValueError(f"write_images_npz: image of {im.dtype} {im.shape} among {first.dtype} {first.shape}")
                    entry.write(np.ascontiguousarray(im).data)
    return path


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _atomic_write(path: Path, data: bytes) -> Path:
    from gan_core.checkpoint import atomic_write_bytes  # lazy: pulls in torch

    return atomic_write_bytes(path, data)


def read_table(path: str | os.PathLike[str]):
    """Read ``table.csv`` with the column types of the contract (file names such as
    ``NA`` stay strings; ``duplicate_of`` and ``near_duplicate_of`` are nullable integers)."""
    import pandas as pd

    df = pd.read_csv(
        path,
        dtype={"file": str, "source_sha256": str, "sha256": str, "orig_mode": str, "phash": str},
        keep_default_na=False,
        na_values={"duplicate_of": [""], "near_duplicate_of": [""]},
    )
    for col in ("duplicate_of", "near_duplicate_of"):
        if col in df.columns:
            df[col] = df[col].astype("Int64")
    return df


@contextmanager
def _pillow_limits(max_pixels: int):
    from PIL import Image, ImageFile

    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


# ----------------------------------------------------------------------------- decoding


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class _Decoded:
    pixels: np.ndarray  # uint8 (size, size, C)
    orig_width: int
    orig_height: int
    orig_mode: str
    n_frames: int


_ADDR_RE = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_ORIENT_SWAP = {5, 6, 7, 8}


def _to_8bit(im, channels: int):
    """Any Pillow mode -> an ``L`` or ``RGB`` image (see the module docstring)."""
    from PIL import Image

    mode = im.mode
    target = "RGB" if channels == 3 else "L"
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if a.ndim != 2:
            raise _Bad("unsupported_mode", f"mode {mode} with shape {a.shape}")
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "I" and a.size and a.min() >= 0 and a.max() <= 255:
            pass
        elif mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535:
            a = a / 257.0
        elif mode == "F" and a.size and a.min() >= 0 and a.max() <= 1:
            a = a * 255.0
        else:
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        g = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return g if target == "L" else g.convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255  # composite on black
        im = Image.fromarray(rgb.astype(np.uint8), "RGB")
        return im if target == "RGB" else im.convert("L")
    if mode == target:
        return im
    if mode not in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        raise _Bad("unsupported_mode", f"Pillow mode {mode!r} cannot be converted to {target}")
    try:
        if target == "L" and mode not in ("1", "P", "RGB"):
            return im.convert("RGB").convert("L")
        return im.convert(target)
    except (ValueError, OSError) as e:
        raise _Bad("unsupported_mode", f"mode {mode!r} -> {target}: {e}") from None


def _square(im, size: int, fit: str):
    """Make square per ``fit`` and resize (antialiased) to ``size`` x ``size``."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    if fit == "center_crop" and w != h:
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return im.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if fit == "pad" and w != h:
        s = max(w, h)
        canvas = Image.new(im.mode, (s, s), 0)
        canvas.paste(im, ((s - w) // 2, (s - h) // 2))
        im = canvas
    return im.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def _normalize(im, scenario: Scenario, orig_mode: str, n_frames: int, max_pixels: int) -> _Decoded:
    """The one per-image path: orientation, size checks, mode, square fit, resize."""
    from PIL import ImageOps

    w, h = im.size
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # corrupt EXIF: ignore orientation rather than lose the image
        orientation = 1
    if orientation in _ORIENT_SWAP:
        w, h = h, w
    if w * h > max_pixels:
        raise _Bad("decompression_bomb", f"{w}x{h} = {w * h} pixels exceeds the bound of {max_pixels}")
    if min(w, h) < MIN_SIDE:
        raise _Bad("too_small", f"{w}x{h}; sides must be at least {MIN_SIDE} px")
    size = scenario.image.size
    if getattr(im, "format", None) == "JPEG" and min(w, h) >= 4 * size:
        im.draft(None, (2 * size, 2 * size))  # DCT-domain downscale: much faster decode
    try:
        oriented = ImageOps.exif_transpose(im) if orientation != 1 else im
        oriented.load()
    except Exception as e:  # noqa: BLE001 - every decoder failure is a quarantine reason
        raise _classify(e) from None
    pix = _to_8bit(oriented, scenario.image.channels)
    pix = _square(pix, size, scenario.image.fit)
    arr = np.asarray(pix, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape != (size, size, scenario.image.channels):
        raise _Bad("unsupported_mode", f"normalized to shape {arr.shape}, expected {(size, size, scenario.image.channels)}")
    return _Decoded(np.ascontiguousarray(arr), w, h, orig_mode, n_frames)


def _classify(e: BaseException) -> _Bad:
    from PIL import Image, UnidentifiedImageError

    # No object reprs ("<_io.BytesIO object at 0x...>"): details must be identical on reruns.
    msg = _ADDR_RE.sub("<file>", f"{type(e).__name__}: {e}")
    if isinstance(e, _Bad):
        return e
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return _Bad("decompression_bomb", msg)
    if isinstance(e, UnidentifiedImageError):
        return _Bad("not_an_image", f"{msg} (decoded formats: {', '.join(_formats())})")
    low = str(e).lower()
    if isinstance(e, EOFError) or "truncat" in low or "broken data stream" in low or "premature end" in low:
        return _Bad("truncated", msg)
    return _Bad("decode_error", msg)


def _formats() -> list[str]:
    from PIL import Image

    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
)


def _signature(data: bytes) -> str | None:
    """The image format ``data`` starts like (a strong magic number), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def _decode_bytes(data: bytes, scenario: Scenario, max_pixels: int) -> _Decoded:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=_formats()) as im:
            im.seek(0)
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            return _normalize(im, scenario, im.mode, n_frames, max_pixels)
    except _Bad:
        raise
    except UnidentifiedImageError as e:
        fmt = _signature(data)
        if fmt is None:
            raise _classify(e) from None
        # An image file Pillow cannot open (e.g. a TIFF with 5 samples per pixel or
        # float64 samples, a header cut short) is not "not an image": say what it is.
        raise _Bad(
            "decode_error",
            f"the file starts like a {fmt} file, but Pillow cannot read this variant (an unusual channel count or "
            f"sample format, or a damaged header); convert it to an 8-bit grey or RGB PNG",
        ) from None
    except Exception as e:  # noqa: BLE001
        raise _classify(e) from None


def _decode_array(row: np.ndarray, scenario: Scenario, max_pixels: int) -> _Decoded:
    from PIL import Image

    if row.ndim == 3 and row.shape[2] == 1:
        row = row[:, :, 0]
    modes = {2: "L"} if row.ndim == 2 else {3: "RGB", 4: "RGBA"}
    key = 2 if row.ndim == 2 else row.shape[2]
    if key not in modes:
        raise _Bad("unsupported_mode", f"array row of shape {row.shape}: need (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    im = Image.fromarray(np.ascontiguousarray(row), modes[key])
    return _normalize(im, scenario, modes[key], 1, max_pixels)


# ----------------------------------------------------------------------------- sources


def _scenario_file(scenario: Scenario) -> str:
    return f"scenarios/{scenario.name}.yaml"


def _iter_folder(root: Path, data_root: Path, scenario: Scenario, max_pixels: int, max_file_bytes: int) -> Iterator[tuple[str, str | None, _Decoded | _Bad]]:
    """(printable relative name, source sha256, decoded or bad) for every entry, sorted."""
    data_root_real = os.path.realpath(data_root)
    entries: list[tuple[bytes, str, str]] = []  # (sort key, relative path, kind)
    walk_errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_errors.append, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                rel = os.path.normpath(os.path.join(rel_dir, d))
                entries.append((os.fsencode(rel), rel, "dirlink"))
        for f in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, f))
            entries.append((os.fsencode(rel), rel, "file"))
    for err in walk_errors:
        rel = os.path.relpath(err.filename, root) if err.filename else "."
        if rel == ".":
            raise IngestError(f"scenario {scenario.name}: cannot read the source folder {root}: {err}") from None
        entries.append((os.fsencode(rel), rel, f"error:{err.strerror or err}"))
    entries.sort()
    for _, rel, kind in entries:
        name = printable_name(rel.replace(os.sep, "/"))
        full = os.path.join(root, rel)
        if kind.startswith("error:"):
            yield name, None, _Bad("unreadable", kind[6:])
            continue
        if kind == "dirlink":
            yield name, None, _Bad("symlinked_directory", f"directory links are not followed (points to {printable_name(os.readlink(full))})")
            continue
        yield name, *_read_one(full, data_root_real, scenario, max_pixels, max_file_bytes)


def _read_one(full: str, data_root_real: str, scenario: Scenario, max_pixels: int, max_file_bytes: int) -> tuple[str | None, _Decoded | _Bad]:
    try:
        is_link = os.path.islink(full)
        if is_link:
            target = os.path.realpath(full)
            if not os.path.exists(target):
                return None, _Bad("broken_symlink", f"points to {printable_name(os.readlink(full))}, which does not exist")
            if os.path.commonpath([data_root_real, target]) != data_root_real:
                return None, _Bad("symlink_outside_root", f"points to {printable_name(target)}, outside the data root {printable_name(data_root_real)}")
        # O_NONBLOCK: opening a FIFO must not hang the run; O_NOFOLLOW: a file swapped
        # for a link after the check above is refused rather than followed.
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if is_link else getattr(os, "O_NOFOLLOW", 0))
        fd = os.open(full, flags)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None, _Bad("not_a_regular_file", f"file type {stat.filemode(st.st_mode)[0]!r} (device, pipe or socket) is not read")
            if st.st_size == 0:
                return None, _Bad("empty_file", "0 bytes")
            if st.st_size > max_file_bytes:
                return None, _Bad("file_too_large", f"{st.st_size} bytes > {max_file_bytes}")
            data = fh.read(max_file_bytes + 1)
    except OSError as e:
        return None, _Bad("unreadable", f"{type(e).__name__}: {e.strerror or e}")
    digest = _sha256(data)
    if not data:
        return digest, _Bad("empty_file", "0 bytes")
    if len(data) > max_file_bytes:
        return digest, _Bad("file_too_large", f"more than {max_file_bytes} bytes")
    try:
        return digest, _decode_bytes(data, scenario, max_pixels)
    except _Bad as bad:
        return digest, bad


def _iter_arrays(images: np.ndarray, prefix: str, scenario: Scenario, max_pixels: int) -> Iterator[tuple[str, str | None, _Decoded | _Bad]]:
    for i in range(len(images)):
        row = np.ascontiguousarray(images[i])
        try:
            out: _Decoded | _Bad = _decode_array(row, scenario, max_pixels)
        except _Bad as bad:
            out = bad
        except Exception as e:  # noqa: BLE001
            out = _classify(e)
        yield f"{prefix}#{i}", _sha256(row.tobytes()), out


def _load_npz(path: Path, key: str, scenario: Scenario) -> np.ndarray:
    where = f"scenario {scenario.name}: npz source {path}"
    if not path.is_file():
        raise IngestError(f"{where} does not exist; put the archive there or fix data.path in {_scenario_file(scenario)}")
    hint = f"re-create it with np.savez(path, {key}=uint8_images)"
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - BadZipFile, pickle refusal, zlib/OS errors...
        raise IngestError(f"{where} cannot be read as an .npz archive without pickle ({type(e).__name__}: {e}); {hint}") from None
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise IngestError(f"{where} is a single .npy array, not an .npz archive; {hint}")
    try:
        if key not in obj.files:
            raise IngestError(f"{where} has no array {key!r} (it has {sorted(obj.files)}); set data.npz_key in {_scenario_file(scenario)}")
        arr = obj[key]
    except IngestError:
        raise
    except Exception as e:  # noqa: BLE001
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            why = "holds Python objects, which only pickle could load (refused: unpickling can run code)"
        else:
            why = "is damaged (a checksum or decompression error)"
        raise IngestError(f"{where}: array {key!r} {why} ({type(e).__name__}: {e}); {hint}") from None
    finally:
        obj.close()
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3, 4)):
        if arr.dtype != np.uint8:
            fix = "convert it, e.g. (x * 255).round().astype('uint8')"
        elif arr.ndim == 4 and arr.shape[1] < min(arr.shape[2], arr.shape[3]):
            fix = "it looks channels-first (N, C, H, W); channels come last: x.transpose(0, 2, 3, 1), then keep 1 or 3 of them"
        elif arr.ndim == 4:
            fix = f"its last axis has {arr.shape[3]} channels; reduce them to 1 (grey) or 3 (RGB) for image.channels {scenario.image.channels}"
        else:
            fix = "reshape it to one image per row"
        raise IngestError(
            f"{where}: array {key!r} is {arr.dtype} with shape {arr.shape}; expected uint8 (N, H, W) or (N, H, W, C) "
            f"with C in 1, 3, 4 (MedMNIST layout); {fix}"
        )
    return arr


# ----------------------------------------------------------------------------- stats


def image_stats(pixels: np.ndarray) -> dict[str, float]:
    """mean/std/min/max of uint8 pixels scaled to [0, 1], and left-right ``symmetry``."""
    x = pixels.astype(np.float64) / 255.0
    a = x.ravel()
    m = x[:, ::-1, :].ravel()
    mean = a.mean()
    a0, m0 = a - mean, m - m.mean()
    ssa = (a0 * a0).sum()
    den = float(np.sqrt(ssa * (m0 * m0).sum()))
    sym = float((a0 * m0).sum() / den) if den > 1e-12 else 1.0
    # The same floating-point operations as a.std() (sum of squared deviations from
    # the mean, divided by n) and a.min()/a.max() (x / 255 is monotonic), computed once.
    return {
        "mean": round(float(mean), 6),
        "std": round(float(np.sqrt(ssa / a.size)), 6),
        "min": round(int(pixels.min()) / 255.0, 6),
        "max": round(int(pixels.max()) / 255.0, 6),
        "symmetry": round(min(1.0, max(-1.0, sym)), 6),
    }


# ----------------------------------------------------------------------------- the step


def ingest(
    scenario: Scenario,
    paths: ScenarioPaths,
    *,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> IngestResult:
    """Read the scenario's source, normalize every image, quarantine bad files and write
    ``images.npz``, ``table.csv``, ``quarantine.json`` and (last) ``manifest.json`` to
    ``paths.ingested``. Raises :class:`IngestError` when the source is missing or yields
    no usable image (``quarantine.json`` is still written so the reasons can be read)."""
    out_dir = paths.ingested
    out = {k: out_dir / f for k, f in (("images", "images.npz"), ("table", "table.csv"), ("quarantine", "quarantine.json"), ("manifest", "manifest.json"))}
    data_root = paths.roots.data
    spec = scenario.data
    source: dict[str, Any] = {"type": spec.source}

    if spec.source == "builtin":
        from pipelines import builtin_data

        try:
            arr = builtin_data.load(spec.builtin, scenario.image.size)
        except Exception as e:  # noqa: BLE001 - e.g. a package without its data files
            raise IngestError(f"scenario {scenario.name}: built-in source {spec.builtin!r} could not be loaded ({type(e).__name__}: {e}); check that scikit-image/scikit-learn are installed") from None
        source.update(name=spec.builtin)
        items = _iter_arrays(arr, f"builtin:{spec.builtin}", scenario, max_image_pixels)
    elif spec.source == "npz":
        path = scenario.data_path(data_root)
        arr = _load_npz(path, spec.npz_key, scenario)
        source.update(path=Path(os.path.relpath(path, data_root.resolve())).as_posix(), key=spec.npz_key, sha256=_file_sha256(path), shape=list(arr.shape))
        items = _iter_arrays(arr, f"npz:{spec.npz_key}", scenario, max_image_pixels)
    else:
        root = scenario.data_path(data_root)
        if not root.is_dir():
            raise IngestError(
                f"scenario {scenario.name}: source folder {root} does not exist; create it and drop images into it, "
                f"or set data.path in {_scenario_file(scenario)}"
            )
        source.update(path=Path(os.path.relpath(root, data_root.resolve())).as_posix())
        items = _iter_folder(root, data_root, scenario, max_image_pixels, max_file_bytes)

    # Rows are tuples in TABLE_COLUMNS order and images stay separate arrays until
    # they are streamed into images.npz: peak memory is about the output's size.
    rows: list[tuple[Any, ...]] = []
    images: list[np.ndarray] = []
    quarantine: list[dict[str, str]] = []
    first_of: dict[str, int] = {}
    n_seen = 0
    with _pillow_limits(max_image_pixels):
        for name, src_hash, res in items:
            n_seen += 1
            if isinstance(res, _Bad):
                quarantine.append({"file": name, "reason": res.reason, "detail": res.detail})
                continue
            idx = len(images)
            digest = _sha256(res.pixels.tobytes())
            dup = first_of.setdefault(digest, idx)
            images.append(res.pixels)
            st = image_stats(res.pixels)
            rows.append((
                idx, name, src_hash, digest, res.orig_width, res.orig_height, res.orig_mode,
                res.n_frames, res.pixels.shape[1], res.pixels.shape[0], res.pixels.shape[2],
                st["mean"], st["std"], st["min"], st["max"], st["symmetry"],
                dup if dup != idx else None,
            ))
            if spec.limit is not None and len(images) >= spec.limit:
                break

    if not images:
        out["manifest"].unlink(missing_ok=True)
        out["images"].unlink(missing_ok=True)
        out["table"].unlink(missing_ok=True)
        _atomic_write(out["quarantine"], _json_bytes(quarantine))
        if n_seen == 0:
            if spec.source == "npz":
                raise IngestError(f"scenario {scenario.name}: npz source {source['path']}: array {spec.npz_key!r} holds no images (shape {tuple(source['shape'])}); re-create it with at least one image")
            raise IngestError(f"scenario {scenario.name}: source {source.get('path', source)} holds no images; drop images (PNG, JPEG, ...) into {scenario.data_path(data_root) if spec.source != 'builtin' else 'it'}")
        reasons = sorted({q["reason"] for q in quarantine})
        raise IngestError(
            f"scenario {scenario.name}: no usable image among {n_seen} source entries (reasons: {', '.join(reasons)}); "
            f"see {out['quarantine']} for each file and fix or replace the files"
        )

    import pandas as pd

    from pipelines import contamination

    table = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if c not in CONTAMINATION_COLUMNS])
    del rows
    for col, values in contamination.columns(images, table["duplicate_of"].notna().tolist()).items():
        table[col] = values
    table = table[list(TABLE_COLUMNS)]
    for col in ("duplicate_of", "near_duplicate_of"):
        table[col] = table[col].astype("Int64")
    shape = [len(images), *images[0].shape]
    content_hash = _sha256("\n".join(table["sha256"]).encode("ascii"))
    n_dup = int(table["duplicate_of"].notna().sum())
    n_near = int(table["near_duplicate_of"].notna().sum())

    table_bytes = table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    quarantine_bytes = _json_bytes(quarantine)
    # Refuse up front when the new files cannot fit beside the old ones (each is written
    # next to its predecessor, then renamed): a full disk leaves the previous ingestion
    # complete and untouched instead of half replaced.
    need = sum(im.nbytes for im in images) + len(table_bytes) + len(quarantine_bytes) + (1 << 16)
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise IngestError(
            f"scenario {scenario.name}: {out_dir} needs about {need:,} bytes for the new ingestion but its device has "
            f"{free:,} free (No space left on device); the previous outputs are untouched. Free space or move the data root"
        )
    # Mark the step incomplete before touching anything.
    out["manifest"].unlink(missing_ok=True)
    write_images_npz(out["images"], images)
    del images
    _atomic_write(out["table"], table_bytes)
    _atomic_write(out["quarantine"], quarantine_bytes)
    manifest = {
        "format": FORMAT,
        "scenario": scenario.name,
        "n_images": shape[0],
        "n_quarantined": len(quarantine),
        "n_duplicates": n_dup,
        "n_near_duplicates": n_near,
        "contamination": {
            "features": len(contamination.FEATURE_NAMES_RGB if scenario.image.channels == 3 else contamination.FEATURE_NAMES_GREY),
            "k": contamination.K,
            "reference_size": min(shape[0], contamination.REFERENCE_SIZE),
            "near_hash_bits": contamination.NEAR_HASH_BITS,
            "near_residual": contamination.NEAR_RESIDUAL,
        },
        "content_hash": content_hash,
        "source": source,
        "image": {"size": scenario.image.size, "channels": scenario.image.channels, "fit": scenario.image.fit},
        "limit": spec.limit,
        "shape": shape,
    }
    _atomic_write(out["manifest"], _json_bytes(manifest))
    return IngestResult(
        scenario=scenario.name, n_images=shape[0], n_quarantined=len(quarantine), n_duplicates=n_dup,
        content_hash=content_hash, quarantine=quarantine, images_path=out["images"], table_path=out["table"],
        quarantine_path=out["quarantine"], manifest_path=out["manifest"], source=source, n_near_duplicates=n_near,
    )


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load_images(path: str | os.PathLike[str]) -> np.ndarray:
    """The uint8 (N, H, W, C) array of an ``images.npz`` written by this step (no pickle)."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[IMAGES_KEY]
