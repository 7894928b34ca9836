"""Where a scenario's images come from (``scenario.data.source``), a block of entries at a time.

    from pipelines.sources import open_source
    info, blocks = open_source(scenario, data_root, max_pixels=..., max_file_bytes=...)
    for block in blocks: ...      # pipelines.blocks.Block: entries, pixels, rows, features

- ``builtin`` — :func:`pipelines.builtin_data.load` (real images shipped with installed
  packages); entries are named ``builtin:<name>#<i>``;
- ``folder``  — every file under ``scenario.data_path(data_root)``, recursively, in the
  order of their relative paths' bytes; entries are named by that relative path
  (:func:`printable_name`);
- ``npz``     — a MedMNIST-style archive: uint8 ``(N, H, W)`` or ``(N, H, W, C)`` under
  ``scenario.data.npz_key``, loaded with ``allow_pickle=False``; entries ``npz:<key>#<i>``.

Each entry is decoded by :mod:`pipelines.decode` as it is read, and every
:data:`CHUNK_FILES` entries are described as one :class:`pipelines.blocks.Block`
(digests, statistics, contamination features, table rows). A folder of at least
:data:`PARALLEL_MIN_FILES` files is read, decoded and described by :func:`decode_workers`
processes (all cores by default; ``SCENARIO_GAN_DECODE_WORKERS=1`` for one; one BLAS
thread each), a bounded window of chunks ahead of the consumer, in the same order and
with the same results as one process: memory holds the window, not the folder. Bad files are entries too (a :class:`pipelines.decode.BadImage`
instead of the image), never exceptions: besides the decoding reasons, ``empty_file``,
``file_too_large``, ``symlink_outside_root``, ``broken_symlink``,
``symlinked_directory`` (directory links are never followed), ``not_a_regular_file``
and ``unreadable`` (permissions, I/O errors). A source that is missing or unreadable as
a whole raises :class:`SourceError`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.blocks import Block, Item, blocks, describe
from pipelines.decode import BadImage, Decoded, classify_error, decode_array, decode_bytes
from pipelines.io import sha256_bytes, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.scenario import Scenario

MAX_FILE_BYTES = 256 * 1024 * 1024
"""Files larger than this are quarantined without being read."""
PARALLEL_MIN_FILES = 512
"""Below this many files a folder is decoded in the calling process (starting workers
costs more than it saves)."""
CHUNK_FILES = 64
"""Files per task sent to a decode worker."""
WORKERS_ENV = "SCENARIO_GAN_DECODE_WORKERS"



class SourceError(RuntimeError):
    """The source is missing or unreadable as a whole."""


def _scenario_file(scenario: Scenario) -> str:
    """The scenario file to fix, as error messages name it."""
    return f"scenarios/{scenario.name}.yaml"


def printable_name(name: str | bytes) -> str:
    """A UTF-8-safe, printable version of a file name: undecodable bytes become ``\\xNN``
    and control characters are escaped, so names can go into CSV/JSON and logs."""
    if isinstance(name, str) and name.isascii() and name.isprintable():
        return name  # most names: nothing to escape
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


def open_source(
    scenario: Scenario, data_root: Path, *, max_pixels: int, max_file_bytes: int = MAX_FILE_BYTES, scratch: Path | None = None
) -> tuple[dict[str, Any], Iterator[Block]]:
    """(what the source is, for the manifest; its entries, decoded and described lazily
    in :class:`pipelines.blocks.Block` s of :data:`CHUNK_FILES`). Raises
    :class:`SourceError` when the source is missing or cannot be loaded; entries are read
    (and a folder walked) only as the iterator is consumed. A large folder's listing is
    sorted in temporary files in ``scratch`` (the system's temporary directory if None)."""
    spec = scenario.data
    source: dict[str, Any] = {"type": spec.source}
    if spec.source == "builtin":
        from pipelines import builtin_data

        try:
            arr = builtin_data.load(spec.builtin, scenario.image.size)
        except Exception as e:  # noqa: BLE001 - e.g. a package without its data files
            raise SourceError(f"scenario {scenario.name}: built-in source {spec.builtin!r} could not be loaded ({type(e).__name__}: {e}); check that scikit-image/scikit-learn are installed") from None
        source.update(name=spec.builtin)
        return source, blocks(_iter_arrays(arr, f"builtin:{spec.builtin}", scenario, max_pixels), _shape(scenario), CHUNK_FILES)
    if spec.source == "npz":
        path = scenario.data_path(data_root)
        arr = _load_npz(path, spec.npz_key, scenario)
        source.update(path=Path(os.path.relpath(path, data_root.resolve())).as_posix(), key=spec.npz_key, sha256=sha256_file(path), shape=list(arr.shape))
        return source, blocks(_iter_arrays(arr, f"npz:{spec.npz_key}", scenario, max_pixels), _shape(scenario), CHUNK_FILES)
    root = scenario.data_path(data_root)
    if not root.is_dir():
        raise SourceError(
            f"scenario {scenario.name}: source folder {root} does not exist; create it and drop images into it, "
            f"or set data.path in {_scenario_file(scenario)}"
        )
    source.update(path=Path(os.path.relpath(root, data_root.resolve())).as_posix())
    return source, _iter_folder(root, data_root, scenario, max_pixels, max_file_bytes, scratch)


def _shape(scenario: Scenario) -> tuple[int, int, int]:
    return (scenario.image.size, scenario.image.size, scenario.image.channels)


def _iter_folder(root: Path, data_root: Path, scenario: Scenario, max_pixels: int, max_file_bytes: int, scratch: Path | None = None) -> Iterator[Block]:
    """Every entry in blocks, sorted by the relative path's bytes. The listing
    (:class:`_Listing`) holds at most :data:`LISTING_RUN` entries in memory and sorts a
    larger folder on disk (in ``scratch``), so its memory does not grow with the folder."""
    data_root_real = os.path.realpath(data_root)
    listing = _Listing(scratch)
    try:
        walk_errors: list[OSError] = []

        def add(rel: str, kind: str) -> None:  # fsencoded relative path + b"\0" + kind: sorts as the path does
            listing.add(os.fsencode(rel) + b"\0" + kind.encode("utf-8", "surrogateescape"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=walk_errors.append, followlinks=False):
            rel_dir = os.path.relpath(dirpath, root)
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    add(os.path.normpath(os.path.join(rel_dir, d)), "dirlink")
            for f in filenames:
                add(os.path.normpath(os.path.join(rel_dir, f)), "file")
        for err in walk_errors:
            rel = os.path.relpath(err.filename, root) if err.filename else "."
            if rel == ".":
                raise SourceError(f"scenario {scenario.name}: cannot read the source folder {root}: {err}") from None
            add(rel, f"error:{err.strerror or err}")
        listing.finish()
        workers = decode_workers()
        if workers > 1 and len(listing) >= PARALLEL_MIN_FILES:
            yield from _iter_parallel(listing, root, data_root_real, scenario, max_pixels, max_file_bytes, workers)
            return
        items = (_entry(*_split_entry(entry), root, data_root_real, scenario, max_pixels, max_file_bytes) for entry in listing)
        yield from blocks(items, _shape(scenario), CHUNK_FILES)
    finally:
        listing.close()


LISTING_RUN = 1 << 16
"""Listing entries sorted in memory at a time; a larger folder's listing is sorted on disk."""


class _Listing:
    """The folder listing, sorted. Up to :data:`LISTING_RUN` entries it stays in memory,
    packed into one ``bytes`` plus an int64 offset each (~60 bytes per typical entry
    instead of a ``bytes`` object and its list slot). Beyond that every
    :data:`LISTING_RUN` entries are sorted and written as one run to an unnamed temporary
    file (length-prefixed records), and iterating merges the runs (:func:`heapq.merge`),
    reading each a window at a time: memory holds one run while walking and the windows
    while reading, for any number of files."""

    def __init__(self, scratch: Path | None = None):
        self.scratch = scratch
        self.entries: list[bytes] = []
        self.runs: list[tuple[int, int]] = []  # (byte offset, byte length) in the file
        self.file: Any = None
        self.n = 0
        self.blob, self.offsets = b"", np.zeros(1, np.int64)

    def add(self, entry: bytes) -> None:
        self.entries.append(entry)
        self.n += 1
        if len(self.entries) >= LISTING_RUN:
            self._spill()

    def _spill(self) -> None:
        import tempfile

        if self.file is None:
            if self.scratch is not None:
                self.scratch.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.TemporaryFile(dir=self.scratch)  # O_TMPFILE: gone on close or crash
        self.entries.sort()
        data = b"".join(len(e).to_bytes(4, "little") + e for e in self.entries)
        start = self.runs[-1][0] + self.runs[-1][1] if self.runs else 0
        self.file.seek(start)
        self.file.write(data)
        self.runs.append((start, len(data)))
        self.entries.clear()

    def finish(self) -> None:
        """Call once, after the last :meth:`add`."""
        if self.runs:
            if self.entries:
                self._spill()
            self.file.flush()
            return
        self.entries.sort()
        self.blob = b"".join(self.entries)
        self.offsets = np.zeros(len(self.entries) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, self.entries), np.int64, len(self.entries)), out=self.offsets[1:])
        self.entries = []

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[bytes]:
        if self.runs:
            import heapq

            window = max(1 << 16, (16 << 20) // len(self.runs))
            yield from heapq.merge(*(self._read_run(start, length, window) for start, length in self.runs))
            return
        for start in range(0, self.n, 4096):
            bounds = self.offsets[start : start + 4097].tolist()
            yield from (self.blob[a:b] for a, b in zip(bounds, bounds[1:]))

    def _read_run(self, start: int, length: int, window: int) -> Iterator[bytes]:
        fd, off, end, buf = self.file.fileno(), start, start + length, b""
        while True:
            i = 0
            while len(buf) - i >= 4:
                k = int.from_bytes(buf[i : i + 4], "little")
                if len(buf) - i - 4 < k:
                    break
                yield buf[i + 4 : i + 4 + k]
                i += 4 + k
            buf = buf[i:]
            if off >= end:
                if buf:
                    raise OSError(f"listing run ended inside a record ({len(buf)} bytes left)")
                return
            more = os.pread(fd, min(window, end - off), off)
            if not more:
                raise OSError(f"listing file ended at byte {off}, expected {end}")
            off += len(more)
            buf += more

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _split_entry(entry: bytes) -> tuple[str, str]:
    """(relative path, kind) of a listing entry."""
    rel, _, kind = entry.partition(b"\0")
    return os.fsdecode(rel), kind.decode("utf-8", "surrogateescape")


def _entry(rel: str, kind: str, root: Path, data_root_real: str, scenario: Scenario, max_pixels: int, max_file_bytes: int) -> Item:
    name = printable_name(rel.replace(os.sep, "/"))
    full = os.path.join(root, rel)
    if kind.startswith("error:"):
        return name, None, BadImage("unreadable", kind[6:])
    if kind == "dirlink":
        return name, None, BadImage("symlinked_directory", f"directory links are not followed (points to {printable_name(os.readlink(full))})")
    digest, res = _read_one(full, data_root_real, scenario, max_pixels, max_file_bytes)
    return name, digest, res


def decode_workers() -> int:
    """Decode processes for a large folder: ``$SCENARIO_GAN_DECODE_WORKERS``, else the
    cores this process may use."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise SourceError(f"{WORKERS_ENV}={raw!r} is not a number of processes; set it to e.g. 2, or unset it to use every core") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_WORKER: dict[str, Any] = {}


def _start_method() -> str:
    """``fork`` from a process with one thread (a stage command, a script: fast, and a
    script without a ``__main__`` guard is not run again); ``spawn`` from a process with
    more (a Dagster run worker), since a forked child could inherit a lock another thread
    holds. Either way the workers are this process's children."""
    import threading

    return "fork" if threading.active_count() == 1 and "fork" in __import__("multiprocessing").get_all_start_methods() else "spawn"


def _worker_init(root: Path, data_root_real: str, scenario: Scenario, max_pixels: int, max_file_bytes: int) -> None:
    import warnings

    from PIL import Image, ImageFile
    from threadpoolctl import threadpool_limits

    from pipelines.heap import reuse_freed_memory

    # One BLAS/OpenMP thread per worker: the workers already use every core, and a
    # second thread each only spins (it doubled the workers' CPU time for no gain).
    _WORKER["threads"] = threadpool_limits(limits=1)
    reuse_freed_memory()  # each block's numpy temporaries reuse the last block's pages

    # What pipelines.decode.pillow_limits does in the parent, for the worker's life.
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    _WORKER.update(args=(root, data_root_real, scenario, max_pixels, max_file_bytes))


def _worker_chunk(chunk: list[tuple[str, str]]) -> Block:
    """Read and decode a chunk of files and describe them as one block
    (:func:`pipelines.blocks.describe`: per-image values, whatever the chunking)."""
    args = _WORKER["args"]
    return describe([_entry(rel, kind, *args) for rel, kind in chunk], _shape(args[2]))


def _iter_parallel(entries: "_Listing", root: Path, data_root_real: str, scenario: Scenario, max_pixels: int, max_file_bytes: int, workers: int) -> Iterator[Block]:
    """The entries read, decoded and described by ``workers`` processes, one block per
    chunk of :data:`CHUNK_FILES`, yielded in order; at most
    ``4 * workers`` chunks are in flight, so memory does not grow with the folder."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    import itertools

    listed = iter(entries)
    chunks = iter(lambda: [_split_entry(e) for e in itertools.islice(listed, CHUNK_FILES)], [])
    ctx = mp.get_context(_start_method())
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(root, data_root_real, scenario, max_pixels, max_file_bytes)) as pool:
        pending: deque = deque()
        todo = iter(chunks)
        for chunk in todo:
            pending.append(pool.submit(_worker_chunk, chunk))
            if len(pending) >= 4 * workers:
                break
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_worker_chunk, nxt))
            yield done


def _read_one(full: str, data_root_real: str, scenario: Scenario, max_pixels: int, max_file_bytes: int) -> tuple[str | None, Decoded | BadImage]:
    try:
        data = _read_file(full, data_root_real, max_file_bytes)
    except BadImage as bad:
        return None, bad
    except OSError as e:
        return None, BadImage("unreadable", f"{type(e).__name__}: {e.strerror or e}")
    digest = sha256_bytes(data)
    if not data:
        return digest, BadImage("empty_file", "0 bytes")
    if len(data) > max_file_bytes:
        return digest, BadImage("file_too_large", f"more than {max_file_bytes} bytes")
    try:
        return digest, decode_bytes(data, scenario, max_pixels)
    except BadImage as bad:
        return digest, bad


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK
"""O_NONBLOCK: opening a FIFO must not hang the run."""


def _read_file(full: str, data_root_real: str, max_file_bytes: int) -> bytes:
    """The bytes of a regular file (at most ``max_file_bytes + 1`` of them), following a
    symbolic link only to a file inside the data root; :class:`BadImage` for what is not
    such a file. A plain file is opened with O_NOFOLLOW first (one system call: no
    separate check whether it is a link); a link refuses that open (ELOOP) and is then
    resolved, checked and opened, O_NOFOLLOW no longer set."""
    nofollow, fd = getattr(os, "O_NOFOLLOW", 0), None
    if nofollow:
        try:
            fd = os.open(full, _OPEN_FLAGS | nofollow)
        except OSError as e:
            if e.errno != errno.ELOOP or not os.path.islink(full):
                raise
    if fd is None:
        if os.path.islink(full):
            target = os.path.realpath(full)
            if not os.path.exists(target):
                raise BadImage("broken_symlink", f"points to {printable_name(os.readlink(full))}, which does not exist")
            if os.path.commonpath([data_root_real, target]) != data_root_real:
                raise BadImage("symlink_outside_root", f"points to {printable_name(target)}, outside the data root {printable_name(data_root_real)}")
        fd = os.open(full, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadImage("not_a_regular_file", f"file type {stat.filemode(st.st_mode)[0]!r} (device, pipe or socket) is not read")
        if st.st_size == 0:
            raise BadImage("empty_file", "0 bytes")
        if st.st_size > max_file_bytes:
            raise BadImage("file_too_large", f"{st.st_size} bytes > {max_file_bytes}")
        # Up to one byte more than stat says, to notice a file that grew; not
        # max_file_bytes + 1: that allocates (and frees) a buffer that large per file.
        want = st.st_size + 1
        data = os.read(fd, want)
        while 0 < len(data) < st.st_size and (more := os.read(fd, want - len(data))):  # a short read (over 2 GB, a signal)
            data += more
        return data
    finally:
        os.close(fd)


def _iter_arrays(images: np.ndarray, prefix: str, scenario: Scenario, max_pixels: int) -> Iterator[Item]:
    for i in range(len(images)):
        row = np.ascontiguousarray(images[i])
        try:
            out: Decoded | BadImage = decode_array(row, scenario, max_pixels)
        except BadImage as bad:
            out = bad
        except Exception as e:  # noqa: BLE001
            out = classify_error(e)
        yield f"{prefix}#{i}", sha256_bytes(row.tobytes()), out


def _load_npz(path: Path, key: str, scenario: Scenario) -> np.ndarray:
    """The uint8 ``(N, H, W[, C])`` array ``key`` of an ``.npz`` source, loaded without
    pickle; :class:`SourceError` (saying how to fix the file) for anything else."""
    where = f"scenario {scenario.name}: npz source {path}"
    if not path.is_file():
        raise SourceError(f"{where} does not exist; put the archive there or fix data.path in {_scenario_file(scenario)}")
    hint = f"re-create it with np.savez(path, {key}=uint8_images)"
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - BadZipFile, pickle refusal, zlib/OS errors...
        raise SourceError(f"{where} cannot be read as an .npz archive without pickle ({type(e).__name__}: {e}); {hint}") from None
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise SourceError(f"{where} is a single .npy array, not an .npz archive; {hint}")
    try:
        if key not in obj.files:
            raise SourceError(f"{where} has no array {key!r} (it has {sorted(obj.files)}); set data.npz_key in {_scenario_file(scenario)}")
        arr = obj[key]
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            why = "holds Python objects, which only pickle could load (refused: unpickling can run code)"
        else:
            why = "is damaged (a checksum or decompression error)"
        raise SourceError(f"{where}: array {key!r} {why} ({type(e).__name__}: {e}); {hint}") from None
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
        raise SourceError(
            f"{where}: array {key!r} is {arr.dtype} with shape {arr.shape}; expected uint8 (N, H, W) or (N, H, W, C) "
            f"with C in 1, 3, 4 (MedMNIST layout); {fix}"
        )
    return arr
