"""The command of a DVC stage whose step has an asset: run the step, then record it in
Dagster, with Dagster's import overlapping the step.

    python -m assets.dvc_stage train faces      # what dvc.yaml runs for train@faces

It starts ``python -m pipelines.stage <step> <scenario>`` (a process that imports only
its step's code) and, while that runs, imports Dagster and the recording code here
(about 1.2 s of a stage's fixed cost, otherwise paid after the step by a second
process). When the step succeeds it records it as ``python -m assets.record`` does and
exits 0; otherwise it exits with the step's status and records nothing. Output and
exit status are the step's; a failure to record is a warning (``assets.record``).
This module imports nothing heavy before the step has started.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.dvc_stage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step")
    p.add_argument("scenario")
    p.add_argument("--base-dir", type=Path, default=None, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--scenarios-dir", type=Path, default=None)
    args = p.parse_args(argv)
    extra = [*(["--base-dir", str(args.base_dir)] if args.base_dir else []), *(["--scenarios-dir", str(args.scenarios_dir)] if args.scenarios_dir else [])]
    child = subprocess.Popen([sys.executable, "-m", "pipelines.stage", args.step, args.scenario, *extra])
    try:
        try:
            from assets.record import PROJECT_ROOT, record  # Dagster's import, while the step runs
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
        record(args.step, args.scenario, (args.base_dir or PROJECT_ROOT).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
