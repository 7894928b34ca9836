"""Helpers for the browser tests: start ``python -m assets.ui`` the way users do and
always stop it; a tiny copy of a shipped scenario; a folder for screenshots."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path



REPO = Path(__file__).resolve().parents[1]
# The flags verified with Debian's Chromium (shared/DESIGN.md, "Browser tests").
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> None:
    # Own process group, so teardown reaches dagster dev, the webserver, the daemon,
    # the code servers and any run worker. SIGINT back to default: a shell that starts
    # pytest in the background leaves it ignored, and dagster maps SIGTERM to the SIGINT
    # handler, so an inherited "ignore" would make the server ignore SIGTERM too.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class DagsterUI:
    url: str
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"


def start_ui(home: Path, log: Path, *, timeout: float = 180.0, cwd: Path = REPO) -> DagsterUI:
    """``python -m assets.ui --port <free> --home <home>``; returns once /server_info
    answers. Raises (after stopping it) if it exits or does not answer in time."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assets.ui", "--port", str(port), "--home", str(home)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"python -m assets.ui exited with {proc.returncode}:\n{ui.log_tail()}")
            try:
                with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as r:
                    if r.status == 200:
                        return ui
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dagster UI did not answer on {ui.url}/server_info within {timeout:.0f} s:\n{ui.log_tail()}")
            time.sleep(1)
    except BaseException:
        stop_ui(ui)
        raise


def stop_ui(ui: DagsterUI, *, grace: float = 30.0) -> None:
    """SIGTERM to the whole process group (dagster dev shuts its services down in a few
    seconds), then SIGKILL to whatever is left in the group."""
    pgid = ui.proc.pid  # setsid() made the child the leader of its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        ui.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        ui.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class Artifacts:
    """Numbered screenshots (and, on failure, the page's HTML) in one folder."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def shot(self, page, name: str, **kw) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), **kw)
        return path

    def dump(self, page, name: str) -> None:
        try:
            self.shot(page, name, full_page=True)
        except Exception as e:  # noqa: BLE001 - best effort on the way out of a failure
            (self.dir / f"{name}.screenshot-error.txt").write_text(repr(e))
        try:
            (self.dir / f"{name}.html").write_text(page.content())
        except Exception as e:  # noqa: BLE001
            (self.dir / f"{name}.html-error.txt").write_text(repr(e))
