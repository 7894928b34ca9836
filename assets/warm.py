"""Warm stage processes: a DVC stage's step forked from a process that has already
imported torch, great-expectations, Dagster and the project, instead of a fresh
interpreter importing them again for every stage.

    python -m assets.dvc_stage train faces       # what dvc.yaml runs: uses it
    SCENARIO_GAN_WARM=off dvc repro              # every stage in a fresh process instead

A ``dvc repro`` of the chain starts seven stage processes, and each used to spend most
of its time importing (``docs/BENCHMARKS.md``, "Stages that start fast"). Now the first
stage that finds no server starts one (``python -m assets.warm serve``, in the
background, its own session) and runs its own step in a fresh process as before; the
server imports everything once and listens on a Unix socket. Later stages send it their
command line, working directory, environment and standard streams (file descriptors over
the socket); it forks a child that runs the step and its Dagster record exactly as
``assets.dvc_stage`` would, writing to the caller's streams, and the caller exits with
the child's status (128 + N when signal N ended it). Ctrl-C or SIGTERM on the caller is
passed on to the child.

What keeps a warm child the same as a fresh process:

- the socket's name is a fingerprint of the interpreter, the installed packages (the
  mtime of ``site-packages``), every source file of ``pipelines/``, ``gan_core/`` and
  ``assets/`` (path, size, mtime) and the environment variables read when libraries
  are imported (thread counts, ``PYTHON*``, ``LD_*``, ...): edit the code or the
  threads and the next stage starts a new server; the old one exits when idle;
- the child takes the caller's working directory, full environment, argv and streams;
  the server itself runs no step, starts no thread and holds no open project file, so
  every child starts from the same state;
- the socket lives in a directory only this user can enter (``$TMPDIR/scenario-gan-<uid>``,
  mode 0700), and the server also refuses a peer of another user (``SO_PEERCRED``).

The server exits after :data:`IDLE_S` seconds with no request and no child running
(``SCENARIO_GAN_WARM_IDLE`` to change). Anything unexpected (no Unix sockets, a
directory that is not ours, a server that does not answer) falls back to a fresh
process, with a warning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ENV_SWITCH = "SCENARIO_GAN_WARM"
IDLE_S = 120.0
START_TIMEOUT_S = 300.0
"""How long a caller waits for a server to start its step before running it fresh."""
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("pipelines", "gan_core", "assets")
_IMPORT_ENV = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "NUMEXPR_", "TORCH", "PYTORCH_", "CUDA_", "PYTHON", "LD_", "SCENARIO_GAN_")
"""Environment variables read at import time (thread pools, paths, allocators): they are
part of the fingerprint, so a caller with other values gets its own server."""
_PRELOAD = ("numpy", "PIL.Image", "cv2", "pandas", "torch", "great_expectations", "albumentations", "sklearn.datasets", "dagster")
_HEADER = struct.Struct(">I")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").lower() not in ("off", "0", "false", "no")


def fingerprint() -> str:
    """What a warm server must share with its caller (see the module docstring)."""
    import sysconfig

    h = hashlib.sha256()
    h.update(f"{sys.executable}\0{sys.version}\0{PROJECT_ROOT}\0".encode())
    for key in ("purelib", "platlib"):
        site = sysconfig.get_paths().get(key)
        if site and os.path.isdir(site):
            h.update(f"{site}\0{os.stat(site).st_mtime_ns}\0".encode())
    for pkg in _PACKAGES:
        for dirpath, dirnames, filenames in os.walk(PROJECT_ROOT / pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, f))
                    h.update(f"{dirpath}/{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    for k in sorted(os.environ):
        if k.startswith(_IMPORT_ENV) and k != ENV_SWITCH:
            h.update(f"{k}={os.environ[k]}\0".encode())
    return h.hexdigest()[:24]


def socket_dir() -> Path:
    """``$TMPDIR/scenario-gan-<uid>``, created 0700; refused unless it is this user's own
    and closed to others."""
    d = Path(tempfile.gettempdir()) / f"scenario-gan-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{d} is not a directory of this user closed to others; remove it")
    return d


@contextmanager
def _address(path: Path):
    """``path`` as a Unix socket address: itself, or where it is longer than the ~100 bytes
    an address holds, the same file through ``/proc/self/fd`` and an open directory."""
    if len(os.fsencode(str(path))) < 100 or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_PATH", 0) | getattr(os, "O_DIRECTORY", 0))
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _send(conn: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(conn, [msg], fds)
        conn.sendall(msg[sent:])
    else:
        conn.sendall(msg)


def _recv(conn: socket.socket, with_fds: bool = False) -> tuple[dict | None, list[int]]:
    fds: list[int] = []
    buf = b""
    while len(buf) < _HEADER.size or len(buf) < _HEADER.size + _HEADER.unpack_from(buf)[0]:
        if with_fds and not fds:
            chunk, got, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            fds = list(got)
        else:
            chunk = conn.recv(1 << 16)
        if not chunk:
            return None, fds
        buf += chunk
    n = _HEADER.unpack_from(buf)[0]
    return json.loads(buf[_HEADER.size : _HEADER.size + n]), fds


# ---------------------------------------------------------------- caller side


def run(argv: list[str]) -> int | None:
    """Run ``python -m assets.dvc_stage <argv>`` in a warm child; its exit status, or
    None when there is no warm server to use (the caller runs the step itself; a
    server is then started for the stages that follow)."""
    if not enabled() or not hasattr(socket, "AF_UNIX") or not hasattr(socket, "send_fds"):
        return None
    try:
        path = socket_dir() / f"{fingerprint()}.sock"
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(path) as address:
                conn.connect(address)
        except OSError:
            conn.close()
            _start_server(path)
            return None
    except OSError as e:
        print(f"warning: no warm stage server ({type(e).__name__}: {e}); running the step in a fresh process", file=sys.stderr)
        return None
    with conn:
        try:
            conn.settimeout(START_TIMEOUT_S)  # a server still importing answers within this
            _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
            reply, _ = _recv(conn)
            conn.settimeout(None)  # the step itself may take hours
        except OSError:  # timeouts included
            reply = None
        if reply is None:  # the server went away, or hangs, before starting the step: run it here
            return None
        pid = int(reply["pid"])
        previous = signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(pid, signal.SIGTERM))
        try:
            while True:
                try:
                    reply, _ = _recv(conn)
                    break
                except KeyboardInterrupt:
                    _kill(pid, signal.SIGINT)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if reply is None:
        print("warning: the warm stage server went away while the step ran", file=sys.stderr)
        return 1
    return int(reply["status"])


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _start_server(path: Path) -> None:
    import subprocess

    log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    with log:
        subprocess.Popen(
            [sys.executable, "-m", "assets.warm", "serve", str(path)],
            cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )


# ---------------------------------------------------------------- server side


def serve(path: Path, idle_s: float = IDLE_S) -> int:
    """Bind ``path`` (unless a live server holds it), import everything, then fork one
    child per request until idle."""
    listener = _bind(path)
    if listener is None:
        return 0  # another server holds it
    pid_file = Path(f"{path}.pid")
    inode = os.stat(path).st_ino
    try:
        signal.signal(signal.SIGTERM, _exit_on_signal)  # `stop`: leave through the finally below
        _tidy(path)
        _preload()
        print(f"ready: pid {os.getpid()}, {path.name}", file=sys.stderr, flush=True)
        listener.settimeout(1.0)
        children: set[int] = set()
        last = time.monotonic()
        while children or time.monotonic() - last < idle_s:
            for pid in list(children):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            with conn:
                if not _same_user(conn):
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    code = 1
                    try:
                        code = _supervise(conn)
                    finally:
                        os._exit(code)
                children.add(pid)
    finally:
        listener.close()
        try:
            if os.stat(path).st_ino == inode:
                path.unlink()
                pid_file.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
    return 0


def _bind(path: Path) -> socket.socket | None:
    """A listening socket at ``path`` (a stale one replaced), or None where a live server
    answers there. Under a lock, so two servers started at once do not both bind."""
    import fcntl

    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(path) as address:
                probe.connect(address)
            return None
        except OSError:
            pass
        finally:
            probe.close()
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with _address(path) as address:
                listener.bind(address)
        finally:
            os.umask(old_umask)
        listener.listen(16)  # callers wait in the backlog while the imports run
        Path(f"{path}.pid").write_text(f"{os.getpid()}\n")
        return listener


def _tidy(path: Path, days: float = 7.0) -> None:
    """Remove the logs and lock files that servers of other fingerprints (older code)
    left in the socket directory more than ``days`` ago."""
    cutoff = time.time() - days * 86400
    for f in path.parent.iterdir():
        if f.name.startswith(path.name.split(".")[0]) or not f.name.endswith((".log", ".sock.lock")):
            continue
        try:
            if f.stat().st_mtime < cutoff:
                f.unlink()
        except OSError:
            pass


def _preload() -> None:
    import importlib

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # as pipelines.stage sets it: no version check
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a step that needs it will say so itself
            print(f"preload {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    from pipelines.registry import STEPS

    for module in ("assets.dvc_stage", "assets.record", *(st.module for st in STEPS.values())):
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def stop(directory: Path | None = None) -> list[int]:
    """Stop the warm servers of ``directory`` (default: this user's :func:`socket_dir`)
    now rather than when idle; returns their pids. Running steps finish."""
    stopped = []
    for pid_file in sorted((directory or socket_dir()).glob("*.sock.pid")):
        try:
            pid = int(pid_file.read_text())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:  # not a recycled pid
                if b"assets.warm" not in fh.read():
                    continue
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except (ValueError, OSError):
            continue
    return stopped


def _same_user(conn: socket.socket) -> bool:
    """The peer runs as this user (Linux's ``SO_PEERCRED``; elsewhere the socket
    directory's permissions are the only gate)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def _supervise(conn: socket.socket) -> int:
    """One request: fork the child that runs the step, tell the caller its pid, wait,
    send its status."""
    request, fds = _recv(conn, with_fds=True)
    if request is None or len(fds) != 3:
        return 1
    pid = os.fork()
    if pid == 0:
        conn.close()
        os._exit(_child(request, fds))
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code
    print(f"served: {' '.join(request['argv'])} (pid {pid}) -> {code}", file=sys.stderr, flush=True)
    try:
        _send(conn, {"status": code})
    except OSError:
        pass  # the caller is gone (killed): nobody to tell
    return 0


def _child(request: dict, fds: list[int]) -> int:
    """Become the caller's stage process: its streams, directory, environment, argv."""
    import io

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m assets.dvc_stage", *request["argv"]]
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1), write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    code = 1
    try:
        from assets.dvc_stage import run_here

        code = run_here(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - the caller gets a status, never a hang
        print(f"assets.dvc_stage {' '.join(request['argv'])} failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 130 if isinstance(e, KeyboardInterrupt) else 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.warm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a server on SOCKET (started by the first stage that finds none)")
    s.add_argument("socket", type=Path)
    sub.add_parser("path", help="print the socket this environment's stages use")
    sub.add_parser("stop", help="stop this user's warm servers now (running steps finish)")
    args = p.parse_args(argv)
    if args.command == "path":
        print(socket_dir() / f"{fingerprint()}.sock")
        return 0
    if args.command == "stop":
        print(f"stopped {len(stop())} warm stage server(s)")
        return 0
    return serve(args.socket, float(os.environ.get("SCENARIO_GAN_WARM_IDLE", IDLE_S)))


if __name__ == "__main__":
    sys.exit(main())
