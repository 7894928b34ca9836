"""The plain-PNG fast path (OpenCV) against Pillow's path, file by file.

Every variant is decoded twice, once as ingestion does and once with the fast path
switched off; the two must agree exactly: the same pixels, size, mode and frame count,
or the same quarantine reason and wording. Each variant also states whether it is
expected to take the fast path, so a check that silently fell back to Pillow for
everything would fail here.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipelines import decode
from pipelines.decode import MAX_IMAGE_PIXELS, BadImage, decode_bytes, pillow_limits
from pipelines.scenario import parse_scenario

from .test_ingest import _chunk, bomb_png, encode


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        (n,) = struct.unpack_from(">I", png, pos)
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(kind, body) for kind, body in chunks)


def _insert(png: bytes, kind: bytes, body: bytes, before: bytes = b"IDAT") -> bytes:
    chunks = _chunks(png)
    at = next(i for i, (k, _) in enumerate(chunks) if k == before)
    return _build(chunks[:at] + [(kind, body)] + chunks[at:])


def _with_idat(png: bytes, payloads: list[bytes]) -> bytes:
    head = [c for c in _chunks(png) if c[0] not in (b"IDAT", b"IEND")]
    return _build(head + [(b"IDAT", p) for p in payloads] + [(b"IEND", b"")])


def _idat(png: bytes) -> bytes:
    return b"".join(body for kind, body in _chunks(png) if kind == b"IDAT")


def _flip(data: bytes, at: int, bits: int = 1) -> bytes:
    return data[:at] + bytes([data[at] ^ bits]) + data[at + 1 :]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


RGB = skimage.data.astronaut()[100:148, 180:220].copy()  # 48 x 40
GREY = skimage.data.camera()[200:240, 200:240].copy()
PLAIN_RGB = encode(Image.fromarray(RGB), "PNG")
PLAIN_SQUARE = encode(Image.fromarray(RGB[:32, :32].copy()), "PNG")
PLAIN_GREY = encode(Image.fromarray(GREY), "PNG")
RAW = zlib.decompress(_idat(PLAIN_RGB))

# name -> (file bytes, takes the fast path); DAMAGED: those quarantined, with the reason
VARIANTS: dict[str, tuple[bytes, bool]] = {
    "rgb_resized": (PLAIN_RGB, True),
    "rgb_exact_size": (PLAIN_SQUARE, True),
    "grey": (PLAIN_GREY, True),
    "idat_split_in_three": (_with_idat(PLAIN_RGB, [_idat(PLAIN_RGB)[:50], _idat(PLAIN_RGB)[50:51], _idat(PLAIN_RGB)[51:]]), True),
    "text_software": (_insert(PLAIN_RGB, b"tEXt", b"Software\0scanner 2.1"), True),
    "gamma_and_dpi": (_insert(_insert(PLAIN_RGB, b"gAMA", struct.pack(">I", 45455)), b"pHYs", struct.pack(">IIB", 2835, 2835, 1)), True),
    "text_after_idat": (_insert(PLAIN_RGB, b"tEXt", b"Comment\0late", before=b"IEND"), True),
    "extra_data_after_stream": (_with_idat(PLAIN_RGB, [_idat(PLAIN_RGB) + b"trailing"]), True),
    "more_rows_than_needed": (_with_idat(PLAIN_RGB, [zlib.compress(RAW + b"\0" * 121)]), True),
    # Pillow's path: what OpenCV would read differently, or a refusal to word.
    "exif_rotated": (encode(Image.fromarray(RGB), "PNG", exif=_exif_orientation(6)), False),
    "text_raw_profile_exif": (_insert(PLAIN_RGB, b"tEXt", b"Raw profile type exif\0\nexif\n    40\n" + _exif_orientation(8).hex().encode() + b"\n"), False),
    "xmp_orientation": (_insert(PLAIN_RGB, b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta tiff:Orientation=\"3\"/>"), False),
    "transparency": (encode(Image.fromarray(RGB), "PNG", transparency=tuple(int(v) for v in RGB[0, 0])), False),
    "palette": (encode(Image.fromarray(RGB).convert("P"), "PNG"), False),
    "rgba": (encode(Image.fromarray(RGB).convert("RGBA"), "PNG"), False),
    "grey_16bit": (encode(Image.fromarray(GREY.astype(np.uint16) * 257), "PNG"), False),
    "animated": (encode(Image.fromarray(RGB), "PNG", save_all=True, append_images=[Image.fromarray(RGB[::-1].copy())]), False),
    "gamma_wrong_length": (_insert(PLAIN_RGB, b"gAMA", b"\0\0"), False),
    "text_bad_checksum": (_flip(_insert(PLAIN_RGB, b"tEXt", b"Software\0x"), 33 + 8 + 2), False),  # a byte of its keyword
    "truncated": (PLAIN_RGB[: len(PLAIN_RGB) // 2], False),
    "no_iend": (PLAIN_RGB[:-12], False),
    "idats_around_text": (_build([_chunks(PLAIN_RGB)[0], (b"IDAT", _idat(PLAIN_RGB)[:40]), (b"tEXt", b"a\0b"), (b"IDAT", _idat(PLAIN_RGB)[40:]), (b"IEND", b"")]), False),
    "too_small": (encode(Image.fromarray(RGB[:4, :4].copy()), "PNG"), False),
    "bomb": (bomb_png(), False),
    # Plain on the outside, damaged inside: OpenCV refuses, Pillow words the reason.
    "stream_cut_short": (_with_idat(PLAIN_RGB, [_idat(PLAIN_RGB)[:-30]]), True),
    "rows_missing": (_with_idat(PLAIN_RGB, [zlib.compress(RAW[:-60])]), True),
    "bad_filter_byte": (_with_idat(PLAIN_RGB, [zlib.compress(bytes([9]) + RAW[1:])]), True),
    "flipped_bit": (_with_idat(PLAIN_RGB, [_flip(_idat(PLAIN_RGB), 30, 0x40)]), True),
}


DAMAGED = {
    "gamma_wrong_length": "truncated", "text_bad_checksum": "decode_error", "truncated": "truncated",
    "idats_around_text": "truncated", "too_small": "too_small", "bomb": "decompression_bomb",
    "stream_cut_short": "truncated", "rows_missing": "truncated", "bad_filter_byte": "decode_error", "flipped_bit": "truncated",
}


def _outcome(data: bytes, scenario):
    with pillow_limits(MAX_IMAGE_PIXELS):
        try:
            d = decode_bytes(data, scenario, MAX_IMAGE_PIXELS)
        except BadImage as bad:
            return ("bad", bad.reason, bad.detail)
    return ("ok", d.pixels.shape, d.pixels.tobytes(), d.orig_width, d.orig_height, d.orig_mode, d.n_frames)


@pytest.mark.parametrize("fit", ["center_crop", "pad"])
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fast_path_decodes_like_pillow(name, channels, fit, monkeypatch):
    data, plain = VARIANTS[name]
    scenario = parse_scenario({"name": "png", "data": {"source": "folder"}, "image": {"size": 32, "channels": channels, "fit": fit}})
    assert (decode._plain_png(data, MAX_IMAGE_PIXELS) is not None) == plain
    fast = _outcome(data, scenario)
    assert fast[:2] == ("bad", DAMAGED[name]) if name in DAMAGED else fast[0] == "ok"
    monkeypatch.setattr(decode, "_plain_png", lambda data, max_pixels: None)
    assert _outcome(data, scenario) == fast


def test_fast_path_is_what_decodes_plain_files(monkeypatch):
    """A plain file's pixels come from OpenCV (not a Pillow fallback), and a file OpenCV
    refuses still gets Pillow's quarantine reason."""
    scenario = parse_scenario({"name": "png", "data": {"source": "folder"}, "image": {"size": 32, "channels": 3}})
    assert decode._decode_plain_png(PLAIN_RGB, scenario, 40, 48, "RGB") is not None
    assert decode._decode_plain_png(VARIANTS["stream_cut_short"][0], scenario, 40, 48, "RGB") is None
    assert _outcome(VARIANTS["stream_cut_short"][0], scenario)[:2] == ("bad", "truncated")

    def pillow_refused(*args, **kwargs):
        raise AssertionError("Pillow was asked to open a plain PNG")

    monkeypatch.setattr(Image, "open", pillow_refused)
    assert _outcome(PLAIN_RGB, scenario)[0] == "ok"
