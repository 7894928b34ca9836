"""The command of a DVC stage whose step has an asset: run the step, then record it in
Dagster.

    python -m assets.dvc_stage train faces      # what dvc.yaml runs for train@faces

Where a warm stage server is up (:mod:`assets.warm`: torch, great-expectations and
Dagster already imported), the step and its record run in a child forked from it, on
this command's streams, directory and environment, and this command exits with the
child's status. Otherwise (the first stage of a chain, which also starts the server;
``SCENARIO_GAN_WARM=off``) it starts ``python -m pipelines.stage <step> <scenario>`` (a
process that imports only its step's code) and, while that runs, imports Dagster and
the recording code here. Either way: when the step succeeds it is recorded as
``python -m assets.record`` does and the exit status is 0; otherwise the status is the
step's and nothing is recorded. Output and exit status are the step's; a failure to
record is a warning (``assets.record``). This module imports nothing heavy before the
step has started.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m assets.dvc_stage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step")
    p.add_argument("scenario")
    p.add_argument("--base-dir", type=Path, default=None, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--scenarios-dir", type=Path, default=None)
    return p.parse_args(argv)


def _stage_argv(args: argparse.Namespace) -> list[str]:
    extra = [*(["--base-dir", str(args.base_dir)] if args.base_dir else []), *(["--scenarios-dir", str(args.scenarios_dir)] if args.scenarios_dir else [])]
    return [args.step, args.scenario, *extra]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    from assets import warm

    rc = warm.run(argv)
    if rc is not None:
        return rc
    child = subprocess.Popen([sys.executable, "-m", "pipelines.stage", *_stage_argv(args)])
    try:
        try:
            from assets.record import record  # Dagster's import, while the step runs
        except Exception as e:  # noqa: BLE001 - the step's result matters more than its record
            print(f"warning: cannot record {args.step}@{args.scenario} in Dagster ({type(e).__name__}: {e})", file=sys.stderr)
            record = None
        rc = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    if rc != 0:
        return rc
    if record is not None:
        _record(args, record)
    return 0


def run_here(argv: list[str]) -> int:
    """The step and its record in this process (a warm child of :mod:`assets.warm`)."""
    from assets.record import record
    from pipelines.stage import main as stage_main

    args = _parse(argv)
    rc = stage_main(_stage_argv(args))
    if rc != 0:
        return rc
    _record(args, record)
    return 0


def _record(args: argparse.Namespace, record) -> None:
    from pipelines.registry import PROJECT_ROOT

    record(args.step, args.scenario, (args.base_dir or PROJECT_ROOT).resolve())


if __name__ == "__main__":
    sys.exit(main())
