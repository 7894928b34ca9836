"""Schedule (periodic retraining of every scenario) and sensor (new data in a
scenario's raw folder starts that scenario's chain)."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from assets.common import GROUP, ScenarioGanResource
from pipelines.io import sha256_file
from pipelines.scenario import DEFAULT_CRON, PROJECT_FILE_NAME, SCENARIO_DIR, Scenario, ScenarioError, load_each, load_project, scenario_names

PROJECT_FILE = SCENARIO_DIR / PROJECT_FILE_NAME


def retrain_cron(path: Path = PROJECT_FILE) -> str:
    """``retrain_cron`` from scenarios/_project.yaml (default weekly)."""
    return load_project(path.parent).retrain_cron if path.is_file() else DEFAULT_CRON


def build(scenarios_dir: Path = SCENARIO_DIR) -> tuple[Any, list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The scenario job, the retraining schedule (cron from ``scenarios_dir/_project.yaml``)
    and the sensors, for the definitions built from ``scenarios_dir``."""
    job = dg.define_asset_job(
        "scenario_chain",
        selection=dg.AssetSelection.groups(GROUP),
        executor_def=dg.in_process_executor,
        description="ingest -> validate -> augment, ruler -> train -> evaluate for one scenario (partition)",
    )

    @dg.schedule(job=job, cron_schedule=retrain_cron(Path(scenarios_dir) / PROJECT_FILE_NAME), name="weekly_retrain", default_status=dg.DefaultScheduleStatus.STOPPED)
    def weekly_retrain(context: dg.ScheduleEvaluationContext, project: ScenarioGanResource) -> list[dg.RunRequest] | dg.SkipReason:
        """One run per scenario: periodic retraining on the current data (cron: scenarios/_project.yaml's retrain_cron)."""
        return weekly_retrain_requests(context, project)

    @dg.sensor(job=job, name="raw_data_sensor", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
    def raw_data_sensor(context: dg.SensorEvaluationContext, project: ScenarioGanResource) -> dg.SensorResult:
        """Starts a scenario's chain once for each new version of its raw folder that has not been processed yet."""
        return raw_data_requests(context, project)

    @dg.sensor(name="dvc_restore_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
    def dvc_restore_sensor(context: dg.SensorEvaluationContext, project: ScenarioGanResource) -> dg.SkipReason:
        """Starts no runs: records in Dagster what DVC restored without running a stage (run cache, dvc checkout, dvc pull)."""
        return record_dvc_restores(context, project)

    return job, [weekly_retrain], [raw_data_sensor, dvc_restore_sensor]


def usable_scenarios(context: dg.ScheduleEvaluationContext | dg.SensorEvaluationContext, project: ScenarioGanResource) -> dict[str, Scenario]:
    """The scenarios that load, among the partitions (the scenario files of the project's
    scenarios folder); each file that does not is reported in the tick's log (the UI
    shows it on the schedule's or sensor's tick) and skipped, so one broken file never
    stops the others' runs."""
    good, broken = load_each(Path(project.scenarios_dir))
    for name, error in sorted(broken.items()):
        context.log.warning(f"scenario {name!r} skipped: {error}")
    keys = set(scenario_names(project.scenarios_dir))
    return {n: sc for n, sc in good.items() if n in keys}


def weekly_retrain_requests(context: dg.ScheduleEvaluationContext, project: ScenarioGanResource) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per scenario: periodic retraining on the current data. A scenario file
    that does not load is skipped and named in the tick's log; the others run."""
    stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    names = sorted(usable_scenarios(context, project))
    if not names:
        return dg.SkipReason(f"no usable scenario file in {project.scenarios_dir} (see this tick's log)")
    return [dg.RunRequest(partition_key=k, run_key=f"retrain-{k}-{stamp}", tags={"trigger": "schedule"}) for k in names]


def folder_fingerprint(folder: Path) -> str:
    """Content-free fingerprint of a folder: relative paths, sizes and mtimes of its files.
    Changes when a file is added, removed, renamed or rewritten."""
    h = hashlib.sha256()
    if folder.is_dir():
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                p = Path(root) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                h.update(os.fsencode(os.path.relpath(p, folder)) + b"\0" + f"{st.st_size}:{st.st_mtime_ns}".encode() + b"\n")
    return h.hexdigest()


def raw_data_requests(context: dg.SensorEvaluationContext, project: ScenarioGanResource) -> dg.SensorResult:
    """Starts a scenario's chain once for each version of its raw folder (files added,
    changed or removed) that has not been processed yet: a folder whose content is the
    one ``dvc.lock`` records for its ingestion (``dvc repro`` or an earlier run did it)
    starts nothing, also on the sensor's first tick. The cursor holds each folder's
    cheap fingerprint (paths, sizes, mtimes); the content hash is computed only when it
    changed."""
    from pipelines.dvcio import dvc_hash, processed_hash

    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    empty = folder_fingerprint(Path("/nonexistent"))
    base = project.roots().data.parent
    requests = []
    now = dict(seen)
    for name, sc in usable_scenarios(context, project).items():  # a broken file: logged, its cursor kept
        if sc.data.source == "builtin":
            continue
        try:
            src = sc.data_path(project.roots().data)
            fp = folder_fingerprint(src) if src.is_dir() else sha256_file(src) if src.is_file() else empty
            if fp == seen.get(name, empty):
                continue  # unchanged since the last tick (or still missing)
            now[name] = fp
            if fp == empty:
                continue
            content = dvc_hash(src)
        except (ScenarioError, OSError) as e:  # e.g. a data path that leads outside the data root
            context.log.warning(f"scenario {name!r} skipped: {e}")
            continue
        if content == processed_hash(base, "ingest", name, src):
            context.log.info(f"scenario {name!r}: {src} is the version dvc.lock records for ingest@{name}; nothing to do")
            continue
        requests.append(dg.RunRequest(partition_key=name, run_key=f"{name}-{content[:16]}", tags={"trigger": "new-data"}))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(now, sort_keys=True))


def record_dvc_restores(context: dg.SensorEvaluationContext, project: ScenarioGanResource) -> dg.SkipReason:
    """Starts no runs: records in Dagster what DVC restored without running a stage (its
    run cache, ``dvc checkout``, ``dvc pull``), so the UI's data versions follow the
    workspace (:func:`assets.record.sync_from_dvc`). Running by default; it reads
    ``dvc.lock`` and hashes an output only when Dagster's version differs."""
    from assets.record import sync_from_dvc

    reported = sync_from_dvc(project.roots().data.parent, context.instance, scenarios=list(usable_scenarios(context, project)))
    for stage in reported:
        context.log.info(f"{stage}: outputs restored by DVC recorded as a materialization")
    return dg.SkipReason(f"recorded {len(reported)} restored stage(s): {', '.join(reported)}" if reported else "Dagster's data versions match dvc.lock")
