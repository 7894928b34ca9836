"""Decoding one image: the bytes of a file or one array row -> uint8 ``(size, size, C)``.

    from pipelines.decode import BadImage, decode_bytes, pillow_limits
    with pillow_limits(MAX_IMAGE_PIXELS):
        decoded = decode_bytes(data, scenario, MAX_IMAGE_PIXELS)   # or raises BadImage

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

Decoders: Pillow for every format, except *plain* PNGs (8-bit grey or RGB, no palette,
transparency, EXIF/XMP, animation or interlacing; every chunk whole and checked; see
:func:`_plain_png`): their IDAT run is inflated and unfiltered by
:func:`pipelines.native.png_plain` (C, zlib) when it is one clean stream of exactly the
image's rows, else by OpenCV's libpng; the same pixels either way (libpng takes about
half of Pillow's time for small files, the direct path about half of libpng's). Anything else, or a file libpng refuses, goes through
Pillow, so refusals are always worded the same way. Pillow decodes a PNG before reading
its EXIF, so a damaged compressed stream is quarantined, never kept half-decoded.

An image that cannot be used raises :class:`BadImage` with a quarantine ``reason``:
``not_an_image``, ``truncated``, ``decode_error``, ``too_small`` (a side < :data:`MIN_SIDE`
px), ``decompression_bomb`` or ``unsupported_mode``.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipelines import native

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.scenario import Scenario

MIN_SIDE = 8
"""Images with a side shorter than this (after EXIF orientation) are quarantined."""
MAX_IMAGE_PIXELS = 64_000_000
"""Decompression-bomb bound (pixels of the first frame, e.g. 8000x8000). Pillow's own
check uses the same bound while :func:`pillow_limits` is active (restored afterwards)."""
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "ICO")
"""Pillow formats that are decoded; anything else is ``not_an_image``. Formats that run
external programs (EPS via Ghostscript) or are guessed from weak signatures (TGA) are
deliberately left out."""


class BadImage(Exception):
    """An image that is quarantined: ``reason`` (one word) and ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # crosses process boundaries (parallel decode) intact
        return BadImage, (self.reason, self.detail)


@dataclass
class Decoded:
    pixels: np.ndarray  # uint8 (size, size, C)
    orig_width: int
    orig_height: int
    orig_mode: str
    n_frames: int


@contextmanager
def pillow_limits(max_pixels: int):
    """Pillow's decompression-bomb bound set to ``max_pixels`` (its warning made an
    error) and truncated images refused, restored on exit."""
    from PIL import Image, ImageFile

    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


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
            raise BadImage("unsupported_mode", f"mode {mode} with shape {a.shape}")
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
        raise BadImage("unsupported_mode", f"Pillow mode {mode!r} cannot be converted to {target}")
    try:
        if target == "L" and mode not in ("1", "P", "RGB"):
            return im.convert("RGB").convert("L")
        return im.convert(target)
    except (ValueError, OSError) as e:
        raise BadImage("unsupported_mode", f"mode {mode!r} -> {target}: {e}") from None


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


def _normalize(im, scenario: Scenario, orig_mode: str, n_frames: int, max_pixels: int) -> Decoded:
    """The one per-image path: orientation, size checks, mode, square fit, resize."""
    from PIL import ImageOps

    w, h = im.size
    if getattr(im, "format", None) not in (None, "JPEG"):
        # A PNG keeps its EXIF after the pixels, so reading the orientation decodes it:
        # decode first, so that a damaged stream is quarantined, not swallowed below
        # with the EXIF errors (and the half-decoded image kept). JPEG waits for draft().
        try:
            im.load()
        except Exception as e:  # noqa: BLE001 - every decoder failure is a quarantine reason
            raise classify_error(e) from None
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # corrupt EXIF: ignore orientation rather than lose the image
        orientation = 1
    if orientation in _ORIENT_SWAP:
        w, h = h, w
    if w * h > max_pixels:
        raise BadImage("decompression_bomb", f"{w}x{h} = {w * h} pixels exceeds the bound of {max_pixels}")
    if min(w, h) < MIN_SIDE:
        raise BadImage("too_small", f"{w}x{h}; sides must be at least {MIN_SIDE} px")
    size = scenario.image.size
    if getattr(im, "format", None) == "JPEG" and min(w, h) >= 4 * size:
        im.draft(None, (2 * size, 2 * size))  # DCT-domain downscale: much faster decode
    try:
        oriented = ImageOps.exif_transpose(im) if orientation != 1 else im
        oriented.load()
    except Exception as e:  # noqa: BLE001 - every decoder failure is a quarantine reason
        raise classify_error(e) from None
    return _finish(oriented, scenario, w, h, orig_mode, n_frames)


