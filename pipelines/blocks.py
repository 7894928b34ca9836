"""Source entries described in blocks: what ingestion records about each image, computed
where the images are decoded and handed over as a few arrays per block.

    from pipelines.blocks import blocks, describe
    block = describe(items, (32, 32, 3))     # items: (name, source sha256, Decoded | BadImage)
    for block in blocks(items, (32, 32, 3)): ...

A decode worker (:mod:`pipelines.sources`) describes the chunk of files it decoded; a
small source is described in the ingesting process, in blocks of the same size. Either
way every value is computed per image (the pixel sha256, the statistics of
:func:`pipelines.decode.image_stats_batch`, the contamination features and perceptual
hash of :mod:`pipelines.contamination`), so the result does not depend on how entries
fall into blocks. What crosses the process boundary is one pixel array, one feature
matrix, one hash array and each image's table row already formatted as CSV, not an
object per image: unpickling, row formatting and per-image calls in the ingesting
process were a third of ingestion's CPU time for a large folder.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.decode import BadImage, Decoded, image_stats_batch
from pipelines.io import sha256_bytes

ROW_COLUMNS = (
    "file", "source_sha256", "sha256", "orig_width", "orig_height", "orig_mode",
    "n_frames", "width", "height", "channels", "mean", "std", "min", "max", "symmetry",
)
"""The table columns a block formats for each good image (those after ``index``, which
only the ingesting process knows, and before the columns that compare images)."""

Item = tuple[str, "str | None", "Decoded | BadImage"]
"""(printable name, sha256 of the source bytes or None when unread, decoded or bad)."""


@dataclass
class Block:
    """Consecutive source entries. ``entries`` holds every entry in order as (name,
    source sha256, the :class:`BadImage` or None for a good one); the other fields hold
    the good ones, in the same order: ``pixels`` uint8 ``(k, H, W, C)``, ``sha256`` their
    hex digests, ``rows`` their :data:`ROW_COLUMNS` as CSV text (one line each, no
    newline: file names are printable), ``features`` float32 ``(k, D)`` and ``hashes``
    uint64 ``(k,)``."""

    entries: list[tuple[str, str | None, BadImage | None]]
    pixels: np.ndarray
    sha256: list[str]
    rows: list[bytes]
    features: np.ndarray
    hashes: np.ndarray

    @property
    def n_good(self) -> int:
        return len(self.sha256)

    def head(self, k: int) -> Block:
        """The entries up to and including the ``k``-th good one (``0 < k <= n_good``)."""
        seen = 0
        for pos, (_, _, bad) in enumerate(self.entries):
            seen += bad is None
            if seen == k:
                break
        return Block(self.entries[: pos + 1], self.pixels[:k], self.sha256[:k], self.rows[:k], self.features[:k], self.hashes[:k])


def describe(items: Sequence[Item], shape: tuple[int, int, int]) -> Block:
    """The :class:`Block` of ``items`` whose good images are uint8 ``shape``."""
    from pipelines import contamination

    entries: list[tuple[str, str | None, BadImage | None]] = []
    good: list[tuple[str, str | None, Decoded]] = []
    for name, src, res in items:
        if isinstance(res, BadImage):
            entries.append((name, src, res))
        else:
            entries.append((name, src, None))
            good.append((name, src, res))
    pixels = np.empty((len(good), *shape), np.uint8)
    for i, (_, _, d) in enumerate(good):
        pixels[i] = d.pixels
    n_features = len(contamination.FEATURE_NAMES_RGB if shape[2] == 3 else contamination.FEATURE_NAMES_GREY)
    if not good:
        return Block(entries, pixels, [], [], np.zeros((0, n_features), np.float32), np.zeros(0, np.uint64))
    digests = [sha256_bytes(p.data) for p in pixels]
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    for (name, src, d), digest, st in zip(good, digests, image_stats_batch(pixels)):
        out.writerow((
            name, src, digest, d.orig_width, d.orig_height, d.orig_mode, d.n_frames, shape[1], shape[0], shape[2],
            st["mean"], st["std"], st["min"], st["max"], st["symmetry"],
        ))
    rows = text.getvalue().encode("utf-8").split(b"\n")[:-1]
    return Block(entries, pixels, digests, rows, *contamination.describe_images(pixels))


def blocks(items: Iterable[Item], shape: tuple[int, int, int], size: int = 64) -> Iterator[Block]:
    """``items`` described in blocks of ``size`` entries."""
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield describe(chunk, shape)
            chunk = []
    if chunk:
        yield describe(chunk, shape)
