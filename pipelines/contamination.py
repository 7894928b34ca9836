"""Contamination signals for the per-image table: how unlike the rest of its scenario an
image is, and which earlier image it is a perceptual copy of.

    from pipelines import contamination
    cols = contamination.columns(images, exact_duplicate)   # {"phash", "near_duplicate_of", "outlier_score"}

The columns are computed once per scenario, over the scenario's own normalized images
(uint8 ``(H, W, C)``, all the same shape): :func:`columns` in memory, or ingestion's
passes over spilled columns (:func:`near_duplicate_records`, :func:`outlier_model` and
:func:`raw_scores`), which give the same values with memory that does not grow with N.
Validation expectations block on, or set aside, what the columns say. NumPy only: no torch, no model weights, nothing to download.

``outlier_score`` — a robust z-score of how far an image lies from its scenario's own
images, on one scale for every scenario: ``4.0`` means the same thing for faces, digits
and textures, so one bound needs no tuning per contaminant.

1. Every image becomes :data:`N_FEATURES_GREY` (grey) or :data:`N_FEATURES_RGB` (RGB)
   numbers that describe what kind of picture it is, not where things sit in it
   (see :func:`image_features`): grey-level quantiles, contrast and gradient energy,
   the share of spectral power per frequency band, the gradient orientation mix, a
   local binary pattern histogram, and for RGB channel means/spreads and opponent
   colours. Translation-free features keep random crops of one texture close together.
2. The features are standardized with the median and MAD of a reference sample:
   :data:`REFERENCE_SIZE` images drawn with a fixed seed (every image when the scenario
   is smaller), so the cost stays linear in N and reruns give the same scores.
3. Reference images whose k-NN distance (mean distance to their :data:`K` nearest
   reference images) has a robust z above :data:`OUTLIER_THRESHOLD` are dropped from
   the reference once, so a group of contaminants stops vouching for itself.
4. Every image's k-NN distance to the trimmed reference is divided by
   ``max(global median, median of its neighbours' own k-NN distances)``: a legitimately
   spread-out mode (brick crops among grass and gravel) is judged by its own spread,
   while an image whose neighbours are tight is judged by the scenario's typical one.
5. The result is expressed as a robust z-score: ``(s - median) / (1.4826 * MAD)`` over
   the trimmed reference. Scenarios with fewer than :data:`MIN_IMAGES` images get 0.

``phash`` — a 64-bit DCT perceptual hash (16 hex digits): the 8x8 lowest frequencies of
the grey image's 2-D DCT-II, one bit per coefficient above their median. Re-encoding,
brightness/contrast changes, slight blur or noise move it by a few bits; crops, shifts
and flips do not keep it (they are not caught as near-duplicates).

``near_duplicate_of`` — the index of the first earlier row that is a perceptual copy of
this one: its ``phash`` differs in at most :data:`NEAR_HASH_BITS` bits **and** the two
grey images agree up to a linear brightness/contrast map with an RMS residual of at most
:data:`NEAR_RESIDUAL` (on the [0, 1] scale). The second test keeps different 8x8 digits
of one class apart, whose hashes often collide. Pixel-identical copies are already in
``duplicate_of`` and are not repeated here (their column is empty).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from pipelines import native

K = 50
"""Neighbours in the k-NN distance. A tight group of more images than this (2.5 % of a
full reference) counts as a mode of the scenario; smaller groups far from the rest are
flagged, which catches a batch of up to K images of another kind (30 grey textures among
300 colour histology patches are all found at K = 50, half of them missed at K = 20)."""
REFERENCE_SIZE = 2000
"""At most this many images form the reference that every image is compared with:
the cost is O(N * REFERENCE_SIZE), linear in the number of images."""
OUTLIER_THRESHOLD = 4.0
"""The documented bound for ``outlier_score`` (robust z); also the trimming bound of
step 3. Measured in docs/BENCHMARKS.md ("Validation: contamination")."""
MIN_IMAGES = 5
"""Scenarios with fewer images get ``outlier_score`` 0: there is nothing to compare with."""
NEAR_HASH_BITS = 4
"""Hash candidates for ``near_duplicate_of``: at most this many differing ``phash`` bits."""
NEAR_RESIDUAL = 0.025
"""Confirmed near-duplicate: RMS residual (grey, [0, 1]) of the best linear map from one
image to the other, in both directions, at most this."""
MAX_BUCKET = 256
"""A hash block value keeps at most this many rows (the earliest): where most images
share a hash (blank frames), later ones are compared with the first 256, so the cost
per image stays bounded."""
_HASH_BLOCKS = ((0, 21), (21, 42), (42, 64))
"""Multi-index hashing: two hashes within NEAR_HASH_BITS (= 4) bits differ in at most one
bit in at least one of these 3 bit ranges (pigeonhole: 2 + 2 + 2 > 4), so each row looks
up its own value of each range and the values one bit away (65 look-ups among ~2 million
possible values) and only the rows found there are compared."""
LBP_STEP = 1
"""A neighbour sets its local-binary-pattern bit when at least this many grey levels brighter."""
_QUANTILES = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98)
"""``LBP_STEP`` and ``_QUANTILES`` name what the C kernel computes (``pipelines/_native.c``
holds the same values; ``tests/test_native.py`` checks the features against them)."""
_BANDS = ((0.0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1 / 4), (1 / 4, 1 / 2), (1 / 2, 1.0))
_CHUNK_PIXELS = 1 << 18
"""Images per feature chunk: about this many pixels (small arrays stay in the CPU cache)."""
_PROBE_CHUNK = 1 << 16
"""Rows per batch of hash look-ups in :func:`_close_pairs`."""
_DIST_CHUNK = 1024
"""Rows standardized at a time: 1,024 x 40 float64."""
_GRAM_ROWS = 128
"""Rows per block of dot products with the reference: 128 x 2,000 float64 = 2 MB."""
FEATURE_NAMES_GREY = (
    *(f"q{int(q * 100):02d}" for q in _QUANTILES),
    "log_std", "log_grad_x", "log_grad_y", "log_laplacian",
    *(f"log_band_{i}" for i in range(len(_BANDS))),
    *(f"orient_{a}" for a in (0, 45, 90, 135)),
    *(f"lbp_{i}" for i in range(10)),
)
FEATURE_NAMES_RGB = (
    *FEATURE_NAMES_GREY,
    "mean_r", "mean_g", "mean_b", "log_std_r", "log_std_g", "log_std_b",
    "mean_rg", "mean_yb", "log_std_rg", "log_std_yb",
)
N_FEATURES_GREY = len(FEATURE_NAMES_GREY)
N_FEATURES_RGB = len(FEATURE_NAMES_RGB)
assert (N_FEATURES_GREY, N_FEATURES_RGB) == (native.N_FEATURES_GREY, native.N_FEATURES_RGB), "pipelines/_native.c's columns"


# ----------------------------------------------------------------------------- features


def _spectrum(g: np.ndarray) -> np.ndarray:
    """The real 2-D FFT of float64 ``(B, H, W)`` images over their last two axes.

    ``scipy.fft`` rather than ``numpy.fft``: numpy's float32 transform of a batch of
    32 x 32 images cost about 19 us per image, scipy's float64 one about 3 (each image
    transformed alone, so the values do not depend on the batch)."""
    from scipy import fft

    return fft.rfft2(g, axes=(1, 2))


@lru_cache(maxsize=8)
def _band_map(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For the ``(h, w // 2 + 1)`` frequencies of a real FFT: the band (:data:`_BANDS`,
    by radius in (lo, hi]; 5 for the DC term, which is in none) and how many frequencies
    each stands for (every column but the first, and the Nyquist one for an even width,
    stands for +f and -f)."""
    r = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    twice = np.full(r.shape, 2.0)
    twice[:, 0] = 1.0
    if w % 2 == 0:
        twice[:, -1] = 1.0
    band = np.searchsorted(np.array([hi for _, hi in _BANDS]), r, side="left")
    band = np.where(r > 0, band, len(_BANDS)).astype(np.int32)
    band.flags.writeable = twice.flags.writeable = False
    return band, twice


