"""Start the Dagster UI with these definitions on 127.0.0.1.

    python -m assets.ui                 # http://127.0.0.1:3000
    python -m assets.ui --port 3001 --host 0.0.0.0   # expose on purpose

DAGSTER_HOME defaults to ``.dagster/`` in the project (runs, schedules and sensor
cursors persist there); its ``dagster.yaml`` comes from ``assets/dagster.yaml``
(one run per scenario at a time, telemetry off).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def prepare_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        shutil.copyfile(PROJECT_ROOT / "assets" / "dagster.yaml", cfg)
    return home


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / ".dagster")))
    args = p.parse_args(argv)
    home = prepare_home(args.home.resolve())
    env = {**os.environ, "DAGSTER_HOME": str(home), "NO_ALBUMENTATIONS_UPDATE": "1", "DAGSTER_DISABLE_TELEMETRY": "1"}
    # `dagster dev` announces that the separate `dg` CLI supersedes it; that CLI is not
    # needed here, so the notice is noise. Other warnings stay visible.
    quiet = "ignore:Function `dev_command` is superseded:FutureWarning"
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), quiet]))
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-m", "assets.definitions", "--host", args.host, "--port", str(args.port)]
    os.chdir(PROJECT_ROOT)
    os.execve(cmd[0], cmd, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
