"""File helpers every step uses: atomic writes, sha256, JSON bytes, and the two data
files steps hand to each other (the ``images/`` dataset folder and ``table.csv``).

    from pipelines.io import atomic_write, json_bytes, load_images, read_table

- :func:`atomic_write` writes through :func:`gan_core.atomic.atomic_write_bytes`
  (temp file, fsync, rename; standard library only, no torch);
- :func:`json_bytes` is the one JSON layout of step outputs (indented, sorted keys,
  trailing newline), so reruns give byte-identical files;
- :func:`npz_bytes` / :func:`write_images_npz` write ``.npz`` archives with fixed zip
  timestamps (``np.savez`` stamps the current time into every entry); every archive is
  plain arrays, read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gan_core.atomic import atomic_write_bytes

IMAGES_KEY = "images"
"""The array of uint8 (N, H, W, C) images in an ``.npz``."""
IMAGES_DIR = "images"
"""The dataset folder (:mod:`gan_core.shards`) each data step writes its images to."""
LEGACY_IMAGES_FILE = "images.npz"
"""Where steps kept their images before the sharded folder (removed when rewritten)."""
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one;
    a full disk is an ``OSError`` naming the file and the previous file stays as it was."""
    return atomic_write_bytes(path, data)


def json_bytes(obj: Any, *, ensure_ascii: bool = False) -> bytes:
    """``obj`` as UTF-8 JSON: indented by 2, keys sorted, one trailing newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=ensure_ascii) + "\n").encode("utf-8")


VALIDATION_SUMMARY_FILE = "summary.json"
"""``validated/report.json`` without its long lists: each result's first failing files and
values and the first set-aside files (:mod:`pipelines.steps.validate`), for the readers
that show or judge a validation (the Dagster asset and its checks, augmentation, the
model card), whose memory must not grow with the failing rows. ``report.json`` keeps
every one."""


def validation_summary_path(validated: Path) -> Path:
    """The file that says what a validation found: ``validated/summary.json``, or
    ``report.json`` for a validation written before there was a summary (and when
    neither exists: ``report.json``, which validation writes last)."""
    report, summary = validated / "report.json", validated / VALIDATION_SUMMARY_FILE
    return summary if summary.is_file() and report.is_file() else report


def read_validation_summary(validated: Path) -> dict[str, Any] | None:
    """:func:`validation_summary_path`'s JSON; None when validation has not finished
    (no ``report.json``)."""
    path = validation_summary_path(validated)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class Streamed(list):
    """A list :func:`write_json` writes item by item from ``items`` (anything iterable
    again, e.g. a :class:`pipelines.spill.JsonLines` of ``n`` values) without holding it.
    Only for :func:`write_json`: to everything else it is an empty list of length ``n``."""

    def __init__(self, items: Any, n: int):
        super().__init__()
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.items)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`json_bytes` of ``obj`` written atomically, encoded and written a piece at a
    time, so that :class:`Streamed` lists inside ``obj`` are never all in memory. The same
    bytes as ``atomic_write(path, json_bytes(obj))``."""
    from gan_core.atomic import atomic_writer

    encoder = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False)
    with atomic_writer(path) as dst:
        pieces: list[str] = []
        size = 0
        for piece in encoder.iterencode(obj):  # with an indent, the pure-Python encoder: it iterates lists
            pieces.append(piece)
            size += len(piece)
            if size >= 1 << 16:
                dst.write("".join(pieces).encode("utf-8"))
                pieces, size = [], 0
        pieces.append("\n")
        dst.write("".join(pieces).encode("utf-8"))
    return Path(path)


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (same layout as ``np.savez``: stored, no pickle) with fixed zip
    timestamps, so the same arrays always give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            with zf.open(_npy_entry(key), "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_images_npz(path: Path, images: list[np.ndarray], key: str = IMAGES_KEY) -> Path:
    """Atomically write ``images`` (equal-shape uint8 arrays) as one ``(N, ...)`` array
    under ``key`` in an ``.npz``, streamed to disk one image at a time: the same bytes as
    ``npz_bytes({key: np.stack(images)})`` without a stacked copy or an in-memory archive.
    Written through :func:`gan_core.atomic.atomic_writer` (temp file, fsync, rename;
    a full disk is an ``OSError`` naming the file, the previous file stays as it was)."""
    if not images:
        raise ValueError("write_images_npz needs at least one image")
    first = images[0]
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": (len(images), *first.shape)}
    from gan_core.atomic import atomic_writer

    with atomic_writer(path, len(images) * first.nbytes) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            with zf.open(_npy_entry(key), "w", force_zip64=True) as entry:
                np.lib.format.write_array_header_1_0(entry, header)
                for im in images:
                    if im.shape != first.shape or im.dtype != first.dtype:
                        raise ValueError(f"write_images_npz: image of {im.dtype} {im.shape} among {first.dtype} {first.shape}")
                    entry.write(np.ascontiguousarray(im).data)
    return path


def _npy_entry(key: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def load_images(path: str | os.PathLike[str]) -> np.ndarray:
    """All images of a dataset folder (:mod:`gan_core.shards`) or an ``.npz`` (no
    pickle) as one uint8 (N, H, W, C) array; large datasets use
    :func:`gan_core.shards.open_images` to read lazily instead."""
    if Path(path).is_dir():
        from gan_core.shards import open_images

        return open_images(path).load()
    with np.load(path, allow_pickle=False) as npz:
        return npz[IMAGES_KEY]


TABLE_DTYPES = {"file": str, "source_sha256": str, "sha256": str, "orig_mode": str, "phash": str}


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None, chunksize: int | None = None):
    """Read ``table.csv`` with the column types of the contract
    (:data:`pipelines.steps.ingest.TABLE_COLUMNS`): file names such as ``NA`` stay
    strings; ``duplicate_of`` and ``near_duplicate_of`` are nullable integers.
    ``columns`` reads only those (memory: their bytes per row, not the whole row's);
    ``chunksize`` returns an iterator of DataFrames of that many rows."""
    import pandas as pd

    def typed(df):
        for col in ("duplicate_of", "near_duplicate_of"):
            if col in df.columns:
                df[col] = df[col].astype("Int64")
        return df

    read = pd.read_csv(
        path,
        usecols=columns,
        dtype={k: v for k, v in TABLE_DTYPES.items() if columns is None or k in columns},
        keep_default_na=False,
        na_values={"duplicate_of": [""], "near_duplicate_of": [""]},
        chunksize=chunksize,
    )
    if chunksize is None:
        return typed(read)
    return (typed(part) for part in read)


def table_columns(path: str | os.PathLike[str]) -> list[str]:
    """The header of ``table.csv``."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])
