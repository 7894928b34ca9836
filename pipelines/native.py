"""The per-image kernels of ingestion, compiled from ``pipelines/_native.c``.

    from pipelines import native
    grey, features = native.features(block)      # uint8 (B, H, W, C) -> float64 grey, features
    hashes = native.phash(grey)                   # -> uint64 (B,)
    sums = native.moments(block)                  # -> int64 (B, 5)
    dk, local = native.knn(d2, k, ref_values)     # k-nearest distances, neighbour medians
    pixels = native.png_plain(data, start, stop, h, w, c)   # a plain PNG's IDAT run -> (h, w, c) or None
    res = native.pair_residuals(images, a, b)     # near-duplicate residuals of image pairs

What every image costs in the decode workers (decoding a plain PNG, the contamination
features, the perceptual hash, the pixel sums), the k-nearest-neighbour selection of the
outlier scores and the near-duplicate comparisons cost 1.7-3 times less in C than as
NumPy array expressions (which pass over a 32 x 32 image dozens of times) or through
libpng: docs/BENCHMARKS.md, "1.0x a bare PIL loop: the per-image work in C". The
definitions are those of :mod:`pipelines.contamination` and
:func:`pipelines.decode.image_stats_batch`; every value is a function of one image (or
one row of distances) alone, in a fixed order of operations, so it does not depend on
the batch an image arrives in. ``tests/test_native.py`` checks each kernel against a
plain NumPy reading of the same definitions.

The module is built by ``pip install -e .`` (setuptools, from ``pyproject.toml``);
these wrappers check dtypes and shapes and own the output arrays.
"""

from __future__ import annotations

import numpy as np

try:
    from pipelines import _native
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        f"pipelines._native (the compiled kernels of pipelines/_native.c) is not built ({e}); "
        "run `pip install -e .` in the project folder, which compiles it (it needs a C compiler and the Python headers, "
        "e.g. Debian's gcc and python3-dev)"
    ) from None

N_FEATURES_GREY = 30
N_FEATURES_RGB = 40
BAND_COLUMNS = slice(11, 16)
"""The columns :func:`features` leaves for the caller (the band spectrum, from an FFT)."""


def _images(block: np.ndarray, min_side: int = 1) -> np.ndarray:
    """``block`` as a C-contiguous uint8 ``(B, H, W, 1 or 3)`` array, or ValueError."""
    if block.ndim != 4 or block.shape[-1] not in (1, 3) or block.dtype != np.uint8:
        raise ValueError(f"need uint8 (B, H, W, 1 or 3) images, got {block.dtype} {block.shape}")
    if min(block.shape[1:3]) < min_side:
        raise ValueError(f"need images of at least {min_side} x {min_side} pixels, got {block.shape[1]} x {block.shape[2]}")
    return np.ascontiguousarray(block)


