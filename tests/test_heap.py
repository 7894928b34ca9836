"""``pipelines.heap.reuse_freed_memory``: batch temporaries reuse the pages of the last
batch instead of faulting fresh ones in (what the decode and compare workers rely on)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from pipelines.heap import reuse_freed_memory
    assert reuse_freed_memory()
def batch():  # one block's worth of temporaries, 0.25-3 MB each, then freed
    x = np.ones((64, 32, 32, 3), np.float32)
    y = x * 2.0
    z = y.astype(np.float64) + 1.0
    return float(z[0, 0, 0, 0])
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_temporaries_reuse_freed_pages():
    plain, reused = faults("plain"), faults("reuse")
    # 200 batches of ~4.7 MB of temporaries: glibc's defaults fault most pages in again
    # for every batch; with the settings, the pages stay mapped after the first one.
    assert plain > 20_000, plain
    assert reused < plain / 20, (reused, plain)
