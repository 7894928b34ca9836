"""The compiled kernels (pipelines/_native.c) against plain NumPy readings of the same
definitions, written here independently of them.

Each reference below follows the docstrings of :mod:`pipelines.contamination` and
:mod:`pipelines.decode` with whole-array NumPy expressions in float64. Integer results
(quantile levels, LBP counts, pixel sums, hash bits, PNG pixels) must agree exactly;
floating-point ones to rounding (the two sum in different orders).
"""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipelines import contamination, native

from .test_decode_png import _build, _chunks


def _images() -> np.ndarray:
    """64 RGB 32 x 32 crops of real photographs and textures, some flat or nearly so."""
    rng = np.random.default_rng(3)
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), np.repeat(skimage.data.brick()[..., None], 3, axis=2)]
    out = []
    for k in range(60):
        src = sources[k % len(sources)]
        y, x = rng.integers(0, src.shape[0] - 32), rng.integers(0, src.shape[1] - 32)
        out.append(src[y : y + 32, x : x + 32])
    out += [np.full((32, 32, 3), 128, np.uint8), np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)]
    noisy = np.clip(rng.normal(128, 2, (32, 32, 3)), 0, 255).astype(np.uint8)
    return np.stack(out + [noisy])


IMAGES = _images()
GREY_IMAGES = np.ascontiguousarray(IMAGES[..., :1])


# ----------------------------------------------------------------------------- references


def _ref_grey(batch: np.ndarray) -> np.ndarray:
    x = batch.astype(np.float64)
    luma = x[..., 0] if batch.shape[-1] == 1 else 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return luma


def _ref_lbp_bin(code: int) -> int:
    bits = [(code >> i) & 1 for i in range(8)]
    changes = sum(bits[i] != bits[i - 1] for i in range(8))
    return sum(bits) if changes <= 2 else 9