def _grey_and_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grey images (float64 ``(B, H, W)`` in [0, 1]) and :func:`image_features` of a
    uint8 ``(B, H, W, C)`` batch."""
    grey, out = native.features(batch)  # checks the dtype and shape
    # The spectrum of the grey image, not of the image minus its mean: the two differ
    # only in the DC term, which is in no band.
    native.bands(_spectrum(grey), *_band_map(*grey.shape[1:]), out)
    return grey, out


def image_features(batch: np.ndarray) -> np.ndarray:
    """Features of a uint8 ``(B, H, W, C)`` batch (C = 1 or 3) -> float64 ``(B, D)``, in
    the order of :data:`FEATURE_NAMES_GREY` / :data:`FEATURE_NAMES_RGB`:

    - ``q02`` .. ``q98``: grey-level quantiles, each the smallest of the 256 levels
      (``rint`` of the luma) whose cumulative share of the pixels reaches q, over 255;
    - ``log_std``, ``log_grad_x``, ``log_grad_y``, ``log_laplacian``: the log (+ 1e-3) of
      the grey image's standard deviation, mean absolute horizontal and vertical
      differences and mean absolute 4-neighbour Laplacian (interior pixels);
    - ``log_band_0`` .. ``log_band_4``: the log share of the spectral power (real FFT of
      the grey image minus its mean) in each radial frequency band of :data:`_BANDS`;
    - ``orient_0`` .. ``orient_135``: the gradient magnitude's share in each 45-degree
      sector of orientations (forward differences; a direction and its opposite are one);
    - ``lbp_0`` .. ``lbp_9``: the local binary pattern histogram (8 neighbours at radius
      1, a neighbour set when at least :data:`LBP_STEP` levels brighter): uniform
      patterns by their number of set bits, every other pattern in the last bin;
    - for RGB, the means and log standard deviations of R, G, B and of the opponent
      channels ``R - G`` and ``B - (R + G) / 2``.

    Everything but the bands comes from :func:`pipelines.native.features` (C, one image at
    a time); each row depends on its own image alone."""
    return _grey_and_features(batch)[1]


def _chunks(n: int, shape: tuple[int, ...]) -> list[slice]:
    """Row ranges of about :data:`_CHUNK_PIXELS` pixels each."""
    per = max(1, _CHUNK_PIXELS // max(1, shape[0] * shape[1]))
    return [slice(start, min(n, start + per)) for start in range(0, n, per)]


def _block(images: Sequence[np.ndarray], part: slice) -> np.ndarray:
    """Images ``part`` as one uint8 ``(B, H, W, C)`` array (a view when already one)."""
    return images[part] if isinstance(images, np.ndarray) else np.stack(images[part])


def describe_images(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`image_features` (float32 ``(N, D)``) and :func:`perceptual_hashes` (uint64
    ``(N,)``) of equal-shape uint8 ``(H, W, C)`` images, computed together in small
    chunks (one grey image each for both)."""
    n = len(images)
    if n == 0:
        return np.zeros((0, N_FEATURES_GREY), np.float32), np.zeros(0, np.uint64)
    shape = images[0].shape
    features = np.empty((n, N_FEATURES_RGB if shape[-1] == 3 else N_FEATURES_GREY), np.float32)
    hashes = np.empty(n, np.uint64)
    dh, dw = _dct_matrix(shape[0]), _dct_matrix(shape[1])
    for part in _chunks(n, shape):
        grey, features[part] = _grey_and_features(_block(images, part))
        hashes[part] = native.phash(grey, dh, dw)
    return features, hashes


