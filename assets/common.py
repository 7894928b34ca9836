"""Pieces shared by the Dagster layer: partitions and checks built from the scenario
files, the project resource, the asset factory's common arguments, recording a
materialization in DVC, inline images."""

from __future__ import annotations

import base64
import os
import warnings
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import Roots, ScenarioPaths
from pipelines.registry import PROJECT_ROOT, STEPS
from pipelines.scenario import SCENARIO_DIR, ProjectSettings, Scenario, load_project, load_scenario, scenario_names

GROUP = "scenario"


def scenario_partitions(scenarios_dir: str | os.PathLike[str] = SCENARIO_DIR) -> dg.StaticPartitionsDefinition:
    """One partition per scenario file of ``scenarios_dir``, named by the file and read
    lazily: a file that cannot be used (bad YAML, an unknown key, a wrong type) never
    stops the definitions from loading; its own runs fail with the error that names the
    file and the key. Built when the definitions are (``assets.definitions``), so a new
    scenario file appears on the next load ("Reload definitions" in the UI)."""
    return dg.StaticPartitionsDefinition(scenario_names(scenarios_dir))


def scenario_check(name: str, asset: str, partitions: dg.PartitionsDefinition, **kwargs: Any) -> dg.AssetCheckSpec:
    """An asset check evaluated per scenario (partition): the UI shows each scenario's own
    result, not whichever scenario ran last. Partitioned checks are a preview feature of
    Dagster 1.13 (pinned in pyproject.toml; the Dagster tests exercise them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions, **kwargs)


def asset_arguments(step: str, partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The arguments every asset of a step gets from the step registry: its key, the
    assets upstream of it, and a ``code_version`` that is the hash of the step's code
    closure (the files ``dvc.yaml`` lists for its stage), so the UI marks the asset stale
    exactly when ``dvc status`` says the stage changed."""
    st = STEPS[step]
    return {
        "key": st.asset,
        "deps": [STEPS[u].asset for u in st.upstream if STEPS[u].asset],
        "code_version": st.code_version(code_root),
        "partitions_def": partitions,
        "group_name": GROUP,
    }


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

    def settings(self) -> ProjectSettings:
        """``_project.yaml`` of the scenarios folder (training profile, retrain schedule)."""
        return load_project(self.scenarios_dir)


def run_step(context: dg.AssetExecutionContext, project: "ScenarioGanResource", step: str, **kwargs: Any) -> Any:
    """Run ``step`` (its registry function) for the run's partition under the scenario's
    lock, waiting while a DVC command is at work in the project. Returns the step's
    result."""
    from pipelines.locks import step_lock

    name = context.partition_key
    paths = project.paths(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        return STEPS[step].function_object()(project.scenario(name), paths, **kwargs)


def record_lineage(context: dg.AssetExecutionContext, step: str, name: str, project: ScenarioGanResource) -> tuple[dg.DataVersion, dict[str, Any]]:
    """After a step wrote its outputs (and released the scenario lock): the data version
    is DVC's hash of the step's output, and the step is recorded in ``dvc.lock``
    (``dvc commit <step>@<scenario>``, waiting while a ``dvc repro`` holds DVC's lock), so
    ``dvc status`` agrees with what this materialization wrote (with ``params@<scenario>``:
    the resolved parameters it ran with). A project without DVC
    (or a scenario missing from ``dvc.yaml``) is reported in the metadata, not failed."""
    from pipelines.dvcio import data_version, record_stage, stage_name
    from pipelines.scenario import write_params

    base = Path(project.base_dir).resolve()
    version = data_version(step, name, base)
    try:
        # The parameters the step ran with, resolved as params@<scenario> resolves them,
        # so dvc.lock records them for the stage (committed with it).
        write_params(project.scenario(name), project.paths(name))
        rec = record_stage(step, name, base, also=(*_raw_tracking_files(step, name, project, base), stage_name("params", name)))
        detail = rec.detail if rec.recorded else f"not recorded: {rec.detail}"
    except Exception as e:  # noqa: BLE001 - the outputs are good; say why DVC does not know them
        detail = f"not recorded: {e}"
        context.log.warning(f"{stage_name(step, name)}: {detail}")
    return dg.DataVersion(version), {"dvc_md5": version, "dvc_stage": stage_name(step, name), "dvc": dg.MetadataValue.text(detail), "git_commit": _code_version(base)}


def _raw_tracking_files(step: str, name: str, project: ScenarioGanResource, base: Path) -> tuple[str, ...]:
    """After an ingestion, the ``.dvc`` file of the raw folder it read (``dvc add``ed by
    the user): committed with the stage, so new files a run picked up leave ``dvc status``
    clean instead of waiting for a manual ``dvc add``."""
    from pipelines.dvcio import tracking_file

    if step != "ingest":
        return ()
    try:
        sc = project.scenario(name)
        if sc.data.source == "builtin":
            return ()
        f = tracking_file(sc.data_path(project.roots().data))
    except Exception:  # noqa: BLE001 - the scenario's own step reports a bad file
        return ()
    return (os.path.relpath(f, base),) if f is not None else ()


def _code_version(base: Path) -> str:
    from pipelines.lineage import code_version

    return code_version(base, ignore=(base / "data", base / "models", base / "metrics"))


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """An image shown inline in the Dagster UI (markdown with a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
