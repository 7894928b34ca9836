"""What orchestration costs: one scenario's whole chain (ingest -> validate -> augment ->
train -> evaluate) through each entry point, side by side, plus a no-op `dvc repro`.

    python -m benchmarks.bench_orchestration                 # ~10 min on 2 cores
    python -m benchmarks.bench_orchestration --quick         # smoke test, ~1 min
    python -m benchmarks.bench_orchestration --reps 5 --steps 50 --out orch.json

Variants (same tiny `digits` scenario, same machine, interleaved, order rotated each
repetition so bursts of load hit all of them):

- ``direct``   the seven step functions (params, ingest, validate, augment, ruler, train,
  evaluate) called in this process (imports already warm: the floor);
- ``direct_cold`` the same seven calls in one fresh Python process, its imports
  included: what running the steps by hand in one script costs, and the baseline that
  separate stage processes are compared with (``x direct_cold``);
- ``stages``   each DVC stage's command, without DVC: ``python -m assets.dvc_stage <step>
  digits`` (``params``: ``python -m pipelines.stage``). With no warm stage server
  (:mod:`assets.warm`) at the start: the first asset stage starts one and runs its step
  fresh (``python -m pipelines.stage``, Dagster imported meanwhile), the later ones are
  forked from the server;
- ``dagster``  ``dagster.materialize`` of the six assets in this process (the code
  path of ``python -m assets.run``, the UI, schedules and sensors), with a temporary
  instance;
- ``dvc``      ``dvc repro --force evaluate@digits`` in a git + DVC copy of the project
  (``.dvc-venv`` needed), with no warm server at the start (a user's first chain);
- ``dvc_warm`` the same with the server of the previous ``dvc`` run still up (a second
  chain within its idle time; not with ``--quick``);
- ``dvc_fresh`` the same with ``SCENARIO_GAN_WARM=off``: every stage a fresh process
  (not with ``--quick``);
- ``dvc_noop`` ``dvc repro`` right after, with nothing to do.

Reported: median seconds per variant, and the median over repetitions of each variant's
time over ``direct``'s and ``direct_cold``'s in the same repetition. Then each
step's process and its record process (``python -m assets.record``) once more, apart,
under ``python -X importtime``: wall time, the seconds its imports took (the sum of the
top-level imports' cumulative times) and which heavy libraries (torch,
great_expectations, albumentations, dagster, pandas, PIL, scikit-learn) it loaded
(``--quick``: params and validate only, and no ``stages`` variant). Requires the project's ``.dvc-venv``
for the DVC variants (skipped without it, and said so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
from pipelines.registry import STEPS  # noqa: E402 - the pipeline's steps, in order


def _tiny(directory: Path, steps: int) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.dagster_support import tiny_scenario

    return tiny_scenario(directory, gan={"model": {"arch": "dcgan", "width": 8, "z_dim": 16}, "train": {"steps": steps, "batch_size": 16, "checkpoint_every": max(1, steps // 3), "num_threads": 1, "ema_half_life_images": 100}})


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "NO_ALBUMENTATIONS_UPDATE": "1"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    scenarios = work / "scenarios"
    _tiny(scenarios, args.steps)

    from benchmarks.harness import machine_info
    from pipelines.scenario import load_scenario
    from pipelines.stage import run_step

    def direct() -> None:
        base = work / "direct"
        for step in STEPS:
            run_step(step, "digits", base_dir=base, scenarios_dir=scenarios)

    def direct_cold() -> None:
        base = work / "direct_cold"
        code = (
            "from pathlib import Path; from pipelines.stage import run_step; from pipelines.registry import STEPS\n"
            f"for s in STEPS: run_step(s, 'digits', base_dir=Path({str(base)!r}), scenarios_dir=Path({str(scenarios)!r}))"
        )
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, check=True)

    servers = iter(range(1_000_000))
    served: list[int] = []  # per dvc run: the stages a warm server ran

    def no_server() -> Path:
        """A socket directory of its own (so no warm server yet) for the next chain."""
        from assets.warm import stop

        for d in work.glob("tmp-*"):
            stop(d / f"scenario-gan-{os.getuid()}") if (d / f"scenario-gan-{os.getuid()}").is_dir() else None
        d = work / f"tmp-{next(servers)}"
        d.mkdir()
        os.environ["TMPDIR"] = str(d)
        return d

    def stages() -> None:
        base = work / "stages"
        no_server()
        env = {**_env(), "DAGSTER_HOME": str(work / "stages-home")}
        for step in STEPS:
            # a DVC stage's command, without DVC: the step, recorded in Dagster
            module = "assets.dvc_stage" if STEPS[step].asset else "pipelines.stage"
            p = subprocess.run([sys.executable, "-m", module, step, "digits", "--base-dir", str(base), "--scenarios-dir", str(scenarios)], cwd=REPO, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"stage {step} failed: {p.stderr[-1500:]}")

    def dagster() -> None:
        import dagster as dg

        from assets.run import materialize_scenario

        with dg.DagsterInstance.ephemeral() as instance:
            res = materialize_scenario("digits", base_dir=work / "dagster", scenarios_dir=scenarios, instance=instance, raise_on_error=True)
            assert res.success

    # --quick leaves out ``stages``: ``dvc`` runs the same stage commands.
    variants: dict[str, Callable[[], None]] = {"direct": direct, "direct_cold": direct_cold, **({} if args.quick else {"stages": stages}), "dagster": dagster}
    dvc_note = None
    project = None
    dvc_bin = REPO / ".dvc-venv" / "bin" / "dvc"
    if dvc_bin.is_file():
        from tests.dvc_support import dvc, make_project

        project = make_project(work / "dvc" / "project", {"digits": {"gan": json.loads(json.dumps(load_scenario(scenarios / "digits.yaml").gan))}})

        def dvc_force() -> None:
            tmp = no_server()
            dvc(project, "repro", "--force", "evaluate@digits")
            served.append(sum(f.read_text().count("served:") for f in tmp.glob("scenario-gan-*/*.log")))

        def dvc_warm() -> None:  # right after dvc_force: its server is up
            dvc(project, "repro", "--force", "evaluate@digits")

        def dvc_fresh() -> None:
            os.environ["SCENARIO_GAN_WARM"] = "off"
            try:
                dvc(project, "repro", "--force", "evaluate@digits")
            finally:
                del os.environ["SCENARIO_GAN_WARM"]

        variants.update(dvc=dvc_force, **({} if args.quick else {"dvc_warm": dvc_warm, "dvc_fresh": dvc_fresh}))
    else:
        dvc_note = f"{dvc_bin} missing: DVC variants skipped"

    # warm up: imports, first-run caches, and every variant's outputs exist (--quick, a
    # smoke test of the script, warms the in-process imports only)
    for n, fn in variants.items():
        if not args.quick or n == "direct":
            fn()
    times: dict[str, list[float]] = {n: [] for n in variants}
    noop: list[float] = []
    after = {"dvc": "dvc_warm"} if "dvc_warm" in variants else {}  # run straight after, not rotated
    names = [n for n in variants if n not in after.values()]
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for n in (m for n in order for m in (n, after.get(n)) if m):
            t0 = time.perf_counter()
            variants[n]()
            times[n].append(time.perf_counter() - t0)
        if project is not None:
            t0 = time.perf_counter()
            out = dvc(project, "repro").stdout
            noop.append(time.perf_counter() - t0)
            assert "Running stage" not in out, out
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in variants) + (f", dvc no-op {noop[-1]:.2f}s" if noop else ""), flush=True)
    no_server()  # stops the last chain's server
    result: dict[str, Any] = {
        "benchmark": "orchestration",
        "machine": {**machine_info(), "loadavg": os.getloadavg()},
        "settings": {"reps": args.reps, "train_steps": args.steps, "scenario": f"digits ({load_scenario(scenarios / 'digits.yaml').data.limit or 1797} images, 16x16, tiny dcgan)", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "seconds_median": {n: statistics.median(v) for n, v in times.items()},
        "seconds": times,
        "ratio_to_direct_median": {n: statistics.median(t / d for t, d in zip(v, times["direct"])) for n, v in times.items() if n != "direct"},
        "ratio_to_direct_cold_median": {n: statistics.median(t / d for t, d in zip(v, times["direct_cold"])) for n, v in times.items() if n not in ("direct", "direct_cold")},
        "stage_processes": stage_imports(work, scenarios, ["params", "validate"] if args.quick else list(STEPS)),
    }
    if not args.quick:
        result["warm_stage_processes"] = warm_callers(work, scenarios, no_server())
        no_server()
    if served:
        result["dvc_stages_served_warm"] = served
    if noop:
        result["dvc_noop_seconds_median"] = statistics.median(noop)
        result["dvc_noop_seconds"] = noop
    if dvc_note:
        result["note"] = dvc_note
    return result


HEAVY = ("torch", "great_expectations", "albumentations", "dagster", "pandas", "PIL", "sklearn", "skimage", "opacus")


def import_profile(stderr: str) -> tuple[float, list[str]]:
    """(seconds of imports, heavy top-level packages loaded) from ``-X importtime`` output:
    the sum of the cumulative times of the top-level imports (lines without nesting)."""
    total, heavy = 0.0, set()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line.split("|")  # "import time: self | cumulative | name"
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # top level: one space after the bar
            total += int(parts[1]) / 1e6
        root = name.strip().split(".")[0]
        if root in HEAVY:
            heavy.add(root)
    return round(total, 3), sorted(heavy)


def stage_imports(work: Path, scenarios: Path, steps: list[str]) -> dict[str, Any]:
    """Each step's process and its record process once, under ``-X importtime``."""
    base = work / "imports"
    env = {**_env(), "DAGSTER_HOME": str(work / "imports-home")}
    out: dict[str, Any] = {}
    for step in STEPS:  # in order: every step's inputs must exist
        cmds = [("stage", ["pipelines.stage", step, "digits", "--base-dir", str(base), "--scenarios-dir", str(scenarios)])]
        if STEPS[step].asset and step in steps:
            cmds.append(("record", ["assets.record", step, "digits", "--base-dir", str(base)]))
        for what, cmd in cmds:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-X", "importtime", "-m", *cmd], cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr[-1500:]}")
            if step in steps:
                seconds, heavy = import_profile(p.stderr)
                out[f"{what} {step}"] = {"process_s": round(wall, 3), "import_s": seconds, "heavy_imports": heavy}
        if step == steps[-1]:
            break
    return out


