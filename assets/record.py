"""Dagster records what ran outside it: a step run by ``dvc repro`` (or the stage
command), and outputs DVC put in the workspace without running a stage.

    python -m assets.record train faces     # after `python -m pipelines.stage train faces`

Each DVC stage's command ends with this (``dvc.yaml``): the step is reported to the
Dagster instance (``$DAGSTER_HOME``, default ``.dagster/`` of the project, the one the
UI opens) as a materialization of its asset's partition, tagged ``entry_point: dvc``,
with the same data version, input provenance, metadata (grids, curves, tables) and
check evaluations a Dagster run records. ``SCENARIO_GAN_DAGSTER_EVENTS=off`` skips it.
A failure to record is a warning, never a failed stage: the step's outputs are good
and DVC has them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from pipelines.paths import Roots, ScenarioPaths
from pipelines.registry import ASSET_STEPS, PROJECT_ROOT, STEPS

from .common import _code_version


def report_materialization(step: str, name: str, base: Path, entry_point: str, instance: dg.DagsterInstance | None = None) -> int | None:
    """Record a step that ran outside Dagster (``dvc repro``, ``python -m pipelines.stage``)
    as a materialization of its asset's partition in the Dagster instance
    (``DAGSTER_HOME``), with the same data version and input provenance a Dagster run
    records, so the UI's history and stale markers cover both entry points.
    Returns the event's storage id."""
    from pipelines.dvcio import data_version, stage_name

    instance = instance or dg.DagsterInstance.get()
    st = STEPS[step]
    key = dg.AssetKey(st.asset)
    tags = {"dagster/data_version": data_version(step, name, base), "dagster/code_version": st.code_version(base)}
    for up in st.upstream:
        up_key = dg.AssetKey(STEPS[up].asset)
        tags[f"dagster/input_data_version/{up_key.to_user_string()}"] = data_version(up, name, base)
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=up_key, asset_partitions=[name]), limit=1).records
        tags[f"dagster/input_event_pointer/{up_key.to_user_string()}"] = str(records[0].storage_id) if records else "NULL"
    metadata = step_metadata(step, name, base)
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
    ``<step>@<scenario>`` of ``dvc.lock`` whose recorded output hash (or whose code
    version) differs from the asset partition's latest materialization in Dagster, whose
    files on disk are what ``dvc.lock`` says and whose code is what ``dvc.lock`` records,
    a runless materialization (``entry_point: dvc (restored)``) with
    the same check evaluations is recorded. Returns the stages reported. Does nothing
    while a DVC command is at work (its stages report themselves)."""
    from pipelines.dvcio import dvc_busy, dvc_hash, read_lock

    if dvc_busy(base):
        return []
    reported = []
    code_versions: dict[str, str] = {}  # one hash of each step's code per sync, not one per scenario
    for stage, entry in read_lock(base).items():
        step, _, name = stage.partition("@")
        if step not in ASSET_STEPS or (scenarios is not None and name not in scenarios):
            continue
        first = STEPS[step].outputs[0].at(name)
        recorded = next((o.get("md5") for o in entry.get("outs") or [] if o.get("path") == first), None)
        if recorded is None:
            continue
        st = STEPS[step]
        key = dg.AssetKey(st.asset)
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[name]), limit=1).records
        tags = records[0].event_log_entry.asset_materialization.tags if records else {}
        code_version = code_versions.setdefault(step, st.code_version(base))
        if tags.get("dagster/data_version") == recorded and tags.get("dagster/code_version") == code_version:
            continue
        try:
            on_disk = dvc_hash(base / first)
        except FileNotFoundError:
            continue  # not in the workspace (e.g. not pulled): nothing to show
        if on_disk != recorded:
            continue  # the workspace differs from dvc.lock: a step is at work, or the files were edited
        if not _locked_code_is_current(entry, st, base):
            continue  # dvc.lock records other code: DVC has this stage to rerun, nothing was restored
        report_materialization(step, name, base, "dvc (restored)", instance)
        reported.append(stage)
    return reported


def _locked_code_is_current(entry: dict[str, Any], st, base: Path) -> bool:
    """Whether ``dvc.lock``'s entry records the step's code as it is now (every file of
    its closure, same md5): then its outputs are what this code makes, e.g. restored
    from DVC's run cache after the code was put back."""
    from pipelines.dvcio import dvc_hash

    locked = {d.get("path"): d.get("md5") for d in entry.get("deps") or []}
    try:
        return all(locked.get(f) == dvc_hash(base / f) for f in st.code_files(base))
    except FileNotFoundError:
        return False


