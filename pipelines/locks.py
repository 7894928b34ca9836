"""One writer per scenario, whichever entry point started it (Dagster run, schedule,
sensor, ``dvc repro``, the stage command): the per-scenario file lock, the wait for a
running DVC command, and the clean-up of temporary files a killed writer left."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipelines.paths import ScenarioPaths


def remove_stale_temp_files(paths: ScenarioPaths) -> list[Path]:
    """Temporary files (``.<name>.*.tmp``) that a killed writer left in the scenario's
    output folders. Only called with the scenario lock held, when no writer of this
    scenario is alive, so every such file is debris: removed, never read, and never
    recorded by DVC as part of an output."""
    removed = []
    for d in (paths.ingested, paths.validated, paths.augmented, paths.ruler, paths.model, paths.model / "checkpoints", paths.evaluation):
        removed += [p for p in d.glob(".*.tmp") if p.is_file()] if d.is_dir() else []
    removed += [p for p in paths.metrics.parent.glob(f".{paths.metrics.name}.*.tmp") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


@contextmanager
def scenario_lock(paths: ScenarioPaths) -> Iterator[None]:
    """One writer per scenario at a time, whichever entry point (UI, schedule, sensor,
    dvc repro) started it: an exclusive flock on ``<data>/<scenario>/.lock``."""
    lock = paths.roots.data / paths.name / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            remove_stale_temp_files(paths)
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextmanager
def step_lock(paths: ScenarioPaths, base: Path, *, poll_s: float = 1.0, log=None) -> Iterator[None]:
    """The scenario lock, taken only while no DVC command runs in the project at ``base``.

    A ``dvc repro`` records a stage's outputs after the stage's process has exited (and
    released the scenario lock); a step that rewrote them in between would make DVC
    record, or fail on, half of another run. So a step outside DVC waits until DVC is
    idle, checked while holding the scenario lock (a ``dvc repro`` that starts later
    then waits for this step on the scenario lock). Inside a DVC stage (``DVC_STAGE``
    set) the check is skipped: that DVC command is the one holding its lock."""
    from pipelines.dvcio import dvc_busy

    waited = False
    while True:
        with scenario_lock(paths):
            if os.environ.get("DVC_STAGE") or not dvc_busy(base):
                yield
                return
        if not waited and log is not None:
            log(f"{paths.name}: a DVC command is running in {base}; waiting for it to finish")
        waited = True
        time.sleep(poll_s)