def warm_callers(work: Path, scenarios: Path, tmp: Path) -> dict[str, Any]:
    """Each asset step's DVC command (``python -m assets.dvc_stage``) once more with a warm
    server up, under ``-X importtime``: the caller's own wall time and imports (the step
    runs in a child forked from the server)."""
    base = work / "warm-imports"
    env = {**_env(), "DAGSTER_HOME": str(work / "warm-imports-home")}
    log_dir = tmp / f"scenario-gan-{os.getuid()}"

    def stage(step: str) -> subprocess.CompletedProcess:
        module = "assets.dvc_stage" if STEPS[step].asset else "pipelines.stage"
        return subprocess.run([sys.executable, "-X", "importtime", "-m", module, step, "digits", "--base-dir", str(base), "--scenarios-dir", str(scenarios)], cwd=REPO, env=env, capture_output=True, text=True, check=True)

    stage("params")
    stage("ingest")  # finds no server: starts one
    deadline = time.monotonic() + 300
    while not any("ready:" in f.read_text() for f in log_dir.glob("*.log")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no warm server came up in {log_dir}")
        time.sleep(0.2)
    out: dict[str, Any] = {}
    for step in [s for s in STEPS if STEPS[s].asset]:
        t0 = time.perf_counter()
        p = stage(step)
        wall = time.perf_counter() - t0
        seconds, heavy = import_profile(p.stderr)
        out[f"warm {step}"] = {"process_s": round(wall, 3), "import_s": seconds, "heavy_imports": heavy}
    if not sum("served:" in f.read_text() for f in log_dir.glob("*.log")):
        raise RuntimeError("the warm server served nothing")
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{'variant':<12} {'median s':>9} {'x direct':>9} {'x direct_cold':>14}"]
    for n, s in r["seconds_median"].items():
        ratio = r["ratio_to_direct_median"].get(n, 1.0)
        cold = r.get("ratio_to_direct_cold_median", {}).get(n)
        lines.append(f"{n:<12} {s:>9.1f} {ratio:>9.2f} {'' if cold is None else f'{cold:.2f}':>14}")
    lines.append("")
    lines.append(f"{'process':<18} {'wall s':>7} {'imports s':>10}  heavy imports")
    for k, v in {**r.get("stage_processes", {}), **r.get("warm_stage_processes", {})}.items():
        lines.append(f"{k:<18} {v['process_s']:>7.2f} {v['import_s']:>10.2f}  {', '.join(v['heavy_imports'])}")
    if "dvc_noop_seconds_median" in r:
        lines.append(f"{'dvc no-op':<10} {r['dvc_noop_seconds_median']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_orchestration", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="training steps of the tiny scenario")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, 6 training steps, no warm-up of the subprocess variants")
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.steps = 1, 6
    r = run(args)
    print(format_table(r))
    write_result(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