# The function each asset builds its metadata with, from the step's files.
_METADATA = {
    "ingest": (".ingestion", "ingestion_metadata"),
    "validate": (".validation", "validation_metadata"),
    "augment": (".augmentation", "augmentation_metadata"),
    "ruler": (".ruler", "ruler_metadata"),
    "train": (".training", "generator_metadata"),
    "evaluate": (".evaluation", "evaluation_metadata"),
}


def step_metadata(step: str, name: str, base: Path) -> dict[str, Any]:
    """The metadata the step's asset shows (grids, curves, tables), built from the step's
    files by the asset's own function (paths in it are relative to the working
    directory, the project's in a DVC stage)."""
    import importlib

    module, function = _METADATA[step]
    out = getattr(importlib.import_module(module, __package__), function)(ScenarioPaths(name, Roots.under(base)))
    return out[0] if step == "evaluate" else out  # evaluation_metadata also returns its check



def step_check_evaluations(step: str, name: str, base: Path) -> list[dict[str, Any]]:
    """The asset check evaluations a step's files say it earned, built by the same code
    the asset uses, so a step run by DVC shows the same checks as a Dagster run
    (validate: each expectation of the scenario and the blocking summary; evaluate:
    ``check_promotable``). Other steps have no checks."""
    paths = ScenarioPaths(name, Roots.under(base))
    if step == "validate":
        from pipelines.io import read_validation_summary

        from .validation import validation_checks

        own = [e["name"] for e in read_validation_summary(paths.validated)["results"]]  # the scenario's expectations
        out = validation_checks(paths, own, relative=lambda p: os.path.relpath(p, base))
        return [{"asset_key": dg.AssetKey("validated_images"), **c} for c in out]
    if step == "evaluate":
        import json

        from .evaluation import promotion_check

        check = promotion_check(json.loads(paths.metrics.read_text()), json.loads((paths.evaluation / "metrics.json").read_text())["verdict"])
        return [{**check, "asset_key": dg.AssetKey(check["asset_key"])}]
    return []


def latest_materialization(home: Path):
    """The lineage command's view of the Dagster instance at ``home``: ``view(step,
    scenario)`` -> the latest materialization of the step's asset partition, or None.
    None when there is no instance there."""
    if not (home / "dagster.yaml").is_file() and not (home / "storage").exists():
        return None
    os.environ["DAGSTER_HOME"] = str(home)

    def view(step: str, name: str) -> dict[str, Any] | None:
        asset = STEPS[step].asset
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[name]), limit=1).records
            if not records:
                return None
            r = records[0]
            m = r.event_log_entry.asset_materialization
            meta = {k: v.value for k, v in m.metadata.items()}
            run_id = r.event_log_entry.run_id or None
            return {
                "asset": asset,
                "run_id": run_id,
                "entry_point": meta.get("entry_point") or ("dagster" if run_id else "runless"),
                "timestamp": r.event_log_entry.timestamp,
                "data_version": m.tags.get("dagster/data_version"),
                "git_commit": meta.get("git_commit"),
            }

    return view


def record(step: str, name: str, base: Path, entry_point: str | None = None) -> bool:
    """Report ``<step>@<name>`` (just run outside Dagster) to the instance in
    ``$DAGSTER_HOME`` (default ``<base>/.dagster``). False, with a warning, when it
    could not; never raises."""
    if os.environ.get("SCENARIO_GAN_DAGSTER_EVENTS", "").lower() == "off" or not STEPS[step].asset:
        return False
    entry_point = entry_point or ("dvc" if os.environ.get("DVC_STAGE") else "cli")
    try:
        from .ui import prepare_home

        os.environ["DAGSTER_HOME"] = str(prepare_home(Path(os.environ.get("DAGSTER_HOME") or base / ".dagster").resolve()))
        report_materialization(step, name, base, entry_point)
        return True
    except Exception as e:  # noqa: BLE001
        print(f"warning: {step}@{name} succeeded but was not recorded in Dagster ({type(e).__name__}: {e})", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m assets.record", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=list(ASSET_STEPS))
    p.add_argument("scenario")
    p.add_argument("--base-dir", type=Path, default=PROJECT_ROOT)
    args = p.parse_args(argv)
    record(args.step, args.scenario, args.base_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
