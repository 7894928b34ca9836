"""Ingestion: turn a scenario's source into a normalized image dataset plus a per-image table.

    from pipelines.steps.ingest import ingest
    result = ingest(scenario, paths)      # writes paths.ingested/{images/,table.csv,quarantine.json,manifest.json}

Where the images come from (``builtin``, ``folder``, ``npz``) is :mod:`pipelines.sources`;
how each one is decoded, oriented, converted and resized to ``scenario.image`` is
:mod:`pipelines.decode`; the files are written with :mod:`pipelines.io`.

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
of the first row with the same ``sha256`` (empty when none). Read it back with
:func:`pipelines.io.read_table`.

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

The images are streamed, as they are decoded (in parallel for a large folder, see
:mod:`pipelines.sources`), into ``images/``: content-addressed shards that the later
steps read lazily (:mod:`gan_core.shards`), so the pixels of the scenario are never all
in memory; the contamination columns are a second pass over those shards. Nor is
anything else kept per image (:mod:`pipelines.spill`): each table row goes to a
temporary file as it comes and ``table.csv`` is written from it in chunks; the digests,
perceptual hashes, contamination features, ``duplicate_of``, ``near_duplicate_of`` and
raw outlier scores are columns in temporary files, read back a chunk at a time; exact
duplicates are found by an external sort of (digest, row) records, hash-close
pairs a partition of hashes at a time and sorted on disk, and a folder's listing is
sorted in runs on disk. Memory holds fixed-size windows (a shard of pixels, a chunk of
rows, two hash partitions, the 2,000-image outlier reference), whatever the number of
images (docs/SCALING.md). The shards and
``images/index.json`` are written atomically and the index last; ``manifest.json`` is
removed just before the new index replaces the old one and written last, so its presence
marks a complete, consistent ingestion. A full disk is an :class:`IngestError` saying
"No space left on device" that leaves the previous outputs untouched. Reruns on the same
input give byte-identical files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.decode import MAX_IMAGE_PIXELS, pillow_limits
from gan_core.atomic import atomic_writer
from pipelines.io import IMAGES_DIR, LEGACY_IMAGES_FILE, atomic_write, json_bytes
from gan_core.shards import ShardWriter, dataset_digest
from pipelines.spill import Column, SortedRecords, digest_words, grouped
from pipelines.paths import ScenarioPaths
from pipelines.scenario import Scenario
from pipelines.blocks import ROW_COLUMNS, Block
from pipelines.sources import MAX_FILE_BYTES, SourceError, open_source

FORMAT = "scenario-gan.ingest/3"
CONTAMINATION_COLUMNS = ("phash", "near_duplicate_of", "outlier_score")
"""Computed once all images are decoded (they compare images with each other)."""
TABLE_COLUMNS = ("index", *ROW_COLUMNS, "duplicate_of", *CONTAMINATION_COLUMNS)
"""The columns of ``table.csv``, in order, each described in the module docstring: the
row's number, the columns each decoded block formats (:data:`pipelines.blocks.ROW_COLUMNS`),
the exact-duplicate column and the contamination columns (:mod:`pipelines.contamination`)."""


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
    decode_s: float = 0.0
    """Seconds of the decoding pass (read, decode, describe, write the shards); the rest of
    the step compares the images with each other and writes the table."""


class _Rows:
    """The table as ingestion collects it, in bytes per row rather than Python objects:
    every row's first columns (``index`` .. ``symmetry``) go to an unnamed temporary
    file as CSV text, and its ``sha256`` to a spilled column (32 bytes per image on
    disk) that the exact-duplicate pass and the content hash read back in order."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=directory)  # O_TMPFILE: gone on close or crash
        self.digests = Column(directory, np.uint8, width=32)
        self.n = 0

    def add(self, lines: Sequence[bytes], digests_hex: Sequence[str]) -> None:
        """Rows whose columns after ``index`` are ``lines`` (:data:`pipelines.blocks.ROW_COLUMNS`
        as CSV, no newline): numbered from :attr:`n` on."""
        self.file.write(b"".join(b"%d,%s\n" % (self.n + j, line) for j, line in enumerate(lines)))
        self.digests.append(np.frombuffer(bytes.fromhex("".join(digests_hex)), np.uint8).reshape(-1, 32))
        self.n += len(lines)

    def lines(self) -> Iterator[bytes]:
        """The rows written so far, one line each (file names hold no raw newline)."""
        self.file.flush()
        self.file.seek(0)
        for line in self.file:
            yield line.rstrip(b"\n")

    @property
    def size(self) -> int:
        self.file.seek(0, io.SEEK_END)
        return self.file.tell() if self.n else 0

    def close(self) -> None:
        self.file.close()
        self.digests.close()


