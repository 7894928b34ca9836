"""A throwaway copy of this project (git + DVC) with tiny scenarios, for `dvc repro` tests.

The copy has the project's files as git sees them (tracked and untracked, not ignored),
``dvc.yaml`` generated for the scenarios under test (as ``scenario-gan dvc-yaml`` does), and
``.venv``/``.dvc-venv`` linked to the environments running the tests, so the stages run
the copied code with the installed packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import require
from pipelines.registry import project_dvc_yaml

from .dagster_support import tiny_scenario

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DVC = PROJECT_ROOT / ".dvc-venv" / "bin" / "dvc"


def require_dvc() -> Path:
    """The dvc executable of the project's tool environment; CI fails without it."""
    require(
        DVC.is_file(), f"DVC's tool environment ({DVC})",
        "create it as the README's commands do: python3 -m venv .dvc-venv && .dvc-venv/bin/pip install 'dvc==3.67.1'",
        flag="SCENARIO_GAN_REQUIRE_DVC",
    )
    return DVC


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def dvc(cwd: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([str(require_dvc()), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if f and (PROJECT_ROOT / f).is_file() and not f.startswith(("tests/", "benchmarks/", "docs/"))]


def make_project(dst: Path, scenarios: dict[str, dict] | None = None) -> Path:
    """Copy the project to ``dst`` (a git repo, one commit) with only ``scenarios``
    (name -> tiny_scenario overrides; default: a tiny ``digits``) in ``scenarios/``
    and in ``dvc.yaml``. The DVC remote is ``dst.parent / "dvc-remote"``."""
    require_dvc()
    scenarios = scenarios if scenarios is not None else {"digits": {}}
    # The compiled modules that `pip install -e .` built beside their sources (git ignores
    # them; the copy runs on this environment, as a clone after its install would).
    built = [p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "pipelines").glob("_native*.so")]
    for f in project_files() + built:
        if f.startswith("scenarios/") and not f.endswith(("_project.yaml", "_defaults.yaml")):
            continue
        target = dst / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / f, target)
    for name, overrides in scenarios.items():
        overrides = dict(overrides)
        base = overrides.pop("_from", name)
        raw = yaml.safe_load(tiny_scenario(dst / ".tiny" / name, base, **overrides).read_text())
        raw["name"] = name
        (dst / "scenarios" / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.rmtree(dst / ".tiny")
    # dvc.yaml as `scenario-gan dvc-yaml` writes it for these scenarios and the copied code
    (dst / "dvc.yaml").write_text(project_dvc_yaml(dst))
    (dst / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (dst / ".dvc-venv").symlink_to(DVC.parents[1], target_is_directory=True)
    git(dst, "init", "-q", "-b", "main")
    (dst / ".git/info/exclude").write_text("/.venv\n/.dvc-venv\n")  # links here, not the folders .gitignore names
    remote = dst.parent / "dvc-remote"
    dvc(dst, "remote", "modify", "local", "url", str(remote))  # the copy's own remote
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "project copy")
    return dst


def lock_md5(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    for section in ("outs", "deps"):
        for e in lock.get(section, []):
            if e["path"] == path:
                return e["md5"]
    raise KeyError(f"{path} not in {stage} of dvc.lock")
