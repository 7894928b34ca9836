"""Pieces shared by the stage assets: partitions, the project resource, inline images."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from pipelines.dvcio import STAGE_OUTS
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import SCENARIO_DIR, ProjectSettings, Scenario, load_project, load_scenario, scenario_names

GROUP = "scenario"


# One partition per scenario file, named by the file and read lazily: a file that cannot
# be used (bad YAML, an unknown key, a wrong type) never stops the definitions from
# loading; its own runs fail with the error that names the file and the key.
scenario_partitions = dg.StaticPartitionsDefinition(scenario_names(SCENARIO_DIR))


def scenario_check(name: str, asset: str, **kwargs: Any) -> dg.AssetCheckSpec:
    """An asset check evaluated per scenario (partition): the UI shows each scenario's own
    result, not whichever scenario ran last. Partitioned checks are a preview feature of
    Dagster 1.13 (pinned in pyproject.toml; the Dagster tests exercise them)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=scenario_partitions, **kwargs)


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


def remove_stale_temp_files(paths: ScenarioPaths) -> list[Path]:
    """Temporary files (``.<name>.*.tmp``) that a killed writer left in the scenario's
    output folders. Only called with the scenario lock held, when no writer of this
    scenario is alive, so every such file is debris: removed, never read, and never
    recorded by DVC as part of an output."""
    removed = []
    for d in (paths.ingested, paths.validated, paths.augmented, paths.ruler, paths.model, paths.model / "checkpoints", paths.evaluation):
        removed += [p for p in d.glob(".*.tmp") if p.is_file()] if d.is_dir() else []
    removed += [p for p in paths.metrics.parent.glob(f".{paths.metrics.name}.*.tmp") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


@contextmanager
def scenario_lock(paths: ScenarioPaths) -> Iterator[None]:
    """One writer per scenario at a time, whichever entry point (UI, schedule, sensor,
    dvc repro) started it: an exclusive flock on ``<data>/<scenario>/.lock``."""
    lock = paths.roots.data / paths.name / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            remove_stale_temp_files(paths)
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def record_lineage(context: dg.AssetExecutionContext, step: str, name: str, project: ScenarioGanResource) -> tuple[dg.DataVersion, dict[str, Any]]:
    """After a step wrote its outputs (and released the scenario lock): the data version
    is DVC's hash of the step's output, and the step is recorded in ``dvc.lock``
    (``dvc commit <step>@<scenario>``, waiting while a ``dvc repro`` holds DVC's lock), so
    ``dvc status`` agrees with what this materialization wrote. A project without DVC
    (or a scenario missing from ``dvc.yaml``) is reported in the metadata, not failed."""
    from pipelines.dvcio import data_version, record_stage, stage_name

    base = Path(project.base_dir).resolve()
    version = data_version(step, name, base)
    try:
        rec = record_stage(step, name, base, also=_raw_tracking_files(step, name, project, base))
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


# The asset each pipeline step materializes, and the step upstream of it.
STEP_ASSETS = {"ingest": "ingested_images", "validate": "validated_images", "augment": "augmented_images", "ruler": "ruler", "train": "generator", "evaluate": "evaluation"}
# The upstream assets each asset declares (its data versions are recorded as inputs).
UPSTREAM_STEPS = {"validate": ("ingest",), "augment": ("validate",), "ruler": ("validate",), "train": ("augment",), "evaluate": ("train", "ruler")}


def _asset_code_version(step: str) -> str | None:
    from pipelines.definitions import defs

    key = dg.AssetKey(STEP_ASSETS[step])
    return defs.resolve_asset_graph().get(key).code_version


def report_materialization(step: str, name: str, base: Path, summary: dict[str, Any], entry_point: str, instance: dg.DagsterInstance | None = None) -> int | None:
    """Record a step that ran outside Dagster (``dvc repro``, ``python -m pipelines.stage``)
    as a materialization of its asset's partition in the Dagster instance
    (``DAGSTER_HOME``), with the same data version and input provenance a Dagster run
    records, so the UI's history and stale markers cover both entry points.
    Returns the event's storage id."""
    from pipelines.dvcio import data_version, stage_name

    instance = instance or dg.DagsterInstance.get()
    key = dg.AssetKey(STEP_ASSETS[step])
    tags = {"dagster/data_version": data_version(step, name, base), "dagster/code_version": _asset_code_version(step) or "1"}
    for up in UPSTREAM_STEPS.get(step, ()):
        up_key = dg.AssetKey(STEP_ASSETS[up])
        tags[f"dagster/input_data_version/{up_key.to_user_string()}"] = data_version(up, name, base)
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=up_key, asset_partitions=[name]), limit=1).records
        tags[f"dagster/input_event_pointer/{up_key.to_user_string()}"] = str(records[0].storage_id) if records else "NULL"
    metadata = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool))}
    metadata.update(step_metadata(step, name, base))
    metadata.update(entry_point=entry_point, dvc_stage=stage_name(step, name), dvc_md5=tags["dagster/data_version"], git_commit=_code_version(base))
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=name, metadata=metadata, tags=tags))
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[name]), limit=1).records
    target = None
    if records:
        rec = records[0]
        target = AssetCheckEvaluationTargetMaterializationData(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)
    _report_check_evaluations(instance, [dg.AssetCheckEvaluation(partition=name, target_materialization_data=target, **c) for c in step_check_evaluations(step, name, base)])
    return records[0].storage_id if records else None


