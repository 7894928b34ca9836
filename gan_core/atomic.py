"""Atomic file writes: a reader sees the old file or the whole new one, never half of
one, also after a crash (temp file in the same directory, fsync, rename, fsync of the
directory). Standard library only, so data steps use it without importing torch."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_writer(path: str | os.PathLike[str], size_hint: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, so that readers see the old file or the
    whole new one: a temporary file beside it (mode 0644), fsynced, renamed over
    ``path`` when the block ends without an error, then the directory fsynced. On an
    error the temporary file is removed and ``path`` is untouched; a full disk is an
    ``OSError`` that names the file (``size_hint`` bytes) and says so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outputs from other users of a shared store
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            size = f" ({size_hint:,} bytes)" if size_hint is not None else ""
            raise OSError(e.errno, f"cannot write {path}{size}: {e.strerror}; the previous file, if any, is unchanged. Free space on that device or write elsewhere") from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one
    (see :func:`atomic_writer`)."""
    with atomic_writer(path, len(data)) as f:
        f.write(data)
    return Path(path)