def ref_features(batch: np.ndarray) -> np.ndarray:
    """Every column but the bands, in float64, by the definitions."""
    b, h, w, c = batch.shape
    luma = _ref_grey(batch)
    g = luma / 255.0
    levels = np.rint(luma).astype(np.int64)
    cols = []
    counts = np.stack([np.bincount(levels[i].ravel(), minlength=256) for i in range(b)])
    cdf = np.cumsum(counts, axis=1)
    cols.append(np.stack([(cdf < q * h * w).sum(axis=1) for q in contamination._QUANTILES], axis=1) / 255.0)
    gx, gy = np.diff(g, axis=2), np.diff(g, axis=1)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    energies = [g.reshape(b, -1).std(axis=1), np.abs(gx).mean(axis=(1, 2)), np.abs(gy).mean(axis=(1, 2)), np.abs(lap).mean(axis=(1, 2))]
    cols.append(np.log(np.stack(energies, axis=1) + 1e-3))
    full = np.abs(np.fft.fft2(g - g.mean(axis=(1, 2), keepdims=True))) ** 2  # every frequency, +f and -f alike
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    bands = np.stack([full[:, (radius > lo) & (radius <= hi)].sum(axis=1) for lo, hi in contamination._BANDS], axis=1) + 1e-8
    cols.append(np.log(bands / bands.sum(axis=1, keepdims=True)))
    ex, ey = gx[:, :-1, :], gy[:, :, :-1]  # forward differences at the same pixel
    mag = np.hypot(ex, ey)
    angle = np.degrees(np.arctan2(ey, ex)) % 180.0  # a direction and its opposite: one orientation
    sector = np.minimum((angle // 45).astype(int), 3)
    orient = np.stack([(mag * (sector == k)).sum(axis=(1, 2)) for k in range(4)], axis=1)
    cols.append(orient / (orient.sum(axis=1, keepdims=True) + 1e-12))
    centre = levels[:, 1:-1, 1:-1] + contamination.LBP_STEP
    ring = [levels[:, :-2, :-2], levels[:, :-2, 1:-1], levels[:, :-2, 2:], levels[:, 1:-1, 2:], levels[:, 2:, 2:], levels[:, 2:, 1:-1], levels[:, 2:, :-2], levels[:, 1:-1, :-2]]
    code = sum((v >= centre).astype(np.int64) << bit for bit, v in enumerate(ring))
    bins = np.vectorize(_ref_lbp_bin)(np.arange(256))[code]
    lbp = np.stack([np.bincount(bins[i].ravel(), minlength=10) for i in range(b)])
    cols.append(lbp / lbp.sum(axis=1, keepdims=True))
    if c == 3:
        x = batch.astype(np.float64) / 255.0
        rg, yb = x[..., 0] - x[..., 1], x[..., 2] - (x[..., 0] + x[..., 1]) / 2
        chans = [x[..., 0], x[..., 1], x[..., 2]]
        cols.append(np.stack(
            [ch.mean(axis=(1, 2)) for ch in chans] + [np.log(ch.std(axis=(1, 2)) + 1e-3) for ch in chans]
            + [rg.mean(axis=(1, 2)), yb.mean(axis=(1, 2)), np.log(rg.std(axis=(1, 2)) + 1e-3), np.log(yb.std(axis=(1, 2)) + 1e-3)],
            axis=1,
        ))
    return np.concatenate(cols, axis=1)


def ref_phash(batch: np.ndarray) -> np.ndarray:
    g = _ref_grey(batch) / 255.0
    dh, dw = contamination._dct_matrix(g.shape[1]), contamination._dct_matrix(g.shape[2])
    low = np.einsum("ah,bhw,cw->bac", dh, g, dw).reshape(len(g), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return (bits.astype(np.uint64) << np.arange(63, -1, -1, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


# ----------------------------------------------------------------------------- features


@pytest.mark.parametrize("batch", [IMAGES, GREY_IMAGES], ids=["rgb", "grey"])
def test_features_follow_their_definitions(batch):
    grey, got = native.features(batch)
    assert np.array_equal(native.grey(batch), grey)  # the hashes' grey levels are the features', bit for bit
    assert not got[:, 11:16].any()  # the bands are the caller's:
    got = contamination.image_features(batch)
    want = ref_features(batch)
    assert np.allclose(grey, _ref_grey(batch) / 255.0, rtol=0, atol=1e-15)
    exact = list(range(0, 7)) + list(range(20, 30))  # quantiles and LBP shares: counts over counts
    assert np.array_equal(got[:, exact], want[:, exact])
    rest = [i for i in range(got.shape[1]) if i not in exact and not 11 <= i < 16]
    assert np.allclose(got[:, rest], want[:, rest], rtol=1e-9, atol=1e-9)
    textured = slice(0, 60)  # the flat images' bands are shares of rounding noise
    assert np.allclose(got[textured, 11:16], want[textured, 11:16], rtol=1e-7, atol=1e-7)
    # The real images are not all alike: a kernel returning constants would fail above,
    # but so should one that ignores the pixel layout (rows and columns swapped).
    assert not np.allclose(native.features(np.ascontiguousarray(batch.transpose(0, 2, 1, 3)))[1][:, 16:20], got[:, 16:20])


def test_flat_images_have_no_orientation_and_one_lbp_pattern():
    _, got = native.features(IMAGES[60:63])
    assert not got[:, 16:20].any()  # no gradient anywhere
    assert np.array_equal(got[:, 20:30], np.eye(10)[[0, 0, 0]])  # no neighbour brighter: pattern 0
    assert np.allclose(got[:, 7:11], np.log(1e-3), rtol=0, atol=1e-9)  # log(0 + 1e-3)


def test_phash_follows_its_definition():
    grey, _ = native.features(IMAGES)
    got = native.phash(grey, contamination._dct_matrix(32), contamination._dct_matrix(32))
    assert np.array_equal(got[:60], ref_phash(IMAGES)[:60])  # the flat ones: every coefficient ~0, bits from rounding
    assert len(set(got[:60].tolist())) == 60


def test_moments_are_exact_integer_sums():
    for batch in (IMAGES, GREY_IMAGES, IMAGES[:, :, :17]):
        got = native.moments(batch)
        flat = batch.reshape(len(batch), -1).astype(np.int64)
        mirror = batch[:, :, ::-1].reshape(len(batch), -1).astype(np.int64)
        want = np.stack([flat.sum(1), (flat * flat).sum(1), (flat * mirror).sum(1), flat.min(1), flat.max(1)], axis=1)
        assert np.array_equal(got, want)


def test_kernels_refuse_what_they_cannot_read():
    with pytest.raises(ValueError, match="uint8"):
        native.features(IMAGES.astype(np.float32))
    with pytest.raises(ValueError, match="3 x 3"):
        native.features(IMAGES[:, :2, :2])
    with pytest.raises(ValueError, match="do not fit"):
        native.phash(np.zeros((1, 16, 16)), contamination._dct_matrix(32), contamination._dct_matrix(32))


# ----------------------------------------------------------------------------- k nearest


def test_knn_matches_a_full_sort_with_ties_to_the_lower_column():
    rng = np.random.default_rng(0)
    d2 = rng.random((300, 2000))
    d2[:, 1000:1010] = d2[:, 5:15]  # tied columns, inside the nearest for many rows
    d2[:50] = np.round(d2[:50] * 20) / 20  # heavy ties: 21 distinct values
    d2[7, 3] = np.inf
    values = rng.random(2000)
    for k in (1, 2, 49, 50, 51, 2000):
        dk, local = native.knn(d2, k, values)
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]  # the lower column first among ties
        picked = np.sort(order, axis=1)
        assert np.allclose(dk, np.sqrt(np.take_along_axis(d2, picked, axis=1)).mean(axis=1), rtol=1e-13, atol=0)
        assert np.array_equal(local, np.median(values[picked], axis=1))
    dk_only, none = native.knn(d2, 50)
    assert none is None and np.array_equal(dk_only, native.knn(d2, 50, values)[0])


def test_knn_on_rows_shorter_than_its_sample():
    rng = np.random.default_rng(1)
    d2 = rng.random((20, 60))
    dk, local = native.knn(d2, 10, np.arange(60.0))
    picked = np.sort(np.argsort(d2, axis=1, kind="stable")[:, :10], axis=1)
    assert np.array_equal(local, np.median(picked.astype(float), axis=1))
    with pytest.raises(ValueError, match="must be in"):
        native.knn(d2, 61)


# ----------------------------------------------------------------------------- PNG


def _png(pixels: np.ndarray, filters: list[int], level: int = 6) -> tuple[bytes, np.ndarray]:
    """A plain PNG of ``pixels`` (uint8 (H, W, C)) with the given filter type per row."""
    h, w, c = pixels.shape
    bpp, stride = c, w * c
    rows = pixels.reshape(h, stride).astype(np.int64)
    raw = bytearray()
    for y in range(h):
        ft = filters[y % len(filters)]
        cur, up = rows[y], rows[y - 1] if y else np.zeros(stride, np.int64)
        left = np.r_[np.zeros(bpp, np.int64), cur[:-bpp]]
        upleft = np.r_[np.zeros(bpp, np.int64), up[:-bpp]]
        if ft == 0:
            pred = np.zeros(stride, np.int64)
        elif ft == 1:
            pred = left
        elif ft == 2:
            pred = up
        elif ft == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        raw += bytes([ft]) + ((cur - pred) % 256).astype(np.uint8).tobytes()
    ihdr = np.array([w, h], ">u4").tobytes() + bytes([8, 0 if c == 1 else 2, 0, 0, 0])
    return _build([(b"IHDR", ihdr), (b"IDAT", zlib.compress(bytes(raw), level)), (b"IEND", b"")]), pixels


def _idat_span(data: bytes) -> tuple[int, int]:
    pos, start = 8, None
    for kind, body in _chunks(data):
        if kind == b"IDAT" and start is None:
            start = pos
        if kind == b"IEND":
            return start, pos
        pos += 12 + len(body)
    raise AssertionError("no IEND")


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 1, 3, 2, 0]], ids=["none", "sub", "up", "average", "paeth", "mixed"])
@pytest.mark.parametrize("channels", [3, 1])
def test_png_rows_unfiltered_as_libpng_and_pillow_do(filters, channels):
    pixels = np.ascontiguousarray(skimage.data.astronaut()[60:97, 200:243, :channels])  # 37 x 43: odd sizes
    data, want = _png(pixels, filters)
    got = native.png_plain(data, *_idat_span(data), 37, 43, channels)
    assert got is not None and np.array_equal(got, want)
    opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, (cv2.cvtColor(opencv, cv2.COLOR_BGR2RGB) if channels == 3 else opencv[..., None]))
    assert np.array_equal(got.reshape(opencv.shape), np.asarray(Image.open(io.BytesIO(data))).reshape(opencv.shape))


