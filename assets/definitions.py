"""Everything Dagster loads: ``dagster dev -m assets.definitions`` (``python -m assets.ui``).

The definitions are built from the step registry (``pipelines/registry.py``) and the
scenario files by :func:`build_definitions`: one partition per scenario file, the
expectation checks its files declare, each asset's ``code_version`` the hash of its
step's code. "Reload definitions" in the UI picks up a new scenario file.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import augmentation, automation, evaluation, ingestion, ruler, training, validation
from assets.common import ScenarioGanResource, scenario_partitions
from pipelines.registry import PROJECT_ROOT


def build_definitions(base_dir: str | Path = PROJECT_ROOT, scenarios_dir: str | Path | None = None, *, code_root: Path = PROJECT_ROOT) -> dg.Definitions:
    """The project's definitions for the scenario files of ``scenarios_dir`` (default
    ``<base_dir>/scenarios``), writing under ``base_dir``; ``code_root`` is where the
    steps' code is read to compute code versions."""
    base_dir = Path(base_dir).resolve()
    scenarios_dir = Path(scenarios_dir or base_dir / "scenarios").resolve()
    partitions = scenario_partitions(scenarios_dir)
    job, schedules, sensors = automation.build(scenarios_dir)
    return dg.Definitions(
        assets=[
            ingestion.build(partitions, code_root),
            validation.build(partitions, scenarios_dir, code_root),
            augmentation.build(partitions, code_root),
            ruler.build(partitions, code_root),
            training.build(partitions, code_root),
            evaluation.build(partitions, code_root),
        ],
        jobs=[job],
        schedules=schedules,
        sensors=sensors,
        resources={"project": ScenarioGanResource(base_dir=str(base_dir), scenarios_dir=str(scenarios_dir))},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
