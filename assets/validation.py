"""Stage 2: great-expectations over the per-image table, as Dagster asset checks.

One check result per expectation, with its failing files (the first 20 here, every one
in ``validated/report.json``) and how many images it set aside; the scenario decides
which ones block training, which set images aside and which only warn."""

import json
import os
from pathlib import Path
from typing import Any, Iterable

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT
from pipelines.scenario import SCENARIO_DIR, load_each

from .common import ScenarioGanResource, asset_arguments, record_lineage, rel, run_step, scenario_check

SUMMARY_CHECK = "check_blocking_expectations"


def expectation_checks(scenarios_dir: str | os.PathLike[str] = SCENARIO_DIR) -> list[str]:
    """Every expectation check of every scenario file in ``scenarios_dir`` (a partition
    runs only its own scenario's): read when the definitions are built."""
    from pipelines.steps.validate import check_names

    names: set[str] = set()
    for sc in load_each(scenarios_dir)[0].values():  # a file that does not load has no checks to declare
        names.update(check_names(sc))
    return sorted(names)


def check_results(report: dict[str, Any], report_path: str, set_aside_path: str, set_aside_files: list[str], declared: Iterable[str]) -> list[dict[str, Any]]:
    """The check evaluations of one validation (``validated/summary.json``: the report
    with each list cut to its first files, ``set_aside_files`` the first set-aside
    ones; every file is in ``report_path`` and ``set_aside_path``): one per
    expectation of the scenario that is a declared check, and the blocking summary.
    Checks of other scenarios get none: a check is only ever reported where it ran.
    Plain dicts (check_name, passed, severity, metadata), so that a Dagster run and a
    step run by DVC report the same evaluations."""
    from pipelines.steps.validate import MAX_FILES, blocks, capped_files

    declared = set(declared)
    out = []
    for e in report["results"]:
        if e["name"] not in declared:
            continue
        files = list(e.get("unexpected_files") or [])
        count = int(e.get("unexpected_count") or 0)
        metadata = {
            "expectation": e["expectation"],
            "kwargs": dg.MetadataValue.json(e["kwargs"]),
            "on_failure": e["on_failure"],
            "blocking": e["blocking"],
            "unexpected_count": dg.MetadataValue.int(count),
            "unexpected_files": dg.MetadataValue.json(files[:MAX_FILES]),
        }
        if max(count, len(files)) > MAX_FILES:
            metadata["unexpected_files_more"] = dg.MetadataValue.text(f"and {max(count, len(files)) - MAX_FILES} more; full list in {report_path}")
        if e["on_failure"] == "set_aside":
            metadata["set_aside_count"] = dg.MetadataValue.int(int(e.get("set_aside_count") or 0))
        # A set_aside check holds on the asset once its failing images are removed: it
        # passes, and its metadata says how many images that took and which.
        out.append(
            {
                "check_name": e["name"],
                "passed": bool(e["success"]) or (e["on_failure"] == "set_aside" and not blocks(e)),
                "severity": dg.AssetCheckSeverity.ERROR if blocks(e) or e["on_failure"] == "block" else dg.AssetCheckSeverity.WARN,
                "metadata": metadata,
            }
        )
    failed = [e for e in report["results"] if blocks(e)]
    out.append(
        {
            "check_name": SUMMARY_CHECK,
            "passed": bool(report["passed"]),
            "severity": dg.AssetCheckSeverity.ERROR,
            "metadata": {
                "failed": dg.MetadataValue.text(failure_summary(failed) or "none"),
                "set_aside_count": dg.MetadataValue.int(int(report.get("n_set_aside") or 0)),
                "set_aside": dg.MetadataValue.text(capped_files(set_aside_files, int(report.get("n_set_aside") or 0), full_list=set_aside_path) if set_aside_files else "none"),
                "set_aside_list": dg.MetadataValue.path(set_aside_path),
                "report": dg.MetadataValue.path(report_path),
            },
        }
    )
    return out


def failure_summary(failed: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['name']} failed on {e.get('unexpected_count') or 0} rows, e.g. {list(e.get('unexpected_files') or [])[:3]}" for e in failed)


