"""Image datasets on disk as content-addressed shards, written in a stream and read lazily.

    from gan_core.shards import ShardWriter, open_images
    with ShardWriter(out_dir / "images", image_shape=(32, 32, 3)) as w:   # index.json last
        for chunk in chunks:
            w.add(chunk)                       # uint8 (n, H, W, C); memory: one shard
    images = open_images(out_dir / "images")   # nothing read yet
    batch = images.take([5, 17, 3])            # uint8 (3, H, W, C), positional reads
    for block in images.chunks(4096): ...      # sequential, one block in memory

Layout of a dataset folder (what DVC versions, file by file)::

    images/index.json          format, dtype, shape, the shards in order, extra columns
    images/<sha256[:20]>.npy   one shard: a plain uint8 (n, H, W, C) .npy (np.load(...,
                               mmap_mode="r") maps it); the name is its content's hash
    images/<sha256[:20]>.npy   an extra int64 column (e.g. augment's source_index)

**Shard boundaries are content-defined**: a shard ends after an image whose pixel
sha256 falls on a boundary value (one image in :attr:`ShardWriter.target_rows`, with a
minimum of a quarter and a maximum of four times that), so the boundaries follow the
images, not their positions. Adding, removing or changing a few images rewrites only the
shards that hold them (and a neighbour at most); every other shard keeps its bytes and
its name, so ``dvc push`` uploads only the new ones and the cache keeps one copy of each.
Measured in docs/BENCHMARKS.md ("Scale").

**Atomic**: shards are written (temp file, fsync, rename) under names the current
``index.json`` does not use; ``index.json`` is replaced last, and only then are shards it
no longer lists removed. A crash or a full disk before that leaves the previous dataset
whole (:meth:`ShardWriter.abort` removes the new shards). ``index.json`` is written with
sorted keys, so the same images always give the same bytes; :func:`dataset_digest` is its
sha256 and so identifies the whole dataset.

**Lazy reading** uses positional reads (``os.preadv``) into the caller's array: a batch
of rows costs one read per contiguous run, the process's memory holds only what it asked
for, and the page cache (not the process) holds what the disk returned.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes, atomic_writer

FORMAT = "scenario-gan.shards/1"
INDEX_FILE = "index.json"
TARGET_SHARD_BYTES = 8 << 20
"""Average shard size the boundaries aim at (8 MiB: 2,730 images of 32x32 RGB, 170 of
128x128 RGB); a shard holds between a quarter and four times that."""
MAX_OPEN_FILES = 128
"""Shard files a reader keeps open at once (least recently used closed first)."""


class ShardError(RuntimeError):
    """A dataset folder is missing, incomplete or inconsistent (names the file)."""


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def target_rows(image_shape: Sequence[int], target_bytes: int = TARGET_SHARD_BYTES) -> int:
    """Average images per shard for images of ``image_shape`` (uint8)."""
    return int(min(65536, max(64, target_bytes // max(1, int(np.prod(image_shape))))))


class ShardWriter:
    """Stream equal-shape uint8 images into a dataset folder (module docstring).

    ``add`` takes one image ``(H, W, C)`` or a block ``(n, H, W, C)``; ``digests`` (the
    images' pixel sha256 hex, when the caller has them) saves hashing them again.
    ``columns`` given to :meth:`close` are int64 arrays with one value per image, or
    functions that return those values in chunks (never all in memory).
    Used as a context manager, an exception aborts (removes the new shards) and a normal
    exit closes (writes ``index.json``)."""

    def __init__(self, folder: str | os.PathLike[str], image_shape: Sequence[int], *, target: int | None = None, check_space: bool = True):
        self.folder = Path(folder)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.row_bytes = int(np.prod(self.image_shape))
        self.target = target or target_rows(self.image_shape)
        self.min_rows, self.max_rows = max(1, self.target // 4), self.target * 4
        self.check_space = check_space
        self.shards: list[dict[str, Any]] = []
        self.n = 0
        # One preallocated shard buffer (the largest shard): no per-image arrays, no stacked copy.
        self._buf = np.empty((self.max_rows, *self.image_shape), np.uint8)
        self._buf_rows = 0
        self._new: list[Path] = []
        self._closed = self._published = False
        self.folder.mkdir(parents=True, exist_ok=True)
        self._in_use = set(_listed_files(self.folder))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    def add(self, images: np.ndarray, digests: Sequence[str] | None = None) -> None:
        a = np.asarray(images)
        if a.shape == self.image_shape:
            a = a[None]
        if a.dtype != np.uint8 or a.shape[1:] != self.image_shape:
            raise ValueError(f"{self.folder}: got images of {a.dtype} {a.shape[1:]}, the dataset holds uint8 {self.image_shape}")
        ds = digests if digests is not None else [hashlib.sha256(np.ascontiguousarray(row).data).hexdigest() for row in a]
        # A shard ends after an image whose digest is 0 modulo the target (content-defined
        # boundaries) once it holds min_rows, or when it holds max_rows: found per block,
        # copied in slices.
        cuts = np.flatnonzero([int(d[:8], 16) % self.target == 0 for d in ds])
        start, n = 0, len(a)
        while start < n:
            first = start + max(0, self.min_rows - self._buf_rows - 1)  # the first row that may end a shard
            stop = min(n, start + self.max_rows - self._buf_rows)
            at = int(np.searchsorted(cuts, first))
            hit = at < len(cuts) and int(cuts[at]) < stop
            end = int(cuts[at]) + 1 if hit else stop
            self._buf[self._buf_rows : self._buf_rows + end - start] = a[start:end]
            self._buf_rows += end - start
            self.n += end - start
            if hit or self._buf_rows >= self.max_rows:
                self._flush()
            start = end

    def _write(self, arr: np.ndarray) -> dict[str, Any]:
        """Write ``arr`` as ``<sha256[:20]>.npy`` (header and data written from where they
        are, hashed without a copy); an existing file of that name and size is kept."""
        header = _npy_header(arr.shape, arr.dtype)
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        h = hashlib.sha256(header)
        h.update(data)
        digest = h.hexdigest()
        name, size = digest[:20] + ".npy", len(header) + len(data)
        path = self._target(name, size)
        if path is not None:
            with atomic_writer(path, size) as fh:
                fh.write(header)
                fh.write(data)
        return {"file": name, "sha256": digest, "bytes": size}

    def _target(self, name: str, size: int) -> Path | None:
        """Where to write a file of ``size`` bytes named ``name``, or None when a file of
        that name and size is there already (content-addressed: the same bytes). Refuses
        before writing when the disk cannot hold it."""
        path = self.folder / name
        if path.is_file() and path.stat().st_size == size:
            return None
        if self.check_space:
            import shutil

            free = shutil.disk_usage(self.folder).free
            if free < size + (1 << 20):
                raise OSError(28, f"No space left on device: {self.folder} needs {size:,} bytes for {name}, {free:,} free")
        if name not in self._in_use:
            self._new.append(path)
        return path

    def _write_chunks(self, key: str, chunks: Any) -> dict[str, Any]:
        """:meth:`_write` of an int64 column given as a function that returns its values in
        chunks (called twice: once to hash, once to write), so the whole column is never
        in memory: the same file, byte for byte, as from the array."""
        header = _npy_header((self.n,), np.dtype(np.int64))
        h, count = hashlib.sha256(header), 0
        for part in chunks():
            part = np.ascontiguousarray(part, dtype=np.int64)
            h.update(memoryview(part).cast("B"))
            count += len(part)
        if count != self.n:
            raise ValueError(f"{self.folder}: column {key!r} has {count} values, expected {self.n}")
        digest = h.hexdigest()
        name, size = digest[:20] + ".npy", len(header) + 8 * self.n
        path = self._target(name, size)
        if path is not None:
            with atomic_writer(path, size) as fh:
                fh.write(header)
                for part in chunks():
                    fh.write(memoryview(np.ascontiguousarray(part, dtype=np.int64)).cast("B"))
        return {"file": name, "sha256": digest, "bytes": size}

    def _flush(self) -> None:
        if not self._buf_rows:
            return
        entry = self._write(self._buf[: self._buf_rows])
        entry["rows"] = self._buf_rows
        self._buf_rows = 0
        self.shards.append(entry)

    def reader(self) -> ShardedImages:
        """The images added so far, readable before :meth:`close` publishes them (for a
        second pass over the data, e.g. comparing images with each other)."""
        self._flush()
        index = {"format": FORMAT, "dtype": "uint8", "shape": [self.n, *self.image_shape], "shards": list(self.shards), "columns": {}}
        return ShardedImages(self.folder, None, index)

    def close(self, columns: dict[str, np.ndarray] | None = None, meta: dict[str, Any] | None = None) -> Path:
        """Write the last shard, the columns and (last) ``index.json``; then remove the
        shards the previous index listed and this one does not. Returns the index path."""
        self._flush()
        if self.n == 0:
            raise ValueError(f"{self.folder}: a dataset needs at least one image")
        cols = {}
        for key, values in sorted((columns or {}).items()):
            if callable(values):
                cols[key] = self._write_chunks(key, values)
                continue
            v = np.asarray(values, dtype=np.int64)
            if v.shape != (self.n,):
                raise ValueError(f"{self.folder}: column {key!r} has shape {v.shape}, expected ({self.n},)")
            cols[key] = self._write(v)
        index = {
            "format": FORMAT,
            "dtype": "uint8",
            "shape": [self.n, *self.image_shape],
            "shards": self.shards,
            "columns": cols,
            "boundaries": {"target_rows": self.target, "min_rows": self.min_rows, "max_rows": self.max_rows, "rule": "after an image whose pixel sha256 (first 8 hex digits) is divisible by target_rows"},
            **({"meta": meta} if meta else {}),
        }
        data = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
        atomic_write_bytes(self.folder / INDEX_FILE, data)
        self._closed = self._published = True
        self._buf = np.empty((0, *self.image_shape), np.uint8)  # release the shard buffer
        keep = {s["file"] for s in self.shards} | {c["file"] for c in cols.values()} | {INDEX_FILE}
        for p in self.folder.iterdir():
            if p.name not in keep and p.suffix == ".npy":
                p.unlink(missing_ok=True)
        return self.folder / INDEX_FILE

    def abort(self) -> None:
        """Remove the shards this writer added; the previous dataset stays as it was.
        Does nothing once :meth:`close` has published the new index."""
        if self._published:
            return
        for p in self._new:
            p.unlink(missing_ok=True)
        self._new.clear()
        self._buf_rows = 0
        self._closed = True


def _listed_files(folder: Path) -> list[str]:
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
        return [s["file"] for s in index.get("shards", [])] + [c["file"] for c in index.get("columns", {}).values()]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_images(folder: str | os.PathLike[str], images: np.ndarray | Iterable[np.ndarray], *, image_shape: Sequence[int] | None = None, columns: dict[str, np.ndarray] | None = None, target: int | None = None) -> Path:
    """Write a whole dataset from an array or an iterable of blocks/images (``target``:
    average images per shard, default from :data:`TARGET_SHARD_BYTES`)."""
    if isinstance(images, np.ndarray):
        image_shape, blocks = images.shape[1:], [images]
    else:
        blocks = images
    it = iter(blocks)
    if image_shape is None:
        first = np.asarray(next(it))
        image_shape = first.shape[1:] if first.ndim == 4 else first.shape
        it = itertools.chain([first], it)
    with ShardWriter(folder, image_shape, target=target) as w:
        for b in it:
            w.add(b)
        return w.close(columns)


def copy_dataset(src: str | os.PathLike[str], dst: str | os.PathLike[str], rows: Sequence[int] | np.ndarray | None = None, *, chunk: int = 8192) -> Path:
    """Write the dataset in ``src`` (or only its ``rows``, in that order) to ``dst``.
    A whole copy copies the shard files as they are (files ``dst`` already holds with the
    same name and size are kept); a subset is streamed through a :class:`ShardWriter`,
    ``chunk`` images at a time. ``index.json`` last either way."""
    src, dst = Path(src), Path(dst)
    images = open_images(src)
    if rows is None:
        dst.mkdir(parents=True, exist_ok=True)
        index = images._index
        names = [s["file"] for s in index["shards"]] + [c["file"] for c in index.get("columns", {}).values()]
        for name in names:
            target = dst / name
            if not (target.is_file() and target.stat().st_size == (src / name).stat().st_size):
                import shutil

                with open(src / name, "rb") as fh, atomic_writer(target, (src / name).stat().st_size) as out:
                    shutil.copyfileobj(fh, out, 1 << 20)
        atomic_write_bytes(dst / INDEX_FILE, (src / INDEX_FILE).read_bytes())
        keep = set(names) | {INDEX_FILE}
        for p in dst.iterdir():
            if p.name not in keep and p.suffix == ".npy":
                p.unlink(missing_ok=True)
        return dst / INDEX_FILE
    sub = images.subset(rows)
    with ShardWriter(dst, images.image_shape) as w:
        for block in sub.chunks(chunk):
            w.add(block)
        return w.close()


def remove_dataset(folder: str | os.PathLike[str]) -> None:
    """Remove a dataset folder (index first, so a reader never sees it half removed)."""
    import shutil

    folder = Path(folder)
    (folder / INDEX_FILE).unlink(missing_ok=True)
    if folder.is_dir():
        shutil.rmtree(folder)


def dataset_digest(folder: str | os.PathLike[str]) -> str:
    """sha256 of the dataset's ``index.json`` (which lists every shard's sha256)."""
    path = Path(folder) / INDEX_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ShardError(f"{path} is missing: the dataset in {folder} was not written completely; rerun the step that writes it") from None


class ShardedImages:
    """A read-only, lazily read uint8 ``(N, H, W, C)`` dataset (or a row subset of one).

    Behaves like a sequence of images: ``len``, ``shape``, ``dtype``, ``images[i]`` (one
    image), ``images[a:b]`` / ``images[rows]`` (an array); :meth:`take`,
    :meth:`chunks`, :meth:`subset`, :meth:`load`; ``np.asarray(images)`` loads all."""

    def __init__(self, folder: str | os.PathLike[str], rows: np.ndarray | None = None, _index: dict[str, Any] | None = None):
        self.folder = Path(folder)
        index = _index if _index is not None else _read_index(self.folder)
        self._index = index
        self.image_shape = tuple(index["shape"][1:])
        self.row_bytes = int(np.prod(self.image_shape))
        counts = [int(s["rows"]) for s in index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.total = int(self._starts[-1])
        if self.total != int(index["shape"][0]):
            raise ShardError(f"{self.folder / INDEX_FILE}: shards hold {self.total} images but shape says {index['shape'][0]}; rerun the step that writes it")
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._fds: OrderedDict[int, tuple[int, int]] = OrderedDict()

    # -- sequence protocol
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.total if self.rows is None else len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(f"image {key} of {len(self)}")
            return self.take([i])[0]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.take(key)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.load()
        return a if dtype is None else a.astype(dtype)

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        for fd, _ in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        if hasattr(self, "_fds"):
            self._fds.clear()

    def __getstate__(self) -> dict[str, Any]:  # picklable (DataLoader workers): no file descriptors
        return {"folder": self.folder, "rows": self.rows, "_index": self._index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], state["rows"], state["_index"])

    # -- reading
    def column(self, name: str) -> np.ndarray:
        """An extra int64 column (one value per image of the whole dataset, or of the subset)."""
        entry = self._index.get("columns", {}).get(name)
        if entry is None:
            raise KeyError(f"{self.folder / INDEX_FILE} has no column {name!r} (it has {sorted(self._index.get('columns', {}))})")
        values = np.load(self.folder / entry["file"], allow_pickle=False)
        return values if self.rows is None else values[self.rows]

    def has_column(self, name: str) -> bool:
        return name in self._index.get("columns", {})

    def subset(self, rows: Sequence[int] | np.ndarray) -> ShardedImages:
        """The images at ``rows`` (positions in this view), still lazy."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        base = rows if self.rows is None else self.rows[rows]
        return ShardedImages(self.folder, base, self._index)

    def _fd(self, shard: int) -> tuple[int, int]:
        hit = self._fds.get(shard)
        if hit is not None:
            self._fds.move_to_end(shard)
            return hit
        path = self.folder / self._index["shards"][shard]["file"]
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ShardError(f"{path} is missing although {self.folder / INDEX_FILE} lists it; rerun the step that writes {self.folder}") from None
        with os.fdopen(os.dup(fd), "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(fh)
            offset = fh.tell()
        if tuple(shape) != (self._index["shards"][shard]["rows"], *self.image_shape):
            os.close(fd)
            raise ShardError(f"{path} holds {shape}, the index says {self._index['shards'][shard]['rows']} images of {self.image_shape}; rerun the step that writes {self.folder}")
        self._fds[shard] = (fd, offset)
        if len(self._fds) > MAX_OPEN_FILES:
            _, (old, _) = self._fds.popitem(last=False)
            os.close(old)
        return fd, offset

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images at ``rows`` (positions in this view), in that order: uint8 (k, H, W, C)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        base = rows if self.rows is None else self.rows[rows]
        out = np.empty((len(base), *self.image_shape), np.uint8)
        if not len(base):
            return out
        order = np.argsort(base, kind="stable")
        sorted_rows = base[order]
        buf = out if np.array_equal(order, np.arange(len(order))) else np.empty_like(out)
        flat = memoryview(buf.reshape(len(buf), -1))
        shard_of = np.searchsorted(self._starts, sorted_rows, side="right") - 1
        # runs of consecutive rows within one shard: one read each
        breaks = np.flatnonzero((np.diff(sorted_rows) != 1) | (np.diff(shard_of) != 0)) + 1
        starts = np.r_[0, breaks]
        ends = np.r_[breaks, len(sorted_rows)]
        rb = self.row_bytes
        for a, b in zip(starts.tolist(), ends.tolist()):
            s = int(shard_of[a])
            fd, offset = self._fd(s)
            first = int(sorted_rows[a] - self._starts[s])
            view = flat[a:b].cast("B")
            got = os.preadv(fd, [view], offset + first * rb)
            while got < len(view):  # short reads are legal; finish them
                more = os.preadv(fd, [view[got:]], offset + first * rb + got)
                if more == 0:
                    raise ShardError(f"{self.folder / self._index['shards'][s]['file']} is shorter than its header says; rerun the step that writes {self.folder}")
                got += more
        if buf is not out:
            out[order] = buf
        return out

    def chunks(self, size: int = 4096) -> Iterator[np.ndarray]:
        """The images in order, ``size`` at a time (one block in memory)."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(len(self), start + size)))

    def load(self) -> np.ndarray:
        """Every image of the view as one array (small datasets; large ones use chunks)."""
        return self.take(np.arange(len(self)))


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path} is missing: the dataset in {folder} was not written completely; rerun the step that writes it") from None
    except ValueError as e:
        raise ShardError(f"{path} is not valid JSON ({e}); rerun the step that writes {folder}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("dtype") != "uint8":
        raise ShardError(f"{path}: not a {FORMAT} uint8 dataset; rerun the step that writes {folder}")
    return index


def open_images(folder: str | os.PathLike[str]) -> ShardedImages:
    """The dataset in ``folder``, read lazily (:class:`ShardedImages`)."""
    return ShardedImages(folder)