def features(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grey levels in [0, 1] (float64 ``(B, H, W)``, ITU-R 601 luma) and the
    contamination features (float64 ``(B, D)``) of a uint8 ``(B, H, W, C)`` block; the
    :data:`BAND_COLUMNS` are left at 0 for the caller."""
    block = _images(block, min_side=3)
    b, h, w, c = block.shape
    grey = np.empty((b, h, w), np.float64)
    out = np.zeros((b, N_FEATURES_RGB if c == 3 else N_FEATURES_GREY), np.float64)
    _native.features(block, b, h, w, c, grey, out)
    return grey, out


def bands(spectrum: np.ndarray, band: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """Write the log share of spectral power per band into ``out[:, BAND_COLUMNS]``:
    ``spectrum`` complex128 ``(B, ...)`` (one image's frequencies per row), ``band`` int32
    (the band 0-4 of each frequency, 5 for none) and ``weight`` float64 (how many
    frequencies it stands for) of the same trailing shape; each band's
    ``sum(weight * |z|**2) + 1e-8`` over the five bands' total."""
    spectrum = np.ascontiguousarray(spectrum, np.complex128)
    b, f = len(spectrum), int(np.prod(spectrum.shape[1:]))
    band, weight = np.ascontiguousarray(band, np.int32).reshape(-1), np.ascontiguousarray(weight, np.float64).reshape(-1)
    if band.shape != (f,) or weight.shape != (f,) or out.shape[0] != b or not out.flags.c_contiguous or out.dtype != np.float64:
        raise ValueError(f"bands: spectrum {spectrum.shape}, band {band.shape}, weight {weight.shape}, out {out.dtype} {out.shape} do not fit")
    _native.bands(spectrum, b, f, band, weight, out, out.shape[1])


def grey(block: np.ndarray) -> np.ndarray:
    """The grey levels in [0, 1] of a uint8 ``(B, H, W, C)`` block (C = 1 or 3), float64
    ``(B, H, W)``: the same values :func:`features` returns."""
    block = _images(block)
    b, h, w, c = block.shape
    out = np.empty((b, h, w), np.float64)
    _native.grey(block, b, h * w, c, out)
    return out


def phash(grey: np.ndarray, dh: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """64-bit DCT hashes of float64 ``(B, H, W)`` grey images, with the first 8 rows of
    the DCT-II matrices ``dh`` ``(8, H)`` and ``dw`` ``(8, W)`` -> uint64 ``(B,)``."""
    grey = np.ascontiguousarray(grey, np.float64)
    b, h, w = grey.shape
    dh, dw = np.ascontiguousarray(dh, np.float64), np.ascontiguousarray(dw, np.float64)
    if dh.shape != (8, h) or dw.shape != (8, w):
        raise ValueError(f"DCT matrices {dh.shape} and {dw.shape} do not fit {h} x {w} images")
    out = np.empty(b, np.uint64)
    _native.phash(grey, b, h, w, dh, dw, out)
    return out


def moments(block: np.ndarray) -> np.ndarray:
    """Per image of a uint8 ``(B, H, W, C)`` block: the sum of its values, of their
    squares, of their products with the left-right mirror image, its minimum and its
    maximum -> int64 ``(B, 5)`` (exact integers)."""
    if block.ndim != 4 or block.dtype != np.uint8:
        raise ValueError(f"need uint8 (B, H, W, C) images, got {block.dtype} {block.shape}")
    block = np.ascontiguousarray(block)
    b, h, w, c = block.shape
    out = np.empty((b, 5), np.int64)
    _native.moments(block, b, h, w, c, out)
    return out


def pair_residuals(images: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each pair ``(images[a[p]], images[b[p]])`` of uint8 ``(K, H, W, C)`` images
    (C = 1 or 3): the RMS residual (grey levels in [0, 1], ITU-R 601 luma) of the best
    linear map from one image to the other, in the worse of the two directions (each
    image centred on its mean; slope 0 when the other image is flat) -> float64 ``(P,)``."""
    images = _images(images)
    a, b = np.ascontiguousarray(a, np.int64).reshape(-1), np.ascontiguousarray(b, np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"pair_residuals: {len(a)} first and {len(b)} second images")
    k, h, w, c = images.shape
    out = np.empty(len(a), np.float64)
    _native.pair_residuals(images, k, h * w, c, a, b, len(a), out)
    return out


def png_plain(data: bytes, start: int, stop: int, h: int, w: int, channels: int) -> np.ndarray | None:
    """The pixels (uint8 ``(h, w, channels)``, channels 1 or 3 at 8 bits) of a PNG whose
    IDAT chunks are ``data[start:stop]``: each chunk's checksum checked, their payloads
    inflated as one zlib stream that must end with the last chunk and hold exactly
    ``h`` filtered rows, then unfiltered. None for anything else (a damaged or short
    stream, extra rows or data after the stream, an unknown filter type), for the
    caller's other decoders to read or word."""
    out = np.empty((h, w, channels), np.uint8)
    return out if _native.png_plain(data, start, stop, h, w, channels, out) else None


def knn(d2: np.ndarray, k: int, ref_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per row of squared distances ``d2`` ``(R, M)``: the mean of the square roots of
    its ``k`` smallest entries (ties: the lower column first) and, given ``ref_values``
    (one per column), the median of those values over the same ``k`` columns."""
    d2 = np.ascontiguousarray(d2, np.float64)
    return _knn(d2, k, ref_values)


def knn_gram(gram: np.ndarray, q2: np.ndarray, r2: np.ndarray, own: np.ndarray, k: int, ref_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`knn` of the squared distances ``max(q2[:, None] + r2[None, :] - 2 * gram, 0)``
    (the same arithmetic, formed a row at a time), where column ``own[r]`` (when >= 0) is
    row ``r`` itself and is never its neighbour."""
    gram = np.ascontiguousarray(gram, np.float64)
    rows, m = gram.shape
    q2, r2, own = (np.ascontiguousarray(a, t) for a, t in ((q2, np.float64), (r2, np.float64), (own, np.int64)))
    if q2.shape != (rows,) or r2.shape != (m,) or own.shape != (rows,):
        raise ValueError(f"knn_gram: q2 {q2.shape}, r2 {r2.shape}, own {own.shape} do not fit a Gram matrix of {gram.shape}")
    return _knn(gram, k, ref_values, q2, r2, own)


def _knn(rows_in: np.ndarray, k: int, ref_values: np.ndarray | None, *gram: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    rows, m = rows_in.shape
    dk = np.empty(rows, np.float64)
    local = None
    if ref_values is not None:
        ref_values = np.ascontiguousarray(ref_values, np.float64)
        if ref_values.shape != (m,):
            raise ValueError(f"ref_values of shape {ref_values.shape} for {m} columns")
        local = np.empty(rows, np.float64)
    _native.knn(rows_in, rows, m, int(k), ref_values, dk, local, *gram)
    return dk, local
