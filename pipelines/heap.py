"""Heap settings for processes that run many small numpy batches (the decode and compare
workers of ingestion).

    from pipelines.heap import reuse_freed_memory
    reuse_freed_memory()        # once, at the start of a worker process

A block of 64 images of 32 x 32 RGB makes temporaries of 0.2-1.5 MB for every feature,
hash and statistic. glibc's malloc serves large requests with ``mmap`` and hands the top
of its heap back to the kernel as soon as more than a few MB are free there, so every
batch faults its temporaries' pages in again: in a decode worker that was a third of
the feature time (docs/BENCHMARKS.md, "Scale"). :func:`reuse_freed_memory` raises both
bounds, so the temporaries come from the heap and the freed pages stay mapped for the
next batch. What a process keeps beyond its live arrays is bounded by
``trim_bytes`` of free heap (64 MB by default). Elsewhere than glibc (macOS, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameters (malloc.h)."""


def reuse_freed_memory(mmap_bytes: int = 16 << 20, trim_bytes: int = 64 << 20) -> bool:
    """Serve requests up to ``mmap_bytes`` from the heap and keep up to ``trim_bytes`` of
    freed heap mapped. True when glibc accepted both settings."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
