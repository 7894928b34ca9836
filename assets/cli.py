"""``scenario-gan``: one command for the project's entry points.

    scenario-gan run [scenario ...]          the whole chain through Dagster, in this process (python -m assets.run)
    scenario-gan stage <step> <scenario>     one step, as DVC's stages run it, recorded in Dagster
    scenario-gan lineage <scenario>          data -> model -> metrics, with hashes, params, commits, runs
    scenario-gan ui                          the Dagster UI on 127.0.0.1 (python -m assets.ui)
    scenario-gan dvc-yaml [--check]          write dvc.yaml from the step registry and the scenario files
"""

from __future__ import annotations

import sys


def _stage(argv: list[str]) -> int:
    """``python -m pipelines.stage`` and then, when it succeeded, the record in Dagster
    (what the two commands of a DVC stage do)."""
    from pipelines import stage

    code = stage.main(argv)
    if code == 0:
        from assets.record import record

        args = stage.parser().parse_args(argv)
        record(args.step, args.scenario, args.base_dir.resolve())
    return code


def _lineage(argv: list[str]) -> int:
    from assets.record import latest_materialization
    from pipelines import lineage

    return lineage.main(argv, dagster=latest_materialization)


def _module(name: str):
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(name).main(argv) or 0

    return run


COMMANDS = {"run": _module("assets.run"), "stage": _stage, "lineage": _lineage, "ui": _module("assets.ui"), "dvc-yaml": _module("pipelines.registry")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
