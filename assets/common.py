"""Pieces shared by the stage assets: partitions, the project resource, inline images."""

from __future__ import annotations

import base64
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg

from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import SCENARIO_DIR, Scenario, load_all, load_scenario

GROUP = "scenario"


def scenario_names(directory: Path = SCENARIO_DIR) -> list[str]:
    return sorted(load_all(directory))


scenario_partitions = dg.StaticPartitionsDefinition(scenario_names())


class ScenarioGanResource(dg.ConfigurableResource):
    """Where scenarios are read from and where every stage writes.

    ``base_dir`` holds ``data/``, ``models/`` and ``metrics/``; DVC stages write to
    the same places, so either entry point sees the other's outputs."""

    base_dir: str = "."
    scenarios_dir: str = str(SCENARIO_DIR)

    def roots(self) -> Roots:
        return Roots.under(Path(self.base_dir).resolve())

    def scenario(self, name: str) -> Scenario:
        return load_scenario(Path(self.scenarios_dir) / f"{name}.yaml")

    def paths(self, name: str) -> ScenarioPaths:
        return ScenarioPaths(name, self.roots())


@contextmanager
def scenario_lock(paths: ScenarioPaths) -> Iterator[None]:
    """One writer per scenario at a time, whichever entry point (UI, schedule, sensor,
    dvc repro) started it: an exclusive flock on ``<data>/<scenario>/.lock``."""
    lock = paths.roots.data / paths.name / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """An image shown inline in the Dagster UI (markdown with a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