def test_png_stream_that_is_not_exactly_the_rows_is_left_to_the_other_decoders():
    pixels = np.ascontiguousarray(skimage.data.astronaut()[:20, :24])
    data, _ = _png(pixels, [4])
    span = _idat_span(data)
    assert native.png_plain(data, *span, 20, 24, 3) is not None
    idat = zlib.decompress(next(body for kind, body in _chunks(data) if kind == b"IDAT"))

    def with_idat(payload: bytes) -> bytes:
        head = [c for c in _chunks(data) if c[0] not in (b"IDAT", b"IEND")]
        return _build(head + [(b"IDAT", payload), (b"IEND", b"")])

    bad = {
        "one row short": with_idat(zlib.compress(idat[: -(24 * 3 + 1)])),
        "a row too many": with_idat(zlib.compress(idat + idat[: 24 * 3 + 1])),
        "data after the stream": with_idat(zlib.compress(idat) + b"tail"),
        "stream cut short": with_idat(zlib.compress(idat)[:-9]),
        "filter type 5": with_idat(zlib.compress(bytes([5]) + idat[1:])),
    }
    for name, png in bad.items():
        assert native.png_plain(png, *_idat_span(png), 20, 24, 3) is None, name
    start, stop = span
    broken_crc = data[: stop - 1] + bytes([data[stop - 1] ^ 1]) + data[stop:]
    assert native.png_plain(broken_crc, start, stop, 20, 24, 3) is None
    assert native.png_plain(data, start, stop, 20, 25, 3) is None  # rows of another width
    with pytest.raises(ValueError, match="outside the data"):
        native.png_plain(data, start, len(data) + 1, 20, 24, 3)