def _finish(im, scenario: Scenario, w: int, h: int, orig_mode: str, n_frames: int) -> Decoded:
    """An upright Pillow image -> the scenario's mode, square fit and size."""
    size = scenario.image.size
    pix = _to_8bit(im, scenario.image.channels)
    pix = _square(pix, size, scenario.image.fit)
    arr = np.asarray(pix, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape != (size, size, scenario.image.channels):
        raise BadImage("unsupported_mode", f"normalized to shape {arr.shape}, expected {(size, size, scenario.image.channels)}")
    return Decoded(np.ascontiguousarray(arr), w, h, orig_mode, n_frames)


def classify_error(e: BaseException) -> BadImage:
    """The quarantine reason of an exception raised while decoding."""
    from PIL import Image, UnidentifiedImageError

    # No object reprs ("<_io.BytesIO object at 0x...>"): details must be identical on reruns.
    msg = _ADDR_RE.sub("<file>", f"{type(e).__name__}: {e}")
    if isinstance(e, BadImage):
        return e
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImage("decompression_bomb", msg)
    if isinstance(e, UnidentifiedImageError):
        return BadImage("not_an_image", f"{msg} (decoded formats: {', '.join(_formats())})")
    low = str(e).lower()
    if isinstance(e, EOFError) or "truncat" in low or "broken data stream" in low or "premature end" in low:
        return BadImage("truncated", msg)
    return BadImage("decode_error", msg)


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {0: "L", 2: "RGB"}  # colour type -> Pillow mode, at 8 bits per sample
_PNG_FIXED = {b"gAMA": 4, b"sRGB": 1, b"pHYs": 9, b"cHRM": 32, b"tIME": 7}
"""Ancillary chunks a plain PNG may carry, with the only length Pillow reads without
complaint; none of them changes pixels or orientation."""
_PNG_TEXT_MAX = 1 << 16


def _plain_png(data: bytes, max_pixels: int) -> tuple[int, int, str, int, int] | None:
    """``(width, height, mode, idat_start, idat_stop)`` when ``data`` is a *plain* PNG,
    else None; ``data[idat_start:idat_stop]`` is its run of IDAT chunks.

    Plain: 8-bit grey or RGB, not interlaced, no palette, transparency, EXIF/XMP or
    animation; every chunk whole, its checksum right (IDAT's are checked by the
    decoder), IDAT chunks in one run, IEND present; and within the size bounds. Such a
    file decodes to the same pixels and the same table values with OpenCV's libpng as
    with Pillow, at half the cost for small files; anything else, or any doubt,
    takes Pillow's path, which also words every refusal.
    """
    if len(data) < 45 or not data.startswith(_PNG_SIGNATURE):
        return None
    length, kind = struct.unpack_from(">I4s", data, 8)
    if length != 13 or kind != b"IHDR":
        return None
    w, h, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or colour not in _PNG_MODES or compression or filtering or interlace:
        return None
    if w * h > max_pixels or min(w, h) < MIN_SIDE:
        return None
    pos, end, idat = 8, len(data), 0  # idat: 0 before the IDAT run, 1 in it, 2 after it
    idat_start = idat_stop = 0
    while True:
        if pos + 12 > end:
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 8 + length
        if stop + 4 > end:
            return None
        if kind == b"IDAT":
            if idat == 2:
                return None
            if idat == 0:
                idat_start = pos
            idat, idat_stop = 1, stop + 4
        else:
            idat = 2 if idat else 0
            if kind == b"tEXt":
                if length > _PNG_TEXT_MAX:
                    return None
                keyword = data[pos + 8 : stop].partition(b"\0")[0].lower()
                if b"exif" in keyword or b"xmp" in keyword:
                    return None  # Pillow reads orientation from such text
            elif kind == b"IHDR":
                if pos != 8:
                    return None
            elif kind == b"IEND":
                if length:
                    return None
            elif _PNG_FIXED.get(kind) != length:
                return None
            if zlib.crc32(memoryview(data)[pos + 4 : stop]) != struct.unpack_from(">I", data, stop)[0]:
                return None
            if kind == b"IEND":
                return (w, h, _PNG_MODES[colour], idat_start, idat_stop) if idat else None
        pos = stop + 4


def _decode_plain_png(data: bytes, scenario: Scenario, w: int, h: int, mode: str, idat_start: int | None = None, idat_stop: int | None = None) -> Decoded | None:
    """A plain PNG (:func:`_plain_png`) decoded: its IDAT run inflated and unfiltered by
    :func:`pipelines.native.png_plain` where that run is one clean zlib stream of
    exactly the image's rows, else by OpenCV's libpng (the same pixels: zlib's inflate
    and the PNG filters leave no choice); None where OpenCV refuses it too (a damaged
    compressed stream), so that Pillow's path words the refusal."""
    channels = len(mode)
    arr = None
    if idat_start is not None and idat_stop is not None:
        arr = native.png_plain(data, idat_start, idat_stop, h, w, channels)
    if arr is None:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        want = (h, w, 3) if mode == "RGB" else (h, w)
        if arr is None or arr.dtype != np.uint8 or arr.shape != want:
            return None
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if mode == "RGB" else arr[:, :, None]
    size = scenario.image.size
    if (w, h) == (size, size) and scenario.image.channels == channels:
        return Decoded(arr, w, h, mode, 1)
    from PIL import Image

    return _finish(Image.fromarray(arr if channels == 3 else arr[:, :, 0], mode), scenario, w, h, mode, 1)


def decode_bytes(data: bytes, scenario: Scenario, max_pixels: int) -> Decoded:
    """Decode the bytes of one image file (first frame) and normalize it for
    ``scenario``; raises :class:`BadImage` for anything that cannot be used."""
    from PIL import Image, UnidentifiedImageError

    plain = _plain_png(data, max_pixels)
    if plain is not None:
        decoded = _decode_plain_png(data, scenario, *plain)
        if decoded is not None:
            return decoded
    try:
        with Image.open(io.BytesIO(data), formats=_formats()) as im:
            im.seek(0)
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            return _normalize(im, scenario, im.mode, n_frames, max_pixels)
    except BadImage:
        raise
    except UnidentifiedImageError as e:
        fmt = _signature(data)
        if fmt is None:
            raise classify_error(e) from None
        # An image file Pillow cannot open (e.g. a TIFF with 5 samples per pixel or
        # float64 samples, a header cut short) is not "not an image": say what it is.
        raise BadImage(
            "decode_error",
            f"the file starts like a {fmt} file, but Pillow cannot read this variant (an unusual channel count or "
            f"sample format, or a damaged header); convert it to an 8-bit grey or RGB PNG",
        ) from None
    except Exception as e:  # noqa: BLE001
        raise classify_error(e) from None


def decode_array(row: np.ndarray, scenario: Scenario, max_pixels: int) -> Decoded:
    """Normalize one uint8 array row: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."""
    from PIL import Image

    if row.ndim == 3 and row.shape[2] == 1:
        row = row[:, :, 0]
    modes = {2: "L"} if row.ndim == 2 else {3: "RGB", 4: "RGBA"}
    key = 2 if row.ndim == 2 else row.shape[2]
    if key not in modes:
        raise BadImage("unsupported_mode", f"array row of shape {row.shape}: need (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    im = Image.fromarray(np.ascontiguousarray(row), modes[key])
    return _normalize(im, scenario, modes[key], 1, max_pixels)


def image_stats_batch(block: np.ndarray) -> list[dict[str, float]]:
    """:func:`image_stats` of every image of a uint8 ``(B, H, W, C)`` block.

    Mean, standard deviation and symmetry come from exact integer sums
    (:func:`pipelines.native.moments`, with the minimum and maximum):
    with ``n`` values per image, ``S1 = sum v``, ``S2 = sum v**2`` and ``M = sum v * mirror(v)``,
    ``std = sqrt(n*S2 - S1**2) / (255 n)`` and ``symmetry = (n*M - S1**2) / (n*S2 - S1**2)``
    (the mirror is a permutation of the image, so both have the same variance). No
    floating-point sum whose rounding depends on the order, and one pass per sum."""
    b = len(block)
    if b == 0:
        return []
    n = block[0].size
    sums = native.moments(block)
    s1, s2, s12 = sums[:, 0], sums[:, 1], sums[:, 2]
    var_num = n * s2 - s1 * s1  # n**2 * variance, in (0..255)**2 units: an exact integer
    cross_num = n * s12 - s1 * s1
    mean = (s1 / (n * 255.0)).tolist()
    std = (np.sqrt(var_num.astype(np.float64)) / (n * 255.0)).tolist()
    lo, hi = sums[:, 3].tolist(), sums[:, 4].tolist()
    var_num, cross_num = var_num.tolist(), cross_num.tolist()  # Python numbers: no numpy scalar in the loop
    out = []
    for i in range(b):
        sym = cross_num[i] / var_num[i] if var_num[i] > 0 else 1.0
        out.append({
            "mean": round(mean[i], 6),
            "std": round(std[i], 6),
            "min": round(lo[i] / 255.0, 6),
            "max": round(hi[i] / 255.0, 6),
            "symmetry": round(min(1.0, max(-1.0, sym)), 6),
        })
    return out


def image_stats(pixels: np.ndarray) -> dict[str, float]:
    """mean/std/min/max of uint8 ``(H, W, C)`` pixels scaled to [0, 1], and left-right
    ``symmetry`` (the Pearson correlation of the image with its mirror; 1.0 without
    variance): :func:`image_stats_batch` of one image, so both give the same values."""
    return image_stats_batch(np.asarray(pixels, np.uint8)[None])[0]