def _report_check_evaluations(instance: dg.DagsterInstance, evaluations: list[dg.AssetCheckEvaluation]) -> None:
    """Record check evaluations of a step that ran outside Dagster, per partition.

    Dagster 1.13 stores a runless check evaluation in a row keyed by (asset, check,
    run id "", partition), so a second runless evaluation of the same check and
    partition fails on that key and the first would be shown forever. Each report
    therefore gets an id of its own (``dvc-<uuid>``, no Dagster run behind it: the
    evaluation's run link leads nowhere), and the partition's check status is always
    that of the latest step."""
    import uuid

    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.instance.utils import RUNLESS_JOB_NAME

    report_id = f"dvc-{uuid.uuid4()}"
    for ev in evaluations:
        instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value, job_name=RUNLESS_JOB_NAME, event_specific_data=ev),
            run_id=report_id,
        )


def sync_from_dvc(base: Path, instance: dg.DagsterInstance, scenarios: list[str] | None = None) -> list[str]:
    """Report to Dagster every stage output that DVC put in the workspace without running
    the stage's command: a restore from DVC's run cache ("cached - skipping run, checking
    out outputs"), ``dvc checkout`` after a ``git checkout``, ``dvc pull``. For each
    ``<step>@<scenario>`` of ``dvc.lock`` whose recorded output hash differs from the
    asset partition's latest data version in Dagster, and whose files on disk are what
    ``dvc.lock`` says, a runless materialization (``entry_point: dvc (restored)``) with
    the same check evaluations is recorded. Returns the stages reported. Does nothing
    while a DVC command is at work (its stages report themselves)."""
    from pipelines.dvcio import dvc_busy, dvc_hash, read_lock

    if dvc_busy(base):
        return []
    reported = []
    for stage, entry in read_lock(base).items():
        step, _, name = stage.partition("@")
        if step not in STEP_ASSETS or (scenarios is not None and name not in scenarios):
            continue
        first = STAGE_OUTS[step][0].format(s=name)
        recorded = next((o.get("md5") for o in entry.get("outs") or [] if o.get("path") == first), None)
        if recorded is None:
            continue
        key = dg.AssetKey(STEP_ASSETS[step])
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[name]), limit=1).records
        known = records[0].event_log_entry.asset_materialization.tags.get("dagster/data_version") if records else None
        if known == recorded:
            continue
        try:
            on_disk = dvc_hash(base / first)
        except FileNotFoundError:
            continue  # not in the workspace (e.g. not pulled): nothing to show
        if on_disk != recorded:
            continue  # the workspace differs from dvc.lock: a step is at work, or the files were edited
        report_materialization(step, name, base, {}, "dvc (restored)", instance)
        reported.append(stage)
    return reported


def step_metadata(step: str, name: str, base: Path) -> dict[str, Any]:
    """The metadata the step's asset shows (grids, curves, tables), built from the step's
    files by the asset's own function, for a step that ran outside Dagster (paths in it
    are relative to the working directory, the project's in a DVC stage)."""
    paths = ScenarioPaths(name, Roots.under(base))
    if step == "augment":
        from .augmentation import augmentation_metadata

        return augmentation_metadata(paths)
    if step == "train":
        from .training import generator_metadata

        return generator_metadata(paths)
    if step == "evaluate":
        from .evaluation import evaluation_metadata

        return evaluation_metadata(paths)[0]
    return {}


def step_check_evaluations(step: str, name: str, base: Path) -> list[dict[str, Any]]:
    """The asset check evaluations a step's files say it earned, built by the same code
    the asset uses, so a step run by DVC shows the same checks as a Dagster run
    (validate: every expectation of the scenario and the blocking summary; evaluate:
    ``check_promotable``). Other steps have no checks."""
    paths = ScenarioPaths(name, Roots.under(base))
    relative = lambda p: os.path.relpath(p, base)  # noqa: E731
    if step == "validate":
        from .validation import _CHECKS, check_results

        report = paths.validated / "report.json"
        aside = paths.validated / "set_aside.json"
        files = [a["file"] for a in json.loads(aside.read_text())] if aside.is_file() else []
        out = check_results(json.loads(report.read_text()), relative(report), relative(aside), files, _CHECKS)
        return [{"asset_key": dg.AssetKey("validated_images"), **c} for c in out]
    if step == "evaluate":
        from .evaluation import promotion_check

        check = promotion_check(json.loads(paths.metrics.read_text()), json.loads((paths.evaluation / "metrics.json").read_text())["verdict"])
        return [{**check, "asset_key": dg.AssetKey(check["asset_key"])}]
    return []


@contextmanager
def step_lock(paths: ScenarioPaths, base: Path, *, poll_s: float = 1.0, log=None) -> Iterator[None]:
    """The scenario lock, taken only while no DVC command runs in the project at ``base``.

    A ``dvc repro`` records a stage's outputs after the stage's process has exited (and
    released the scenario lock); a step that rewrote them in between would make DVC
    record, or fail on, half of another run. So a step outside DVC waits until DVC is
    idle, checked while holding the scenario lock (a ``dvc repro`` that starts later
    then waits for this step on the scenario lock). Inside a DVC stage (``DVC_STAGE``
    set) the check is skipped: that DVC command is the one holding its lock."""
    from pipelines.dvcio import dvc_busy

    waited = False
    while True:
        with scenario_lock(paths):
            if os.environ.get("DVC_STAGE") or not dvc_busy(base):
                yield
                return
        if not waited and log is not None:
            log(f"{paths.name}: a DVC command is running in {base}; waiting for it to finish")
        waited = True
        time.sleep(poll_s)


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """An image shown inline in the Dagster UI (markdown with a data URI)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
