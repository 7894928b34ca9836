"""Print one scenario's lineage: raw data -> validated -> augmented -> model -> metrics,
each with its content hash (the md5 DVC records), the parameters and DVC stage that
produced it, the git commit, and the Dagster run (or ``dvc repro`` / command-line step)
that last materialized it.

    scenario-gan lineage faces              # a table
    scenario-gan lineage faces --json       # the same, machine-readable

Reads only files: ``dvc.lock``, the outputs themselves, git, and the Dagster instance
in ``$DAGSTER_HOME`` (default ``.dagster/``). It never runs a step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from pipelines.dvcio import dvc_hash, read_lock, stage_name
from pipelines.registry import ASSET_STEPS
from pipelines.scenario import SCENARIO_DIR, ScenarioError, load_scenario

PROJECT_ROOT = Path(__file__).resolve().parents[1]


NOT_A_GIT_CHECKOUT = "not a git checkout"
_PIPELINE_OUTPUT_FILES = frozenset({"dvc.lock"})


def code_version(directory: str | os.PathLike[str], *, ignore: tuple[Path, ...] = ()) -> str:
    """The git commit checked out in ``directory`` (``git rev-parse HEAD``), followed by
    ``(+ uncommitted changes)`` when ``git status`` lists modified tracked files; files
    under ``ignore`` (the pipeline's own outputs) and ``dvc.lock`` do not count.
    Returns ``"not a git checkout"`` when git cannot name a commit there."""
    directory = Path(directory)
    git = shutil.which("git")
    if git is None or not directory.is_dir():
        return NOT_A_GIT_CHECKOUT
    # GIT_DIR & co. would point git at another repository than the one in `directory`.
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([git, *args], cwd=directory, env=env, capture_output=True, text=True, timeout=60)

    head = run("rev-parse", "--verify", "HEAD")
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return NOT_A_GIT_CHECKOUT
    top = run("rev-parse", "--show-toplevel")
    status = run("status", "--porcelain", "--untracked-files=no", "-z")
    if top.returncode != 0 or status.returncode != 0:
        return f"{commit} (uncommitted changes unknown: git status failed)"
    root = Path(top.stdout.strip()).resolve()
    ignored = [p.resolve() for p in ignore]
    changed = []
    entries = status.stdout.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        if entry[0] in "RC":  # a rename/copy is followed by its source path
            i += 1
        f = (root / entry[3:]).resolve()
        if f.name in _PIPELINE_OUTPUT_FILES or any(f == p or p in f.parents for p in ignored):
            continue
        changed.append(f)
    return f"{commit} (+ uncommitted changes)" if changed else commit


def last_commit_of(base: Path, path: str) -> str | None:
    """The last commit that changed ``path`` (e.g. ``dvc.lock``), None if none did."""
    try:
        p = subprocess.run(["git", "log", "-1", "--format=%H", "--", path], cwd=base, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


DagsterView = Callable[[str, str], "dict[str, Any] | None"]
"""``view(step, scenario)``: the latest Dagster materialization of the step's asset
partition (asset, run_id, entry_point, timestamp, data_version, git_commit), or None.
The Dagster layer provides it (``assets.record.latest_materialization``); this module
imports no Dagster."""


def scenario_lineage(name: str, *, base: Path = PROJECT_ROOT, scenarios_dir: Path = SCENARIO_DIR, dagster: DagsterView | None = None) -> dict[str, Any]:
    """The lineage of scenario ``name`` as a dict (see the module docstring); ``dagster``
    adds what the Dagster instance recorded for each step."""
    scenario = load_scenario(scenarios_dir / f"{name}.yaml")
    lock = read_lock(base)
    steps = []
    for step, st in ASSET_STEPS.items():
        stage = stage_name(step, name)
        out = st.outputs[0].at(name)
        full = base / out
        current = dvc_hash(full) if full.exists() else None
        entry = lock.get(stage) or {}
        locked = next((o.get("md5") for sec in ("outs", "metrics", "plots") for o in entry.get(sec, []) or [] if o.get("path") == out), None)
        params = {}
        for _file, values in (entry.get("params") or {}).items():
            params.update(values)
        dag = dagster(step, name) if dagster else None
        steps.append(
            {
                "step": step,
                "dvc_stage": stage,
                "output": out,
                "hash": current,
                "dvc_lock_hash": locked,
                "in_sync_with_dvc": current is not None and current == locked,
                "params": params,
                "dagster": dag,
                "dagster_in_sync": bool(dag and current and dag["data_version"] == current),
            }
        )
    source = scenario.data.source + (f":{scenario.data.builtin}" if scenario.data.builtin else f":{scenario.data.path or name + '/raw'}")
    raw = {"path": None, "hash": None, "ingested_hash": None, "in_sync_with_dvc": None}
    if scenario.data.source != "builtin":  # a built-in source is code (a dependency of ingest), not data
        from .dvcio import processed_hash
        from .paths import Roots

        src = scenario.data_path(Roots.under(base).data)
        raw["path"] = os.path.relpath(src, base)
        raw["hash"] = dvc_hash(src) if src.exists() else None
        raw["ingested_hash"] = processed_hash(base, "ingest", name, src)
        raw["in_sync_with_dvc"] = raw["hash"] is not None and raw["hash"] == raw["ingested_hash"]
    return {
        "scenario": name,
        "source": source,
        "raw": raw,
        "git_head": code_version(base, ignore=(base / "data", base / "models", base / "metrics")),
        "dvc_lock_commit": last_commit_of(base, "dvc.lock") if (base / "dvc.lock").is_file() else None,
        "steps": steps,
        "dagster_read": dagster is not None,
    }


def _short(h: str | None, n: int = 12) -> str:
    return "-" if not h else (h[:n] + (".dir" if h.endswith(".dir") else ""))


def format_lineage(lin: dict[str, Any]) -> str:
    lines = [
        f"scenario {lin['scenario']}   source {lin['source']}",
        f"code: {lin['git_head']}   dvc.lock last committed in {lin['dvc_lock_commit'] or '-'}",
        "",
    ]
    raw = lin.get("raw") or {}
    if raw.get("path"):
        state = "what ingest@{0} last read (dvc.lock)".format(lin["scenario"]) if raw["in_sync_with_dvc"] else (
            "not read by ingest yet" if raw["ingested_hash"] is None else f"ingest@{lin['scenario']} read {_short(raw['ingested_hash'])} (new data: `dvc repro`)"
        )
        lines.append(f"{'raw':<9} {raw['path']:<36} {_short(raw['hash']):<18} {'':<20} {state}")
    for s in lin["steps"]:
        dvc = "in dvc.lock" if s["in_sync_with_dvc"] else ("not recorded in dvc.lock" if s["dvc_lock_hash"] is None else f"dvc.lock has {_short(s['dvc_lock_hash'])} (run `dvc status`)")
        lines.append(f"{s['step']:<9} {s['output']:<36} {_short(s['hash']):<18} {s['dvc_stage']:<20} {dvc}")
        d = s["dagster"]
        if d:
            import datetime as _dt

            when = _dt.datetime.fromtimestamp(d["timestamp"], tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            who = f"run {d['run_id']}" if d["run_id"] else f"{d['entry_point']} (no Dagster run)"
            same = "same data" if s["dagster_in_sync"] else f"other data ({_short(d['data_version'])})"
            lines.append(f"{'':<9} dagster: {d['asset']} {who}, {when}, {same}" + (f", code {_short(d['git_commit'], 12)}" if d.get("git_commit") else ""))
        else:
            lines.append(f"{'':<9} dagster: " + ("no materialization recorded" if lin.get("dagster_read", True) else "not read (`scenario-gan lineage` reads it)"))
        if s["params"]:
            lines.append(f"{'':<9} params: " + json.dumps(s["params"], sort_keys=True, default=str))
    return "\n".join(lines)


def main(argv: list[str] | None = None, dagster: Callable[[Path], DagsterView | None] | None = None) -> int:
    """The lineage command; ``dagster(home)`` opens the Dagster view of the instance at
    ``home`` (``scenario-gan lineage`` passes it; ``python -m pipelines.lineage`` alone
    shows DVC's side only)."""
    p = argparse.ArgumentParser(prog="scenario-gan lineage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT, help="the project (holds dvc.lock, data/, models/, metrics/)")
    p.add_argument("--scenarios-dir", type=Path, default=None, help="default: <base-dir>/scenarios")
    p.add_argument("--home", type=Path, default=None, help="Dagster instance (default $DAGSTER_HOME or <base-dir>/.dagster)")
    args = p.parse_args(argv)
    base = args.base_dir.resolve()
    try:
        home = args.home or Path(os.environ.get("DAGSTER_HOME", base / ".dagster"))
        view = dagster(home) if dagster else None
        lin = scenario_lineage(args.scenario, base=base, scenarios_dir=(args.scenarios_dir or base / "scenarios").resolve(), dagster=view)
    except ScenarioError as e:
        print(e, file=sys.stderr)
        return 2
    print(json.dumps(lin, indent=2, default=str) if args.json else format_lineage(lin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