DESCRIPTION = """Holds `data/<scenario>/validated/`: the images that passed the quality gate, the
report of every expectation, and the images set aside.

Run the scenario's expectations (great-expectations 1.x, ephemeral context) over
the ingested table. Images failing a ``set_aside`` expectation are removed and listed
in ``validated/set_aside.json``; only a dataset whose blocking expectations all pass
is written for augmentation; a failure names the expectation and the files. Checks are
evaluated per scenario (partition): an expectation that is not in a scenario's file is
not evaluated for it."""


def validation_metadata(paths: ScenarioPaths) -> dict[str, Any]:
    """What the asset shows, read from ``validated/summary.json``: a Dagster run and a
    step run by DVC show the same."""
    from pipelines.io import read_validation_summary
    from pipelines.steps.validate import blocks

    r = read_validation_summary(paths.validated)
    if r is None:
        raise FileNotFoundError(f"{paths.validated / 'report.json'} is missing: validation has not finished")
    return {
        "passed": bool(r["passed"]),
        "n_expectations": dg.MetadataValue.int(len(r["results"])),
        "n_images": dg.MetadataValue.int(int(r["n_rows"])),
        "n_kept": dg.MetadataValue.int(int(r["n_kept"])),
        "n_set_aside": dg.MetadataValue.int(int(r["n_set_aside"])),
        "failed": failure_summary([e for e in r["results"] if blocks(e)]) or "none",
    }


def validation_checks(paths: ScenarioPaths, declared: Iterable[str], relative=rel) -> list[dict[str, Any]]:
    """The check evaluations of the scenario's last validation, from its summary (the
    first files of each list: memory does not grow with the failing rows)."""
    from pipelines.io import read_validation_summary

    report = paths.validated / "report.json"
    aside = paths.validated / "set_aside.json"
    summary = read_validation_summary(paths.validated)
    if summary is None:
        raise FileNotFoundError(f"{report} is missing: validation has not finished")
    first = (summary.get("set_aside") or {}).get("first_files")
    if first is None:  # a validation written before there was a summary
        first = [a["file"] for a in json.loads(aside.read_text())] if aside.is_file() else []
    return check_results(summary, relative(report), relative(aside), first, declared)


def build(partitions: dg.PartitionsDefinition, scenarios_dir: str | os.PathLike[str] = SCENARIO_DIR, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    checks = expectation_checks(scenarios_dir)
    args = asset_arguments("validate", partitions, code_root)

    @dg.multi_asset(
        name="validated_images",
        specs=[dg.AssetSpec(args["key"], deps=args["deps"], group_name=args["group_name"], kinds={"python"}, code_version=args["code_version"], partitions_def=partitions, description=DESCRIPTION)],
        check_specs=[scenario_check(SUMMARY_CHECK, "validated_images", partitions, blocking=True, description="all blocking expectations of the scenario passed")]
        + [scenario_check(n, "validated_images", partitions, blocking=False, description="an expectation of the scenarios whose files list it") for n in checks],
        partitions_def=partitions,
        can_subset=True,  # a partition yields only its own scenario's expectation checks
    )
    def validated_images(context: dg.AssetExecutionContext, project: ScenarioGanResource):
        from pipelines.steps.validate import capped_files

        name = context.partition_key
        paths = project.paths(name)
        r = run_step(context, project, "validate")
        selected = {k.name for k in context.selected_asset_check_keys}
        results = [dg.AssetCheckResult(asset_key="validated_images", **c) for c in validation_checks(paths, checks) if c["check_name"] in selected]
        metadata = validation_metadata(paths)
        version, lineage = None, {}
        if not r.passed:
            context.log.error(f"validation of scenario {name} failed: {metadata['failed']}")
        else:
            version, lineage = record_lineage(context, "validate", name, project)
        if r.n_set_aside:
            aside = capped_files([a["file"] for a in r.set_aside], r.n_set_aside, full_list=rel(r.set_aside_path))
            context.log.warning(f"scenario {name}: set aside {r.n_set_aside} of {r.n_rows} images: {aside}")
        yield dg.MaterializeResult(asset_key="validated_images", metadata={**metadata, **lineage}, check_results=results, data_version=version)

    return validated_images
