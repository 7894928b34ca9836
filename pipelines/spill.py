"""Per-row data of a large ingestion kept in unnamed temporary files, so memory holds a
bounded window whatever the number of images.

    from pipelines.spill import Column, SortedRecords
    digests = Column(tmp_dir, np.uint8, width=32)      # appended in row order
    digests.append(block_digests)                       # (k, 32)
    for start, part in digests.chunks(8192): ...        # read back in order, a chunk at a time
    rows = digests.take([5, 17])                        # positional reads of a few rows

    pairs = SortedRecords(tmp_dir, fields=2)            # int64 records, any order
    pairs.add(np.array([[3, 1], [2, 0]]))
    for part in pairs.sorted_chunks(): ...              # lexicographic order, a chunk at a time

:class:`SortedRecords` is an external merge sort: records are buffered up to
:data:`RUN_RECORDS`, each full buffer is sorted and written as one run, and the runs are
merged a window of rows each at a time (vectorized: every record not greater than the
smallest "last record loaded" of the unfinished runs can go out). Up to one run nothing
touches the disk. Both kinds of file are ``O_TMPFILE`` files in the given directory:
they vanish when closed or when the process dies, and never appear as outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RUN_RECORDS = 1 << 16
"""Records sorted in memory per run of :class:`SortedRecords` (1 MB of two int64 fields)."""
MERGE_BYTES = 4 << 20
"""Memory for the windows of all runs during a merge."""


def _pread_into(fd: int, out: np.ndarray, offset: int, what: str) -> None:
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        more = os.preadv(fd, [view[got:]], offset + got)
        if more == 0:
            raise OSError(f"{what} ended at byte {offset + got}: {got} of {len(view)} bytes read")
        got += more


def write_rows(fd: int, offset: int, values: np.ndarray) -> None:
    """Write ``values``' bytes at ``offset`` of the file ``fd`` (positional, all of them)."""
    view = memoryview(values).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class Column:
    """A per-row column of fixed width, appended in row order to an unnamed temporary
    file and read back in chunks or by rows. ``width`` values of ``dtype`` per row."""

    def __init__(self, directory: Path, dtype: Any, width: int = 1) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dtype, self.width = np.dtype(dtype), width
        self.row_bytes = self.dtype.itemsize * width
        self.file = tempfile.TemporaryFile(dir=directory)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def _shape(self, k: int) -> tuple[int, ...]:
        return (k,) if self.width == 1 else (k, self.width)

    def append(self, values: np.ndarray | Sequence[Any]) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype).reshape(self._shape(-1))
        self.file.write(arr.data)
        self.n += len(arr)

    def reserve(self, n: int) -> None:
        """Make the column ``n`` rows long (zeros), to be filled with :meth:`write_at`,
        possibly by other processes through :attr:`path`."""
        self.file.flush()
        self.file.truncate(n * self.row_bytes)
        self.n = n

    def write_at(self, start: int, values: np.ndarray) -> None:
        """Overwrite rows from ``start`` on (after :meth:`reserve`)."""
        write_rows(self.file.fileno(), start * self.row_bytes, np.ascontiguousarray(values, dtype=self.dtype))

    @property
    def path(self) -> str:
        """A path another process of this user can open the unnamed file by while this one
        holds it open (``/proc/<pid>/fd/<fd>``)."""
        return f"/proc/{os.getpid()}/fd/{self.file.fileno()}"

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the column)."""
        self.file.flush()
        stop = min(stop, self.n)
        out = np.empty(self._shape(max(0, stop - start)), self.dtype)
        if len(out):
            _pread_into(self.file.fileno(), out, start * self.row_bytes, "spilled column")
        return out

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) in order, ``size`` rows at a time."""
        for start in range(0, self.n, size):
            yield start, self.read(start, start + size)

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The given rows, one positional read each (for a few rows)."""
        self.file.flush()
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty(self._shape(len(rows)), self.dtype)
        for k, row in enumerate(rows.tolist()):
            if not 0 <= row < self.n:
                raise IndexError(f"row {row} outside 0..{self.n - 1}")
            _pread_into(self.file.fileno(), out[k : k + 1], row * self.row_bytes, "spilled column")
        return out

    def close(self) -> None:
        self.file.close()


def _lexsort(records: np.ndarray) -> np.ndarray:
    return records[np.lexsort(records.T[::-1])] if len(records) > 1 else records


def _not_after(records: np.ndarray, bound: np.ndarray) -> int:
    """How many leading rows of lexicographically sorted ``records`` are <= ``bound``."""
    le = np.zeros(len(records), bool)
    eq = np.ones(len(records), bool)
    for f in range(records.shape[1]):
        col, b = records[:, f], bound[f]
        le |= eq & (col < b)
        eq &= col == b
    return int(np.count_nonzero(le | eq))


class SortedRecords:
    """int64 records of ``fields`` values, added in any order and read back sorted
    lexicographically (first field, then the second, ...), in chunks. Equal records are
    interchangeable, so the order among them does not matter."""

    def __init__(self, directory: Path, fields: int = 2, run_records: int | None = None) -> None:
        self.directory, self.fields = directory, fields
        self.run_records = RUN_RECORDS if run_records is None else run_records
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.runs: list[tuple[int, int]] = []  # (first record, records) in the file
        self.file: Any = None
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, records: np.ndarray) -> None:
        records = np.asarray(records, np.int64).reshape(-1, self.fields)
        while len(records):
            take = min(len(records), self.run_records - self.buffered)
            self.buffer.append(records[:take])
            self.buffered += take
            self.n += take
            records = records[take:]
            if self.buffered == self.run_records:
                self._write_run()

    def _take_buffer(self) -> np.ndarray:
        out = np.concatenate(self.buffer) if self.buffer else np.zeros((0, self.fields), np.int64)
        self.buffer, self.buffered = [], 0
        return _lexsort(out)

    def _write_run(self) -> None:
        run = self._take_buffer()
        if self.file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.TemporaryFile(dir=self.directory)
        start = sum(k for _, k in self.runs)
        self.file.seek(start * 8 * self.fields)
        self.file.write(run.data)
        self.runs.append((start, len(run)))

    def sorted_chunks(self, chunk: int = 1 << 16) -> Iterator[np.ndarray]:
        """Every record, sorted, ``(k, fields)`` int64 at a time. Call once, after the last
        :meth:`add`."""
        if not self.runs:
            records = self._take_buffer()
            for start in range(0, len(records), chunk):
                yield records[start : start + chunk]
            return
        if self.buffered:
            self._write_run()
        self.file.flush()
        fd, row_bytes = self.file.fileno(), 8 * self.fields
        per = max(256, MERGE_BYTES // (len(self.runs) * row_bytes))
        cursor = [start for start, _ in self.runs]
        end = [start + k for start, k in self.runs]
        windows: list[np.ndarray] = [np.zeros((0, self.fields), np.int64)] * len(self.runs)

        def refill(r: int) -> None:
            k = min(per, end[r] - cursor[r])
            w = np.empty((k, self.fields), np.int64)
            _pread_into(fd, w, cursor[r] * row_bytes, "sorted run")
            cursor[r] += k
            windows[r] = w

        for r in range(len(self.runs)):
            refill(r)
        pending: list[np.ndarray] = []
        n_pending = 0
        while any(len(w) for w in windows):
            # Every unread record of an unfinished run sorts after its window's last one.
            lasts = [windows[r][-1] for r in range(len(windows)) if cursor[r] < end[r] and len(windows[r])]
            bound = _lexsort(np.stack(lasts))[0] if lasts else None
            out = []
            for r, w in enumerate(windows):
                k = len(w) if bound is None else _not_after(w, bound)
                if k:
                    out.append(w[:k])
                    windows[r] = w[k:]
                if not len(windows[r]) and cursor[r] < end[r]:
                    refill(r)
            merged = _lexsort(np.concatenate(out))
            pending.append(merged)
            n_pending += len(merged)
            if n_pending >= chunk:
                yield from self._chunked(pending, chunk, final=False)
                n_pending = sum(len(p) for p in pending)
        yield from self._chunked(pending, chunk, final=True)

    @staticmethod
    def _chunked(pending: list[np.ndarray], chunk: int, final: bool) -> Iterator[np.ndarray]:
        records = np.concatenate(pending) if pending else np.zeros((0, 0), np.int64)
        pending.clear()
        start = 0
        while len(records) - start >= chunk or (final and start < len(records)):
            yield records[start : start + chunk]
            start += chunk
        if start < len(records):
            pending.append(records[start:])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.buffer = []


def grouped(chunks: Iterable[np.ndarray], key: int) -> Iterator[np.ndarray]:
    """Sorted record chunks (:meth:`SortedRecords.sorted_chunks`) cut again so that records
    equal in their first ``key`` fields never fall in two chunks: a chunk's trailing group
    waits for the next chunk (a group larger than a chunk comes out whole)."""
    held: np.ndarray | None = None
    for part in chunks:
        part = part if held is None else np.concatenate([held, part])
        differs = np.flatnonzero((part[:, :key] != part[-1, :key]).any(axis=1))
        tail = int(differs[-1]) + 1 if len(differs) else 0  # where the last group starts
        held = part[tail:]
        if tail:
            yield part[:tail]
    if held is not None and len(held):
        yield held


def digest_words(digests: np.ndarray) -> np.ndarray:
    """uint8 ``(k, 32)`` sha256 digests as int64 ``(k, 4)``: records equal exactly when the
    digests are (the order among them is not the digests' byte order)."""
    return np.ascontiguousarray(digests, dtype=np.uint8).view(np.int64).reshape(-1, 4)


JSON_LINES_READ = 1 << 16
"""Bytes :class:`JsonLines` reads at a time (its lines are decoded from that window)."""


class JsonLines:
    """A list of JSON values kept in an unnamed temporary file, one compact JSON text per
    line (JSON escapes every newline inside a string), appended in order and read back
    lazily, as often as needed: the failing files and values of a validation check and
    its set-aside entries, however many. ``len()`` is the number of values."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=directory)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def extend(self, values: Iterable[Any]) -> None:
        import json

        lines = [json.dumps(v, ensure_ascii=False, sort_keys=True, allow_nan=False) for v in values]
        if lines:
            self.file.write(("\n".join(lines) + "\n").encode("utf-8"))
            self.n += len(lines)

    def __iter__(self) -> Iterator[Any]:
        import json

        self.file.flush()
        fd, offset, rest = self.file.fileno(), 0, b""
        while True:
            block = os.pread(fd, JSON_LINES_READ, offset)
            if not block:
                return
            offset += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()  # every value ends with a newline: b"" at the end of the file
            for line in lines:
                yield json.loads(line)

    def head(self, k: int) -> list[Any]:
        """The first ``k`` values."""
        import itertools

        return list(itertools.islice(iter(self), k))

    def close(self) -> None:
        self.file.close()