def first_copies(digests: np.ndarray) -> np.ndarray:
    """For uint8 ``(N, 32)`` digests: the index of the first row with the same digest,
    -1 for the first of each (the ``duplicate_of`` column). Rows are sorted by their
    first 8 bytes (24 bytes of memory per row); only rows whose 8 bytes another row
    shares are compared in full."""
    n = len(digests)
    out = np.full(n, -1, np.int64)
    if n < 2:
        return out
    key = np.ascontiguousarray(digests[:, :8]).view(np.uint64).ravel()
    order = np.argsort(key, kind="stable")  # equal keys keep row order
    skey = key[order]
    del key
    tied = np.flatnonzero(skey[1:] == skey[:-1])
    del skey
    if len(tied) == 0:
        return out
    # Runs of equal keys: positions p, p+1, ... of ``tied`` mark sorted positions p..p+1.
    breaks = np.flatnonzero(np.diff(tied) > 1)
    starts, ends = tied[np.r_[0, breaks + 1]], tied[np.r_[breaks, len(tied) - 1]] + 2
    for a, b in zip(starts.tolist(), ends.tolist()):
        first: dict[bytes, int] = {}
        for row in order[a:b].tolist():  # increasing row order within a run
            j = first.setdefault(digests[row].tobytes(), row)
            if j != row:
                out[row] = j
    return out


def duplicate_column(digests: Column, scratch: Path) -> tuple[Column, int]:
    """:func:`first_copies` of a spilled digest column, as a spilled int64 column (and
    the number of duplicates): (digest, row) records are sorted on disk
    (:class:`pipelines.spill.SortedRecords`), so equal digests come out together, in
    row order, and each group's first row is the one the others copy. Memory: a window
    of records, whatever N."""
    records = SortedRecords(scratch, fields=5)
    found = SortedRecords(scratch, fields=2)  # (row, its first copy)
    try:
        for start, d in digests.chunks(_TABLE_CHUNK * 8):
            records.add(np.column_stack([digest_words(d), np.arange(start, start + len(d))]))
        for part in grouped(records.sorted_chunks(), 4):
            starts = np.r_[True, (part[1:, :4] != part[:-1, :4]).any(axis=1)]
            first = part[np.maximum.accumulate(np.where(starts, np.arange(len(part)), 0)), 4]
            found.add(np.stack([part[~starts, 4], first[~starts]], axis=1))
        return _dense_column(scratch, len(digests), found.sorted_chunks()), len(found)
    finally:
        records.close()
        found.close()


def _dense_column(scratch: Path, n: int, pairs: Iterable[Any]) -> Column:
    """An int64 column of ``n`` rows, -1 except ``column[i] = j`` for each (i, j) of
    ``pairs`` (increasing i; chunks of pairs or single pairs), written a chunk at a time."""
    out = Column(scratch, np.int64)
    buf = np.full(_TABLE_CHUNK, -1, np.int64)
    base = 0
    for chunk in pairs:
        for i, j in np.asarray(chunk, np.int64).reshape(-1, 2).tolist():
            while i >= base + _TABLE_CHUNK:
                out.append(buf[: min(_TABLE_CHUNK, n - base)])
                buf.fill(-1)
                base += _TABLE_CHUNK
            buf[i - base] = j
    while base < n:
        out.append(buf[: min(_TABLE_CHUNK, n - base)])
        buf.fill(-1)
        base += _TABLE_CHUNK
    return out


