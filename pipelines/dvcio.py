"""What the pipeline needs from DVC, without importing it (DVC lives in its own tool
environment, ``.dvc-venv/``, because its ``antlr4`` pin breaks dagster):

- :func:`dvc_hash` computes the hash DVC records in ``dvc.lock`` for a file or a
  directory (DVC 3 ``md5``; a directory is the md5 of its sorted listing + ``.dir``),
  so Dagster's data versions and DVC's lineage are the same numbers;
- :func:`stage_outs` names the outputs of a stage (from ``pipelines/registry.py``, the
  table ``dvc.yaml`` is generated from);
- :func:`record_stage` runs ``dvc commit`` for ``<step>@<scenario>`` after a Dagster
  materialization, waiting while a ``dvc repro`` holds DVC's lock;
- :func:`read_lock` reads ``dvc.lock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.registry import STEPS

DVC_ENV_VAR = "SCENARIO_GAN_DVC"  # path of the dvc executable, or "off"
_CHUNK = 1 << 20


def stage_name(step: str, scenario: str) -> str:
    return f"{step}@{scenario}"


def stage_outs(step: str, scenario: str, base: Path) -> list[Path]:
    """The outputs ``dvc.yaml`` declares for ``<step>@<scenario>`` (from the step registry)."""
    return STEPS[step].output_paths(scenario, base)


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def dvc_hash(path: str | os.PathLike[str]) -> str:
    """The md5 DVC 3 records for ``path``: the file's md5, or for a directory the md5 of
    ``json.dumps(sorted [{"md5", "relpath"}], sort_keys=True)`` followed by ``.dir``."""
    path = Path(path)
    if path.is_file():
        return _md5_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: nothing to hash (the step has not written it)")
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in files:
            full = Path(root) / f
            entries.append({"md5": _md5_file(full), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def data_version(step: str, scenario: str, base: Path) -> str:
    """The Dagster data version of a step: DVC's hash of its first declared output."""
    return dvc_hash(stage_outs(step, scenario, base)[0])


def find_dvc(base: Path) -> str | None:
    """The dvc executable: ``$SCENARIO_GAN_DVC`` ("off" disables), else the project's
    ``.dvc-venv/bin/dvc``, else ``dvc`` on PATH."""
    env = os.environ.get(DVC_ENV_VAR)
    if env:
        return None if env.lower() == "off" else env
    local = base / ".dvc-venv" / "bin" / "dvc"
    if local.is_file():
        return str(local)
    return shutil.which("dvc")


@dataclass
class RecordResult:
    recorded: bool
    detail: str


def record_stage(step: str, scenario: str, base: Path, *, also: tuple[str, ...] = (), timeout_s: float = 3600, poll_s: float = 1.0) -> RecordResult:
    """Record the outputs of ``<step>@<scenario>`` in ``dvc.lock`` (``dvc commit``) after a
    materialization outside DVC, so ``dvc status`` agrees with what Dagster wrote.

    Skipped (not an error) when ``base`` is not a DVC project with a ``dvc.yaml`` or no
    dvc executable is found; waits while a ``dvc repro`` is at work (:func:`dvc_busy`,
    then ``--wait-for-lock``) and retries when DVC's locks were taken in between.
    ``also``: ``.dvc`` files committed in the same command, e.g. the raw folder's
    ``raw.dvc`` after an ingestion of new files, so that ``dvc status`` stays clean.
    Raises :class:`RuntimeError` naming the command when ``dvc commit`` fails."""
    if os.environ.get("DVC_STAGE"):
        return RecordResult(False, "running inside a DVC stage: DVC records it")
    if not (base / ".dvc").is_dir() or not (base / "dvc.yaml").is_file():
        return RecordResult(False, f"{base} is not a DVC project (no .dvc/ or dvc.yaml)")
    dvc = find_dvc(base)
    if dvc is None:
        return RecordResult(False, f"no dvc executable (create .dvc-venv/ as the README says, or set {DVC_ENV_VAR})")
    stage = stage_name(step, scenario)
    cmd = [dvc, "--wait-for-lock", "commit", "--force", *also, stage]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    deadline = time.monotonic() + timeout_s
    while True:
        while dvc_busy(base) and time.monotonic() < deadline:  # a dvc repro is at work: wait
            time.sleep(poll_s)
        p = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=timeout_s)
        if p.returncode == 0:
            return RecordResult(True, f"dvc commit {' '.join([*also, stage])}")
        msg = (p.stderr or p.stdout).strip()
        # DVC started again between our check and the commit (its locks): retry.
        if time.monotonic() < deadline and any(w in msg.lower() for w in ("lock", "busy", "blocked", "being used")):
            time.sleep(poll_s)
            continue
        raise RuntimeError(f"`{' '.join(cmd)}` in {base} failed ({p.returncode}): {msg[-2000:]}")


def _rwlock_holders(base: Path) -> list[int]:
    """PIDs of live processes with entries in DVC's ``.dvc/tmp/rwlock``: a stage being
    reproduced holds them from its start until its outputs are recorded, including
    while its command runs (when DVC releases the repository lock)."""
    try:
        data = json.loads((base / ".dvc" / "tmp" / "rwlock").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    infos = list((data.get("write") or {}).values()) + [i for lst in (data.get("read") or {}).values() for i in lst]
    live = []
    for info in infos:
        pid = info.get("pid") if isinstance(info, dict) else None
        if isinstance(pid, int) and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            live.append(pid)
    return live


def dvc_busy(base: Path) -> bool:
    """Whether a DVC command (``dvc repro``, ``dvc exp run``, ``dvc commit``...) is at work
    in the project at ``base``: it holds the repository lock, or (while a stage's command
    runs, when DVC releases that lock) has live entries in ``.dvc/tmp/rwlock``. The lock
    is read from ``/proc/locks``, so asking never takes it (a probe with flock could make
    a starting ``dvc repro`` fail); where ``/proc/locks`` is missing, a non-blocking
    flock probe is used."""
    if _rwlock_holders(base):
        return True
    lock = base / ".dvc" / "tmp" / "lock"
    try:
        st = lock.stat()
    except FileNotFoundError:
        return False
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        import fcntl

        with open(lock, "a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return False
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in text.splitlines():
        parts = line.split()
        for field in parts:
            bits = field.split(":")
            if len(bits) == 3 and all(bits):
                try:
                    if (int(bits[0], 16), int(bits[1], 16), int(bits[2])) == want:
                        return True
                except ValueError:
                    pass
    return False


def read_lock(base: Path) -> dict[str, Any]:
    """The stages of ``dvc.lock`` ({} when there is none yet)."""
    f = base / "dvc.lock"
    if not f.is_file():
        return {}
    return (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("stages", {}) or {}


def tracking_file(path: Path) -> Path | None:
    """The ``.dvc`` file that tracks ``path`` (``dvc add``), if there is one."""
    f = path.with_name(path.name + ".dvc")
    return f if f.is_file() else None


def processed_hash(base: Path, step: str, scenario: str, dep: Path) -> str | None:
    """The hash ``dvc.lock`` records for the dependency ``dep`` of ``<step>@<scenario>``:
    the version of that input the stage last ran on (None: not recorded)."""
    try:
        rel = dep.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return None
    for d in (read_lock(base).get(stage_name(step, scenario)) or {}).get("deps") or []:
        if d.get("path") == rel:
            return d.get("md5")
    return None
