"""``scenario-gan``: one command for the project's entry points.

    scenario-gan run [scenario ...]          the whole chain through Dagster (python -m pipelines.run)
    scenario-gan stage <step> <scenario>     one step, as DVC's stages run it (python -m pipelines.stage)
    scenario-gan lineage <scenario>          data -> model -> metrics, with hashes, params, commits, runs
    scenario-gan ui                          the Dagster UI on 127.0.0.1 (python -m pipelines.ui)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"run": "pipelines.run", "stage": "pipelines.stage", "lineage": "pipelines.lineage", "ui": "pipelines.ui"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