THREAD_SCORE_ROWS = 4096
"""From this many images on (and below :data:`PARALLEL_SCORE_ROWS`), the outlier scores are
computed by a thread of the ingesting process beside the near-duplicate pass; below it
afterwards, where a thread's start would cost more than it saves."""
PARALLEL_SCORE_ROWS = 32768
"""From this many images on, the outlier scores are computed by worker processes while the
ingesting process compares the near-duplicate candidates, in about four tasks per worker
(at most :data:`pipelines.contamination.SCORE_CHUNK` rows each); below it, in the
ingesting process (by a thread beside that pass from :data:`THREAD_SCORE_ROWS` on).
Scoring takes ~14 µs of CPU per image and the near-duplicate pass much less below 10^6
images, so from here on the workers halve the step's last seconds on 2 cores (at 32,768
rows the serial pass takes ~0.5 s; starting two workers ~0.05 s forked, ~0.5 s
spawned)."""

_SCORER: dict[str, Any] = {}


def _score_init(features_path: str, n: int, dim: int, raw_path: str, model: dict[str, Any], images: Any) -> None:
    from threadpoolctl import threadpool_limits

    from pipelines.contamination import FeatureRows
    from pipelines.heap import reuse_freed_memory

    reuse_freed_memory()
    _SCORER.update(
        threads=threadpool_limits(limits=1), features=FeatureRows(open(features_path, "rb"), n, dim),
        raw=open(raw_path, "r+b"), model=model, images=images,
    )


def _score_rows(start: int, stop: int) -> None:
    from pipelines.contamination import raw_scores
    from pipelines.spill import write_rows

    write_rows(_SCORER["raw"].fileno(), start * 8, raw_scores(_SCORER["features"], _SCORER["model"], start, stop))


def _confirm_batch(part: np.ndarray, images: Any = None) -> np.ndarray:
    """:func:`pipelines.contamination.confirmed_pairs` of one batch of candidates, read
    from ``images`` (a worker's own reader by default)."""
    from pipelines.contamination import confirmed_pairs

    images = _SCORER["images"] if images is None else images
    return confirmed_pairs(part, images.take, *images.image_shape[:2])


