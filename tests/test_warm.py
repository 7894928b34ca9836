"""Warm stage processes (assets.warm): a DVC stage's command served by a child forked
from a server that has imported everything writes what a fresh process writes, records
the same in Dagster, exits with the step's status, and a server is only reused by
callers with the same code, interpreter and import-time environment."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets import warm

from .dagster_support import tiny_scenario

ROOT = Path(__file__).parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp"), "SCENARIO_GAN_WARM_IDLE": "60"}
    env.update(extra)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


def dvc_stage(step: str, tmp_path: Path, base: str, env: dict[str, str], name: str = "digits") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "assets.dvc_stage", step, name, "--base-dir", str(tmp_path / base), "--scenarios-dir", str(tmp_path / "scenarios")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def _server_log(tmp_path: Path) -> str:
    logs = list((tmp_path / "tmp").glob(f"scenario-gan-{os.getuid()}/*.log"))
    return "".join(p.read_text() for p in logs)


def _wait_ready(tmp_path: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while "ready:" not in _server_log(tmp_path):
        assert time.monotonic() < deadline, f"no warm server came up: {_server_log(tmp_path)!r}"
        time.sleep(0.5)


def _digest(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_warm_stage_writes_records_and_exits_like_a_fresh_process(tmp_path, monkeypatch):
    tiny_scenario(tmp_path / "scenarios")
    env = _env(tmp_path)
    first = dvc_stage("params", tmp_path, "warm", env)  # finds no server: runs fresh, starts one
    assert first.returncode == 0, first.stderr[-2000:]
    _wait_ready(tmp_path)
    assert "served:" not in _server_log(tmp_path)
    for step in ("ingest", "validate"):
        proc = dvc_stage(step, tmp_path, "warm", env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f'"step": "{step}"' in proc.stdout  # the step's own summary, on the caller's stdout
        assert f"served: {step} digits" in _server_log(tmp_path)

    # The same steps in fresh processes: the same bytes.
    cold = _env(tmp_path, SCENARIO_GAN_WARM="off")
    for step in ("params", "ingest", "validate"):
        assert dvc_stage(step, tmp_path, "cold", cold).returncode == 0
    assert _server_log(tmp_path).count("served:") == 2
    for out in ("data/digits/ingested", "data/digits/validated"):
        assert _digest(tmp_path / "warm" / out) == _digest(tmp_path / "cold" / out), out

    # Recorded in the base directory's Dagster instance, as a DVC stage run fresh is.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "warm" / ".dagster"))
    import dagster as dg

    from pipelines.dvcio import data_version

    with dg.DagsterInstance.get() as instance:
        rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("validated_images"), asset_partitions=["digits"]), limit=1).records[0]
        assert rec.event_log_entry.asset_materialization.tags["dagster/data_version"] == data_version("validate", "digits", tmp_path / "warm")

    # A failing step: its status and message, warm as fresh, and nothing recorded.
    warm_bad = dvc_stage("ingest", tmp_path, "warm", env, name="no_such_scenario")
    cold_bad = dvc_stage("ingest", tmp_path, "cold", cold, name="no_such_scenario")
    assert warm_bad.returncode == cold_bad.returncode == 2
    assert "no_such_scenario" in warm_bad.stderr and warm_bad.stderr.splitlines()[-1] == cold_bad.stderr.splitlines()[-1]
    assert "served: ingest no_such_scenario" in _server_log(tmp_path)

    # SIGTERM to the caller (DVC stopping a stage) ends the forked step too.
    for step in ("augment", "ruler"):
        assert dvc_stage(step, tmp_path, "warm", env).returncode == 0
    scenario = tmp_path / "scenarios" / "digits.yaml"
    scenario.write_text(scenario.read_text().replace("steps: 6", "steps: 1000000"))
    cmd = [sys.executable, "-m", "assets.dvc_stage", "train", "digits", "--base-dir", str(tmp_path / "warm"), "--scenarios-dir", str(tmp_path / "scenarios")]
    caller = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "start at step" not in (line := caller.stderr.readline()):
        assert line and time.monotonic() < deadline, "training did not start"
    caller.terminate()
    assert caller.wait(timeout=60) == 128 + signal.SIGTERM
    served = [line for line in _server_log(tmp_path).splitlines() if line.startswith("served: train digits")]
    assert served and served[-1].endswith(f"-> {128 + signal.SIGTERM}")
    child = int(served[-1].split("(pid ")[1].split(")")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_fingerprint_follows_code_and_import_time_environment(tmp_path, monkeypatch):
    for pkg in ("pipelines", "gan_core", "assets"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DVC_STAGE", "ingest@digits")
    base = warm.fingerprint()
    monkeypatch.setenv("DVC_STAGE", "train@digits")  # differs per stage, read at run time only
    assert warm.fingerprint() == base
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # read when torch is imported
    assert warm.fingerprint() != base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert warm.fingerprint() == base
    os.utime(tmp_path / "gan_core" / "a.py", ns=(1, 1))  # code edited
    assert warm.fingerprint() != base


def test_socket_directory_must_be_private(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    d = warm.socket_dir()
    assert d.parent == tmp_path and (d.stat().st_mode & 0o777) == 0o700
    d.chmod(0o755)
    with pytest.raises(PermissionError, match="closed to others"):
        warm.socket_dir()


def test_switched_off_means_no_server(tmp_path, monkeypatch):
    monkeypatch.setenv(warm.ENV_SWITCH, "off")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert warm.run(["params", "digits"]) is None
    assert not any(tmp_path.iterdir())