def test_knn_from_a_gram_matrix_is_knn_of_the_distances_it_implies():
    rng = np.random.default_rng(2)
    q, r = rng.normal(size=(200, 12)), rng.normal(size=(700, 12))
    q[:5] = r[[3, 9, 9, 600, 699]]  # rows that are reference rows: never their own neighbour
    own = np.full(200, -1)
    own[[0, 1, 3, 4]] = [3, 9, 600, 699]  # row 2 is a copy of row 1, not the reference row itself
    gram, q2, r2 = q @ r.T, (q * q).sum(axis=1), (r * r).sum(axis=1)
    d2 = np.maximum(q2[:, None] + r2[None, :] - 2.0 * gram, 0.0)
    d2[np.flatnonzero(own >= 0), own[own >= 0]] = np.inf
    values = rng.random(700)
    got = native.knn_gram(gram, q2, r2, own, 25, values)
    want = native.knn(d2, 25, values)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])  # the same arithmetic, bit for bit
    assert got[0][2] < got[0][1]  # the copy counts the reference row (distance 0) among its neighbours; the row itself does not
    with pytest.raises(ValueError, match="do not fit"):
        native.knn_gram(gram, q2[:-1], r2, own, 25)


def test_pair_residuals_are_least_squares_fits_between_grey_images():
    images = np.concatenate([IMAGES[:6], np.clip(IMAGES[:2].astype(int) * 0.8 + 20, 0, 255).astype(np.uint8), IMAGES[60:61]])
    a, b = np.array([0, 0, 6, 7, 3, 8, 5]), np.array([1, 6, 0, 1, 3, 2, 4])  # repeats, a copy's edit, itself, a flat image

    def one_way(u, v):
        if v.std() < 1e-9:
            return np.sqrt(((u - u.mean()) ** 2).mean())
        design = np.stack([v, np.ones_like(v)], axis=1)
        return np.sqrt(((u - design @ np.linalg.lstsq(design, u, rcond=None)[0]) ** 2).mean())

    grey = _ref_grey(images).reshape(len(images), -1) / 255.0
    want = np.array([max(one_way(grey[i], grey[j]), one_way(grey[j], grey[i])) for i, j in zip(a, b)])
    got = native.pair_residuals(images, a, b)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-12)
    assert got[4] == 0.0 and got[1] < 0.01 < got[0]  # an image with itself; a brightness/contrast edit (rounded) of it
    assert np.allclose(native.pair_residuals(GREY_IMAGES, [0, 5], [1, 5]), native.pair_residuals(GREY_IMAGES[[0, 1, 5]], [0, 2], [1, 2]))
    with pytest.raises(IndexError, match="outside"):
        native.pair_residuals(images, [0], [len(images)])