class _CompareWorkers:
    """Every row's raw outlier score (:func:`pipelines.contamination.raw_scores`) written
    into ``raw``, chunk by chunk. With at least :data:`PARALLEL_SCORE_ROWS` rows and more
    than one core, :func:`pipelines.sources.decode_workers` processes compute the chunks
    (opening the two unnamed files through ``/proc``) while the caller goes on;
    :meth:`wait` waits for them. Every chunk is computed with one BLAS thread, in a
    worker or here, so the scores do not depend on where they were computed.

    The same workers then compare the near-duplicate candidates' pixels
    (:meth:`confirm`, reading ``images``, the shards written so far), queued behind the
    scores, while the caller finds and sorts the candidates."""

    def __init__(self, features: Any, model: dict[str, Any], raw: Column, n: int, images: Any) -> None:
        from pipelines.contamination import _DIST_CHUNK, SCORE_CHUNK
        from pipelines.sources import _start_method, decode_workers

        self.features, self.model, self.raw, self.n, self.images = features, model, raw, n, images
        self.confirmed_here = self.confirmed_there = 0  # candidate batches compared here / by the workers
        workers = decode_workers() if n >= PARALLEL_SCORE_ROWS else 1
        # Tasks: about four per worker, whole distance blocks, at most SCORE_CHUNK rows
        # (each task reads and standardizes the reference again).
        size = SCORE_CHUNK if workers == 1 else min(SCORE_CHUNK, max(_DIST_CHUNK, -(-n // (4 * workers * _DIST_CHUNK)) * _DIST_CHUNK))
        self.parts = [(a, min(a + size, n)) for a in range(0, n, size)]
        raw.reserve(n)
        self.pool, self.futures = None, []
        self.here = 0  # chunks computed in this process (all of them without workers)
        import threading
        from collections import deque

        self.thread, self.thread_error = None, None
        self._left: deque = deque()  # parts not yet begun, taken one at a time (_score_shared)
        self._lock = threading.Lock()
        self.workers = workers = min(workers, len(self.parts))
        if workers == 1 and n >= THREAD_SCORE_ROWS:
            # A thread of this process computes them beside the near-duplicate pass (its
            # matrix products and k-nearest selections run without the GIL), in about
            # eight parts, so that wait() can take over the parts it has not started.
            from threadpoolctl import threadpool_limits

            size = max(_DIST_CHUNK, -(-n // (8 * _DIST_CHUNK)) * _DIST_CHUNK)
            self.parts = [(a, min(a + size, n)) for a in range(0, n, size)]
            self._left.extend(self.parts)
            self._limits = threadpool_limits(limits=1)  # for both threads, until wait() or close()
            self.thread = threading.Thread(target=self._score_shared, args=(True,), name="outlier-scores", daemon=True)
            self.thread.start()
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            features.file.flush()
            self.pool = ProcessPoolExecutor(
                workers, mp_context=mp.get_context(_start_method()), initializer=_score_init,
                initargs=(f"/proc/{os.getpid()}/fd/{features.file.fileno()}", n, features.dim, raw.path, model, images),
            )
            self.futures = [self.pool.submit(_score_rows, a, b) for a, b in self.parts]

    def confirm(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """:func:`_confirm_batch` of each batch, in order: by the workers (a few batches
        per worker in flight), or here without them or when a worker fails."""
        from collections import deque

        if self.pool is None:
            for part in batches:
                yield self._confirm_here(part)
            return

        def submit(part: np.ndarray) -> Any:
            try:
                return self.pool.submit(_confirm_batch, part)
            except Exception:  # noqa: BLE001 - a broken pool (a worker died, /proc not readable)
                return None

        def result(part: np.ndarray, future: Any) -> np.ndarray:
            try:
                close = future.result()
            except Exception:  # noqa: BLE001 - compared here instead
                return self._confirm_here(part)
            self.confirmed_there += 1
            return close

        pending: deque = deque()
        for part in batches:
            future = submit(part)
            if future is None:  # keep the order: what is in flight first
                while pending:
                    yield result(*pending.popleft())
                yield self._confirm_here(part)
                continue
            pending.append((part, future))
            if len(pending) > 4 * self.workers:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())

    def _confirm_here(self, part: np.ndarray) -> np.ndarray:
        self.confirmed_here += 1
        return _confirm_batch(part, self.images)

    def _score_shared(self, in_thread: bool = False) -> None:
        """Score the parts nobody has taken yet, one at a time; the scoring thread keeps
        an error for :meth:`wait` to raise."""
        from pipelines.contamination import raw_scores

        try:
            while True:
                with self._lock:
                    if not self._left:
                        return
                    a, b = self._left.popleft()
                self.raw.write_at(a, raw_scores(self.features, self.model, a, b))
        except BaseException as e:  # noqa: BLE001 - re-raised by wait()
            if not in_thread:
                raise
            self.thread_error = e
            with self._lock:
                self._left.clear()

    def _join(self) -> None:
        self.thread.join()
        self.thread = None
        self._limits.restore_original_limits()

    def wait(self) -> None:
        from threadpoolctl import threadpool_limits

        if self.thread is not None:
            try:
                self._score_shared()  # this thread takes the parts the scoring thread has not begun
            finally:
                self._join()
            self.here = len(self.parts)
            if self.thread_error is not None:
                raise self.thread_error
            return
        todo = self.parts
        if self.pool is not None:
            try:
                for f in self.futures:
                    f.result()
                todo = []
            except Exception:  # noqa: BLE001 - e.g. /proc not readable: compute them here
                pass
            finally:
                self.close()
        self.here = len(todo)
        self._left.extend(todo)
        with threadpool_limits(limits=1):  # as in the workers: the scores do not depend on where they were computed
            self._score_shared()

    def close(self) -> None:
        if self.thread is not None:  # an error elsewhere: stop taking parts, let the one begun finish before its file closes
            with self._lock:
                self._left.clear()
            self._join()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _collect(source: Iterable[Block], limit: int | None, writer: ShardWriter, rows: _Rows, pre: _Precomputed) -> tuple[list[dict[str, str]], int]:
    """(quarantine, entries seen); the rows go to ``rows``, the images to ``writer`` and
    the contamination features and hashes to ``pre``, block by block as they come, so
    memory holds a shard of pixels and one block, not the table."""
    quarantine: list[dict[str, str]] = []
    n_seen = 0
    for block in source:
        if limit is not None and rows.n + block.n_good >= limit and block.n_good:
            block = block.head(limit - rows.n)  # stop at the limit-th image, as one at a time would
        n_seen += len(block.entries)
        quarantine += ({"file": name, "reason": bad.reason, "detail": bad.detail} for name, _, bad in block.entries if bad is not None)
        if block.n_good:
            writer.add(block.pixels, block.sha256)
            rows.add(block.rows, block.sha256)
            pre.add(block.features, block.hashes)
        if limit is not None and rows.n >= limit:
            break
    return quarantine, n_seen


class _Precomputed:
    """The contamination features and hashes of every block, in row order. Features go
    to an unnamed temporary file a block of :data:`BLOCK` rows at a time and are read
    back by rows (:class:`pipelines.contamination.FeatureRows`): 144 bytes per 32x32 RGB
    image that need not stay in memory. Hashes (8 bytes per image) go to a spilled column."""

    BLOCK = 8192

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file: Any = None
        self.buf: np.ndarray | None = None
        self.hashes = Column(directory, np.uint64)
        self.n = 0

    def add(self, features: np.ndarray, hashes: np.ndarray) -> None:
        if self.buf is None:
            self.file = tempfile.TemporaryFile(dir=self.directory)  # O_TMPFILE: gone on close or crash
            self.buf = np.empty((self.BLOCK, features.shape[1]), np.float32)
        self.hashes.append(hashes)
        done = 0
        while done < len(features):
            at = self.n % self.BLOCK
            take = min(len(features) - done, self.BLOCK - at)
            self.buf[at : at + take] = features[done : done + take]
            done += take
            self.n += take
            if self.n % self.BLOCK == 0:
                self.file.write(self.buf.data)

    def result(self, n: int) -> dict[str, Any]:
        from pipelines.contamination import FeatureRows

        if self.buf is None or self.n != n:
            return {}
        if self.n % self.BLOCK:
            self.file.write(self.buf[: self.n % self.BLOCK].data)
        self.file.flush()
        dim = self.buf.shape[1]
        self.buf = None
        _release_free_memory()
        return {"features": FeatureRows(self.file, n, dim), "hashes": self.hashes}

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.hashes.close()


def _release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; nothing elsewhere).
    The feature blocks live on the heap among shorter-lived allocations, so freeing them
    alone would leave their pages counted against the process while the gathered copy
    grows: with this, ingesting 10^6 images peaks ~140 MB lower."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def _remove_images(folder: Path) -> None:
    if folder.is_dir():
        shutil.rmtree(folder)
    (folder.parent / LEGACY_IMAGES_FILE).unlink(missing_ok=True)


def ingest(
    scenario: Scenario,
    paths: ScenarioPaths,
    *,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> IngestResult:
    """Read the scenario's source, normalize every image, quarantine bad files and write
    ``images/``, ``table.csv``, ``quarantine.json`` and (last) ``manifest.json`` to
    ``paths.ingested``. Raises :class:`IngestError` when the source is missing or yields
    no usable image (``quarantine.json`` is still written so the reasons can be read)."""
    out_dir = paths.ingested
    out = {k: out_dir / f for k, f in (("images", IMAGES_DIR), ("table", "table.csv"), ("quarantine", "quarantine.json"), ("manifest", "manifest.json"))}
    data_root = paths.roots.data
    spec = scenario.data
    size, channels = scenario.image.size, scenario.image.channels
    writer = ShardWriter(out["images"], (size, size, channels))
    rows = _Rows(out_dir)
    pre = _Precomputed(out_dir)
    try:
        source, described = open_source(scenario, data_root, max_pixels=max_image_pixels, max_file_bytes=max_file_bytes, scratch=out_dir)
        t0 = time.perf_counter()
        with pillow_limits(max_image_pixels):
            quarantine, n_seen = _collect(described, spec.limit, writer, rows, pre)
        decode_s = time.perf_counter() - t0
        return replace(_finish(scenario, out, writer, rows, quarantine, n_seen, source, data_root, pre.result(rows.n)), decode_s=decode_s)
    except SourceError as e:
        writer.abort()
        raise IngestError(str(e)) from None
    except OSError as e:
        writer.abort()
        if e.errno == errno.ENOSPC:
            raise IngestError(
                f"scenario {scenario.name}: {out_dir}: No space left on device ({e.strerror or e}); the previous outputs are untouched. "
                "Free space or move the data root"
            ) from None
        raise
    except BaseException:
        writer.abort()
        raise
    finally:
        rows.close()
        pre.close()


def _finish(scenario: Scenario, out: dict[str, Path], writer: ShardWriter, rows: _Rows, quarantine: list[dict[str, str]], n_seen: int, source: dict[str, Any], data_root: Path, pre: dict[str, Any]) -> IngestResult:
    """Duplicates and the contamination columns (a second pass over the written shards),
    then the table (streamed: the rows' first columns from ``rows`` plus the columns
    computed here), quarantine, the dataset index and (last) the manifest."""
    spec = scenario.data
    out_dir = out["manifest"].parent
    if not rows.n:
        writer.abort()
        out["manifest"].unlink(missing_ok=True)
        _remove_images(out["images"])
        out["table"].unlink(missing_ok=True)
        atomic_write(out["quarantine"], json_bytes(quarantine))
        if n_seen == 0:
            if spec.source == "npz":
                raise IngestError(f"scenario {scenario.name}: npz source {source['path']}: array {spec.npz_key!r} holds no images (shape {tuple(source['shape'])}); re-create it with at least one image")
            raise IngestError(f"scenario {scenario.name}: source {source.get('path', source)} holds no images; drop images (PNG, JPEG, ...) into {scenario.data_path(data_root) if spec.source != 'builtin' else 'it'}")
        reasons = sorted({q["reason"] for q in quarantine})
        raise IngestError(
            f"scenario {scenario.name}: no usable image among {n_seen} source entries (reasons: {', '.join(reasons)}); "
            f"see {out['quarantine']} for each file and fix or replace the files"
        )

    from pipelines import contamination

    # Every per-row column below is spilled (pipelines.spill): computed in passes over
    # temporary files and read back a chunk at a time when the table is written.
    scratch = out_dir
    duplicate_of, n_dup = duplicate_column(rows.digests, scratch)
    images = writer.reader()
    hashes, features = pre["hashes"], pre["features"]
    model = contamination.outlier_model(features)
    raw = Column(scratch, np.float64)
    scoring = _CompareWorkers(features, model, raw, rows.n, images) if model is not None else None  # in worker processes, beside the next pass
    try:
        confirm = scoring.confirm if scoring is not None else None
        near_of = _dense_column(scratch, rows.n, contamination.near_duplicate_records(images, hashes, duplicate_of, scratch, confirm))
        n_near = sum(int((part >= 0).sum()) for _, part in near_of.chunks(_TABLE_CHUNK * 8))
        if scoring is not None:
            scoring.wait()
            centre, scale = contamination.score_scale(model, raw.take(model["ref"]))
    finally:
        if scoring is not None:
            scoring.close()
    shape = list(images.shape)
    images.close()
    content_hash = _content_hash(rows.digests)

    quarantine_bytes = json_bytes(quarantine)
    # The new shards sit beside the old ones (content-addressed names); refuse before
    # replacing anything when the rest cannot fit: a full disk leaves the previous
    # ingestion complete and untouched instead of half replaced. A row's computed
    # columns take at most 46 bytes (two indices, 16 hex digits, a score).
    need = rows.size + 46 * rows.n + len(quarantine_bytes) + (1 << 16)
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise OSError(errno.ENOSPC, f"{out_dir} needs about {need:,} more bytes, {free:,} free")
    # Mark the step incomplete before replacing anything.
    out["manifest"].unlink(missing_ok=True)
    (out_dir / LEGACY_IMAGES_FILE).unlink(missing_ok=True)
    writer.close()
    scores = (lambda a, b: np.zeros(b - a)) if model is None else (lambda a, b: (raw.read(a, b) - centre) / scale)
    _write_table(out["table"], rows, duplicate_of, hashes, near_of, scores)
    for column in (duplicate_of, near_of, raw):
        column.close()
    atomic_write(out["quarantine"], quarantine_bytes)
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
        "images": {"path": IMAGES_DIR, "digest": dataset_digest(out["images"]), "shards": len(writer.shards)},
    }
    atomic_write(out["manifest"], json_bytes(manifest))
    return IngestResult(
        scenario=scenario.name, n_images=shape[0], n_quarantined=len(quarantine), n_duplicates=n_dup,
        content_hash=content_hash, quarantine=quarantine, images_path=out["images"], table_path=out["table"],
        quarantine_path=out["quarantine"], manifest_path=out["manifest"], source=source, n_near_duplicates=n_near,
    )


_TABLE_CHUNK = 8192
"""Rows per write of ``table.csv`` (and per block of the content hash)."""


def _content_hash(digests: Column) -> str:
    """sha256 over the rows' ``sha256`` hex values, one per line (no final newline)."""
    h = hashlib.sha256()
    for start, part in digests.chunks(_TABLE_CHUNK):
        h.update((b"\n" if start else b"") + b"\n".join(d.tobytes().hex().encode("ascii") for d in part))
    return h.hexdigest()


def _optional_index(i: int) -> bytes:
    return b"" if i < 0 else str(i).encode()


def _write_table(path: Path, rows: _Rows, duplicate_of: Column, hashes: Column, near_of: Column, scores: Any) -> None:
    """``table.csv`` written atomically in chunks of rows: each row's first columns as
    collected, then ``duplicate_of``, ``phash``, ``near_duplicate_of`` and
    ``outlier_score`` (``scores(start, stop)``, rounded to 3 decimals), every
    column read from its spilled file a chunk at a time."""
    from pipelines.contamination import hash_hex

    lines = rows.lines()
    with atomic_writer(path) as f:
        f.write(",".join(TABLE_COLUMNS).encode() + b"\n")
        for start, dup in duplicate_of.chunks(_TABLE_CHUNK):
            stop = start + len(dup)
            h, near, z = hashes.read(start, stop), near_of.read(start, stop), scores(start, stop)
            f.write(b"".join(
                b",".join((
                    next(lines), _optional_index(int(dup[k])), hash_hex(h[k]).encode(),
                    _optional_index(int(near[k])), repr(round(float(z[k]), 3) + 0.0).encode(),
                )) + b"\n"
                for k in range(stop - start)
            ))
