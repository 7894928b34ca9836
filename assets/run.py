"""Run the whole chain (ingest -> validate -> augment, ruler -> train -> evaluate) for
scenarios through Dagster, in this process, recording the runs in DAGSTER_HOME so the
UI shows them.

    python -m assets.run                    # every scenario in scenarios/
    python -m assets.run faces digits       # some of them
    python -m assets.run --steps 50 faces   # a shorter training budget

Exit status 1 when a scenario fails (a blocking validation, a diverged training, ...);
the other scenarios still run. A model that misses its scenario's promotion bar is
reported ("promote: False") but is not a failure of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pipelines.scenario import SCENARIO_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def materialize_scenario(name: str, *, base_dir: Path, scenarios_dir: Path, instance=None, raise_on_error: bool = False):
    import dagster as dg

    from assets.common import ScenarioGanResource
    from assets.definitions import build_definitions

    assets = list(build_definitions(base_dir, scenarios_dir).assets)  # type: ignore[arg-type]  # partitions: the files of scenarios_dir
    resources = {"project": ScenarioGanResource(base_dir=str(base_dir), scenarios_dir=str(scenarios_dir))}
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # progress and results, not every engine event
    return dg.materialize(assets, partition_key=name, resources=resources, instance=instance, raise_on_error=raise_on_error, tags={"trigger": "cli"}, run_config=quiet)


def failure_messages(result) -> list[str]:
    """What made each failed step of a Dagster run fail: the innermost error's message
    (Dagster wraps the step's exception; the user needs the scenario's own words)."""
    out = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            out.append(f"{event.step_key}: {error.message.strip()}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--scenarios-dir", type=Path, default=SCENARIO_DIR, help="where <name>.yaml files are read (default: scenarios/)")
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster")))
    args = p.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    import dagster as dg

    from pipelines.scenario import scenario_names
    from assets.ui import prepare_home

    # every scenario file by name, unread: a file that does not load fails its own run
    # (with the error naming the file and key) and the others run as usual
    known = scenario_names(args.scenarios_dir)
    names = args.scenarios or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"unknown scenario(s) {unknown}; known in {args.scenarios_dir}: {known}", file=sys.stderr)
        return 2
    os.environ["DAGSTER_HOME"] = str(prepare_home(args.home.resolve()))
    instance = dg.DagsterInstance.get()
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}: ingest -> validate -> augment, ruler -> train -> evaluate", flush=True)
        result = materialize_scenario(name, base_dir=args.base_dir.resolve(), scenarios_dir=args.scenarios_dir.resolve(), instance=instance)
        wall = time.perf_counter() - t0
        metrics_file = args.base_dir / "metrics" / f"{name}.json"
        evaluated = any(e.materialization.asset_key.to_user_string() == "evaluation" for e in result.get_asset_materialization_events())
        if evaluated and metrics_file.is_file():  # a failed promotion check still leaves a scored model
            m = json.loads(metrics_file.read_text())
            print(
                f"== {name}: done in {wall:.0f} s; FID {m['fid']:.2f} (floor {m['fid_floor']:.2f}), precision {m['precision']:.2f}, "
                f"recall {m['recall']:.2f}, classifier {m['c2st_accuracy']:.2f}, sharpness {m['sharpness_ratio']:.2f}, "
                f"near-copies {m['near_copy_share']:.3f}, promote: {m['promote']}" + (f" (fails {', '.join(m['failed_criteria'])})" if m["failed_criteria"] else ""),
                flush=True,
            )
        else:
            failed.append(name)
            why = "; ".join(failure_messages(result))
            print(f"== {name}: FAILED after {wall:.0f} s (the run {result.run_id} in the Dagster UI){': ' + why if why else ''}", flush=True)
    print(f"\nResults: {args.base_dir / 'models'}/<scenario>/eval/ (samples.png, metrics.json); headline metrics in {args.base_dir / 'metrics'}/")
    print("Runs: python -m assets.ui, then open http://127.0.0.1:3000")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