def feature_matrix(images: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`image_features` of equal-shape uint8 ``(H, W, C)`` images, computed in
    small chunks -> float32 ``(N, D)``."""
    return describe_images(images)[0]


# ----------------------------------------------------------------------------- outlier score


class FeatureRows:
    """Feature rows kept in a file (float32, ``dim`` per row, row after row) and read by
    rows: the outlier pass needs the reference sample and one chunk of rows at a time,
    so the features of every image need not be in memory together. ``rows[sel]`` for an
    index array reads a consecutive range at once and other rows one by one."""

    def __init__(self, file: Any, n: int, dim: int):
        self.file, self.n, self.dim = file, n, dim
        self.row_bytes = 4 * dim

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: Any) -> np.ndarray:
        rows = np.arange(self.n)[rows] if isinstance(rows, slice) else np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"rows outside 0..{self.n - 1}")
        if len(rows) > 1 and int(rows[-1] - rows[0]) == len(rows) - 1 and bool((np.diff(rows) == 1).all()):
            self._read(int(rows[0]), out)
        else:
            for k, row in enumerate(rows.tolist()):
                self._read(row, out[k : k + 1])
        return out

    def _read(self, row: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        got = 0
        while got < len(view):
            more = os.preadv(self.file.fileno(), [view[got:]], row * self.row_bytes + got)
            if more == 0:
                raise OSError(f"feature file ended at row {row}: {got} of {len(view)} bytes")
            got += more

    def close(self) -> None:
        self.file.close()


def _robust_scale(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(median, scale) with scale = 1.4826 * MAD; where that is 0 (more than half the
    values equal), (P90 - P10) / 2.563, then the standard deviation, then 1."""
    med = np.median(x, axis=axis)
    scale = 1.4826 * np.median(np.abs(x - med), axis=axis)
    p10, p90 = np.percentile(x, [10, 90], axis=axis)
    scale = np.where(scale > 1e-12, scale, (p90 - p10) / 2.5631)
    scale = np.where(scale > 1e-12, scale, x.std(axis=axis))
    return med, np.where(scale > 1e-12, scale, 1.0)


def _knn(f: np.ndarray, centre: np.ndarray, scale: np.ndarray, rows: np.ndarray, ref: np.ndarray, k: int, ref_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """For each of ``rows`` of the features ``f`` standardized by ``(f - centre) / scale``:
    the mean distance to its k nearest reference rows (a row is never its own neighbour)
    and, given ``ref_values`` (one per reference row), the median of those values over the
    same neighbours. Standardized in chunks: memory stays O(chunk * len(ref)) beside ``f``."""
    r = (f[ref] - centre) / scale
    r2 = (r * r).sum(axis=1)
    dk = np.empty(len(rows))
    local = None if ref_values is None else np.empty(len(rows))
    for start in range(0, len(rows), _DIST_CHUNK):
        sel = rows[start : start + _DIST_CHUNK]
        q = (f[sel].astype(np.float64) - centre) / scale
        own = np.minimum(np.searchsorted(ref, sel), len(ref) - 1)  # ref is sorted: where each row sits in it, if it does
        own = np.where(ref[own] == sel, own, -1)
        q2 = (q * q).sum(axis=1)
        # Squared distances max(|q|^2 + |r|^2 - 2 q.r, 0), formed a row at a time in C
        # from Gram blocks of _GRAM_ROWS rows (2 MB: still in the cache when read).
        for a in range(0, len(sel), _GRAM_ROWS):
            b = min(a + _GRAM_ROWS, len(sel))
            dk[start + a : start + b], med = native.knn_gram(q[a:b] @ r.T, q2[a:b], r2, own[a:b], k, ref_values)
            if local is not None:
                local[start + a : start + b] = med
    return dk, local


def reference_rows(n: int, size: int = REFERENCE_SIZE, seed: int = 0) -> np.ndarray:
    """The reference sample: every row when ``n <= size``, else ``size`` rows drawn with a
    fixed seed (sorted): deterministic and spread over the whole scenario."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def outlier_model(features: Any, *, k: int = K, reference_size: int = REFERENCE_SIZE, threshold: float = OUTLIER_THRESHOLD) -> dict[str, Any] | None:
    """Steps 2-4 of the module docstring fitted on the reference rows of ``features``
    (an array or :class:`FeatureRows`): what :func:`raw_scores` needs. None for
    scenarios of fewer than :data:`MIN_IMAGES` rows."""
    n = len(features)
    if n < MIN_IMAGES:
        return None
    ref = reference_rows(n, reference_size)
    centre, scale = _robust_scale(features[ref].astype(np.float64))
    kk = min(k, len(ref) - 1)
    dk, _ = _knn(features, centre, scale, ref, ref, kk)
    c, s = _robust_scale(dk)
    keep = ref[(dk - c) / s <= threshold]
    if len(keep) > kk + 1:  # step 3: contaminants stop vouching for each other
        ref = keep
    kk = min(k, len(ref) - 1)
    dk_ref, _ = _knn(features, centre, scale, ref, ref, kk)
    return {"ref": ref, "centre": centre, "scale": scale, "k": kk, "dk_ref": dk_ref, "typical": float(np.median(dk_ref))}


SCORE_CHUNK = 64 * _DIST_CHUNK
"""Rows per call of :func:`raw_scores` when scoring a whole scenario (at most; a multiple
of the distance chunk, so every block of distances is the same whatever the caller)."""


def raw_scores(features: Any, model: dict[str, Any], start: int, stop: int) -> np.ndarray:
    """Step 4 for rows ``start:stop``: each row's k-NN distance over the local spread,
    float64 (``start`` a multiple of :data:`_DIST_CHUNK`)."""
    dk, local = _knn(features, model["centre"], model["scale"], np.arange(start, stop), model["ref"], model["k"], ref_values=model["dk_ref"])
    denom = np.maximum(local, model["typical"])
    return dk / np.where(denom > 1e-12, denom, 1.0)


def score_scale(model: dict[str, Any], raw_of_reference: np.ndarray) -> tuple[Any, Any]:
    """Step 5: (median, scale) of the trimmed reference's raw scores; the outlier score
    of a row is ``(raw - median) / scale``."""
    return _robust_scale(raw_of_reference)


def outlier_scores(features: np.ndarray, *, k: int = K, reference_size: int = REFERENCE_SIZE, threshold: float = OUTLIER_THRESHOLD) -> np.ndarray:
    """Robust z-score of every row's distance from the scenario (module docstring, steps
    2-5): float64 ``(N,)``, 0 for scenarios of fewer than :data:`MIN_IMAGES` rows."""
    n = len(features)
    f = features if isinstance(features, FeatureRows) else np.asarray(features)
    model = outlier_model(f, k=k, reference_size=reference_size, threshold=threshold)
    if model is None:
        return np.zeros(n)
    score = np.concatenate([raw_scores(f, model, a, min(a + SCORE_CHUNK, n)) for a in range(0, n, SCORE_CHUNK)])
    c, s = score_scale(model, score[model["ref"]])
    return (score - c) / s


# ----------------------------------------------------------------------------- near duplicates


@lru_cache(maxsize=8)
def _dct_matrix(n: int, m: int = 8) -> np.ndarray:
    """The first ``m`` rows of the orthonormal DCT-II matrix of size ``n`` (read-only)."""
    i = np.arange(n)
    mat = np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(m)[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    mat.flags.writeable = False
    return mat


def perceptual_hashes(images: Sequence[np.ndarray]) -> np.ndarray:
    """The 64-bit DCT hash of every image (module docstring) -> uint64 ``(N,)``: the grey
    image of :func:`image_features`, its 8 x 8 lowest DCT-II frequencies, one bit per
    coefficient above their median (:func:`pipelines.native.phash`), the first
    coefficient the highest bit."""
    n = len(images)
    out = np.zeros(n, np.uint64)
    if n == 0:
        return out
    shape = images[0].shape
    dh, dw = _dct_matrix(shape[0]), _dct_matrix(shape[1])
    for part in _chunks(n, shape):
        out[part] = native.phash(native.grey(_block(images, part)), dh, dw)
    return out


def hash_hex(h: int | np.integer) -> str:
    """A hash as 16 lowercase hex digits (the ``phash`` column)."""
    return f"{int(h):016x}"


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)  # pragma: no cover - numpy < 2


def linear_residuals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each pair of uint8 images ``a[k], b[k]`` (``(P, H, W, C)`` each), the RMS
    residual (grey, [0, 1]) of the best linear map ``a ~ s * b + t``, in the worse of the
    two directions: 0 for brightness/contrast edits, small for re-encodings
    (:func:`pipelines.native.pair_residuals`)."""
    p = len(a)
    return native.pair_residuals(np.concatenate([a, b]), np.arange(p), np.arange(p, 2 * p))


_PAIR_BATCH_BYTES = 1 << 24
"""Memory that sets the size of one batch of candidate pairs compared: 32 bytes per pixel
of a pair (its two images' bytes and their grey levels as float64 fit with room), 16 MB:
512 pairs of 32 x 32 images."""


def _bucket_pairs(rows: np.ndarray, rhash: np.ndarray, lo: int, hi: int, flips: Sequence[int]) -> Iterator[np.ndarray]:
    """(i, j) pairs, j < i, among ``rows`` (int64, ascending within each value of the
    hash block ``lo:hi``; ``rhash`` their hashes) whose block values differ by one of
    ``flips`` (0: equal) and whose hashes differ in at most :data:`NEAR_HASH_BITS`
    bits, in chunks. Rows are sorted by block value, and a table over every block value
    (2^21 of them: 12 MB) says where each value's kept rows (the earliest
    :data:`MAX_BUCKET`) start and how many there are, so a look-up is two gathers."""
    key = ((rhash >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)).astype(np.int32)
    order = np.argsort(key, kind="stable")  # equal values keep row order
    skey = key[order]
    starts = np.flatnonzero(np.r_[True, skey[1:] != skey[:-1]])
    rank = np.arange(len(skey)) - np.repeat(starts, np.diff(np.r_[starts, len(skey)]))
    keep = rank < MAX_BUCKET
    del starts, rank
    count_of = np.bincount(skey[keep], minlength=1 << (hi - lo)).astype(np.uint16)
    start_of = np.cumsum(count_of, dtype=np.int32) - count_of
    srow, shash = rows[order[keep]], rhash[order[keep]]
    del order, skey, keep
    for part in range(0, len(rows), _PROBE_CHUNK):  # temporaries: one chunk of rows
        part_key = key[part : part + _PROBE_CHUNK]
        part_rows, part_hash = rows[part : part + _PROBE_CHUNK], rhash[part : part + _PROBE_CHUNK]
        for flip in flips:
            probe = part_key ^ flip
            first, count = start_of[probe], count_of[probe].astype(np.int64)
            if not count.any():
                continue
            offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
            at = np.repeat(first, count) + offsets
            i, hi_, j, hj = np.repeat(part_rows, count), np.repeat(part_hash, count), srow[at], shash[at]
            sel = j < i
            sel[sel] = _popcount(hi_[sel] ^ hj[sel]) <= NEAR_HASH_BITS
            if sel.any():
                yield np.stack([i[sel], j[sel]], axis=1)


def _close_pairs(hashes: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(i, j) pairs, j < i, both ``eligible``, whose hashes differ in at most
    :data:`NEAR_HASH_BITS` bits, sorted by i then j: multi-index hashing over
    :data:`_HASH_BLOCKS` (:func:`_bucket_pairs`), all rows in memory. Ingestion uses
    :func:`close_pair_records`, which finds the same pairs a partition at a time."""
    rows = np.flatnonzero(eligible)
    pairs: list[np.ndarray] = []
    for lo, hi in _HASH_BLOCKS:
        pairs += _bucket_pairs(rows, hashes[rows], lo, hi, (0, *(1 << b for b in range(hi - lo))))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs), axis=0)  # sorted by i, then j


PARTITION_ROWS = 1 << 16
"""Rows a partition of :func:`close_pair_records` aims at: memory holds two partitions
(their rows, hashes and sort order: ~7 MB) and the block tables, whatever N."""


def _partition_bits(ones: np.ndarray, n: int, lo: int, hi: int, p: int) -> list[int]:
    """The ``p`` bits of block ``lo:hi`` (positions within the block) whose share of ones
    among ``n`` hashes is closest to a half, so that partitions by them are even (a DCT
    hash's low-frequency bits are almost always set)."""
    share = np.abs(ones[lo:hi] / max(n, 1) - 0.5)
    return sorted(np.argsort(share, kind="stable")[:p].tolist())


def close_pair_records(hashes: Any, exact_of: Any, out: Any, scratch: Any, partition_rows: int = PARTITION_ROWS) -> None:
    """The pairs of :func:`_close_pairs` added to ``out`` (a
    :class:`pipelines.spill.SortedRecords`; a pair may be added more than once), from
    spilled columns: ``hashes`` (uint64) and ``exact_of`` (int64 ``duplicate_of``, -1 for
    none; only those rows are eligible), each a :class:`pipelines.spill.Column`.

    With more eligible rows than ``partition_rows``, each hash block's rows are split by
    ``p`` of the block's bits (:func:`_partition_bits`) into 2^p partitions in temporary
    files, so that one partition holds about ``partition_rows``. A partition is searched
    alone for equal values and values one bit away in the other bits; values one
    partition bit away lie in the partition whose number differs in that bit, and each
    such pair of partitions is searched together for that one flip. Every pair of
    :func:`_close_pairs` is found, and memory holds two partitions, not N rows."""
    from pipelines.spill import Column

    n, chunk = len(hashes), 1 << 16
    ones = np.zeros(64, np.int64)
    n_eligible = 0
    for start, h in hashes.chunks(chunk):
        h = h[exact_of.read(start, start + len(h)) < 0]
        n_eligible += len(h)
        ones += np.unpackbits(h.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little").sum(axis=0, dtype=np.int64)
    p = 0
    while (n_eligible >> p) > partition_rows and p < 12:
        p += 1

    def eligible_rows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start, h in hashes.chunks(chunk):
            keep = np.flatnonzero(exact_of.read(start, start + len(h)) < 0)
            yield start + keep, h[keep]

    for lo, hi in _HASH_BLOCKS:
        width = hi - lo
        if p == 0:
            parts = list(eligible_rows())
            rows = np.concatenate([r for r, _ in parts]) if parts else np.zeros(0, np.int64)
            rhash = np.concatenate([h for _, h in parts]) if parts else np.zeros(0, np.uint64)
            del parts
            for pairs in _bucket_pairs(rows, rhash, lo, hi, (0, *(1 << b for b in range(width)))):
                out.add(pairs)
            continue
        bits = _partition_bits(ones, n, lo, hi, p)
        files = [Column(scratch, np.int64, width=2) for _ in range(1 << p)]
        try:
            for rows, h in eligible_rows():
                key = (h >> np.uint64(lo)).astype(np.int64)
                part = sum(((key >> b) & 1) << m for m, b in enumerate(bits))
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange((1 << p) + 1))
                for a in range(1 << p):
                    sel = order[bounds[a] : bounds[a + 1]]
                    if len(sel):
                        files[a].append(np.stack([rows[sel], h[sel].view(np.int64)], axis=1))

            def load(a: int) -> tuple[np.ndarray, np.ndarray]:
                rec = files[a].read(0, len(files[a]))
                return np.ascontiguousarray(rec[:, 0]), np.ascontiguousarray(rec[:, 1]).view(np.uint64)

            inside = (0, *(1 << b for b in range(width) if b not in bits))
            for a in range(1 << p):
                rows_a, hash_a = load(a)
                for pairs in _bucket_pairs(rows_a, hash_a, lo, hi, inside):
                    out.add(pairs)
                for m, b in enumerate(bits):
                    if a ^ (1 << m) < a:
                        continue
                    rows_b, hash_b = load(a ^ (1 << m))
                    # Each value's rows come from one partition, so they stay in row order.
                    for pairs in _bucket_pairs(np.r_[rows_a, rows_b], np.r_[hash_a, hash_b], lo, hi, (1 << b,)):
                        out.add(pairs)
        finally:
            for f in files:
                f.close()


def confirmed_pairs(part: np.ndarray, take: Any, h: int, w: int) -> np.ndarray:
    """The pairs of one batch ``part`` (int64 ``(P, 2)``) whose pixels pass the
    linear-map test, in their order; each image's grey levels are computed once however
    many pairs it is in. ``take(rows)`` returns the images of sorted rows."""
    rows, inverse = np.unique(part, return_inverse=True)
    a, b = inverse.reshape(part.shape).T
    return part[native.pair_residuals(take(rows), a, b) <= NEAR_RESIDUAL]


def _first_confirmed(pairs: Iterable[np.ndarray], take: Any, h: int, w: int, confirm: Any = None) -> Iterator[tuple[int, int]]:
    """From hash-close pairs sorted by i, then j (chunks; repeats allowed): each i's first
    pair whose pixels pass the linear-map test, i.e. (i, its earliest copy), in
    increasing i. Pairs are compared in batches of one memory budget
    (:func:`confirmed_pairs`); ``confirm``, given, maps the iterator of batches to their
    confirmed pairs in the same order (e.g. computed by worker processes)."""
    per = max(1, _PAIR_BATCH_BYTES // (32 * h * w))
    last_i = -1

    def batches() -> Iterator[np.ndarray]:
        held: list[np.ndarray] = []
        n_held, prev = 0, None
        for part in pairs:
            if not len(part):
                continue
            keep = np.r_[True, (part[1:] != part[:-1]).any(axis=1)]
            if prev is not None and (part[0] == prev).all():
                keep[0] = False
            prev = part[-1].copy()
            part = part[keep]
            held.append(part)
            n_held += len(part)
            while n_held >= per:
                both = np.concatenate(held)
                yield both[:per]
                held, n_held = [both[per:]], n_held - per
        if n_held:
            yield np.concatenate(held)

    closes = (confirmed_pairs(part, take, h, w) for part in batches()) if confirm is None else confirm(batches())
    for close in closes:  # one batch of pairs in memory (a few per worker with ``confirm``)
        first = np.r_[True, close[1:, 0] != close[:-1, 0]] if len(close) else np.zeros(0, bool)
        for i, j in close[first].tolist():
            if i != last_i:
                yield i, j
                last_i = i


def _taker(images: Sequence[np.ndarray]) -> Any:
    if isinstance(images, np.ndarray):
        return images.__getitem__
    if hasattr(images, "take"):  # a sharded dataset: one read per run of rows
        return images.take
    return lambda rows: np.stack([images[r] for r in rows])


def near_duplicate_rows(images: Sequence[np.ndarray], hashes: np.ndarray, exact_duplicate: Sequence[bool] | np.ndarray) -> np.ndarray:
    """For every row, the first earlier row it is a perceptual copy of (module
    docstring), or -1: int64 ``(N,)``. Rows flagged in ``exact_duplicate`` get -1 and
    are not candidates (their first copy is). Only hash-close pairs
    (:func:`_close_pairs`) have their pixels compared."""
    n = len(images)
    out = np.full(n, -1, np.int64)
    eligible = ~np.asarray(exact_duplicate, dtype=bool) if n else np.zeros(0, bool)
    pairs = _close_pairs(np.asarray(hashes, dtype=np.uint64), eligible)
    if not len(pairs):
        return out
    h, w = np.shape(images[0])[:2]
    for i, j in _first_confirmed([pairs], _taker(images), h, w):
        out[i] = j
    return out


def near_duplicate_records(images: Sequence[np.ndarray], hashes: Any, exact_of: Any, scratch: Any, confirm: Any = None) -> Iterator[tuple[int, int]]:
    """:func:`near_duplicate_rows` from spilled columns (:func:`close_pair_records`), as
    (row, earliest copy) in increasing row order: memory holds a partition of hashes
    and a batch of pairs, not N rows. ``confirm``: as for :func:`_first_confirmed`."""
    from pipelines.spill import SortedRecords

    if not len(hashes):
        return
    pairs = SortedRecords(scratch, fields=2)
    try:
        close_pair_records(hashes, exact_of, pairs, scratch)
        h, w = np.shape(images[0])[:2]
        yield from _first_confirmed(pairs.sorted_chunks(), _taker(images), h, w, confirm)
    finally:
        pairs.close()


def near_duplicates(images: Sequence[np.ndarray], hashes: np.ndarray, exact_duplicate: Sequence[bool]) -> list[int | None]:
    """:func:`near_duplicate_rows` as a list with None for "none"."""
    return [None if j < 0 else j for j in near_duplicate_rows(images, hashes, exact_duplicate).tolist()]


def arrays(images: Sequence[np.ndarray], exact_duplicate: Sequence[bool] | np.ndarray, *, features: np.ndarray | None = None, hashes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contamination signals as arrays, in row order: (uint64 hashes, int64
    near-duplicate rows with -1 for none, float64 unrounded outlier scores); a few
    bytes per image. Arguments as for :func:`columns`."""
    hashes = perceptual_hashes(images) if hashes is None else np.asarray(hashes, dtype=np.uint64)
    near = near_duplicate_rows(images, hashes, exact_duplicate)
    scores = outlier_scores(feature_matrix(images) if features is None else features)
    return hashes, near, scores


def columns(images: Sequence[np.ndarray], exact_duplicate: Sequence[bool], *, features: np.ndarray | None = None, hashes: np.ndarray | None = None) -> dict[str, list]:
    """The three table columns for one scenario's normalized images, in row order:
    ``phash`` (hex strings), ``near_duplicate_of`` (row index or None) and
    ``outlier_score`` (robust z, rounded to 3 decimals). ``exact_duplicate`` flags the
    rows that have a ``duplicate_of``. ``features`` (:func:`feature_matrix`) and
    ``hashes`` (:func:`perceptual_hashes`) are computed here unless given (decode
    workers compute them per chunk: both are per image, so chunking changes nothing)."""
    hashes, near, scores = arrays(images, [bool(d) for d in exact_duplicate], features=features, hashes=hashes)
    return {
        "phash": [hash_hex(h) for h in hashes],
        "near_duplicate_of": [None if j < 0 else j for j in near.tolist()],
        "outlier_score": [round(float(s), 3) + 0.0 for s in scores],
    }
