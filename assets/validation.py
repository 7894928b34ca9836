"""Stage 2: great-expectations over the per-image table, as Dagster asset checks.

One check result per expectation, with its failing files (the first 20 here, every one
in ``validated/report.json``) and how many images it set aside; the scenario decides
which ones block training, which set images aside and which only warn."""

import dagster as dg

from pipelines.scenario import load_each

from .common import GROUP, ScenarioGanResource, record_lineage, rel, scenario_partitions, step_lock

SUMMARY_CHECK = "check_blocking_expectations"


def _check_names() -> list[str]:
    """Every expectation check of every scenario (a partition runs its own)."""
    from pipelines.steps.validate import check_names

    names: set[str] = set()
    for sc in load_each()[0].values():  # a file that does not load has no checks to declare
        names.update(check_names(sc))
    return sorted(names)


_CHECKS = _check_names()


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    deps=["ingested_images"],
    kinds={"python"},
    code_version="2",
    check_specs=[dg.AssetCheckSpec(SUMMARY_CHECK, asset="validated_images", blocking=True, description="all blocking expectations of the scenario passed")]
    + [dg.AssetCheckSpec(n, asset="validated_images", blocking=False) for n in _CHECKS],
)
def validated_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Holds `data/<scenario>/validated/`: the images that passed the quality gate, the
    report of every expectation, and the images set aside.

    Run the scenario's expectations (great-expectations 1.x, ephemeral context) over
    the ingested table. Images failing a ``set_aside`` expectation are removed and listed
    in ``validated/set_aside.json``; only a dataset whose blocking expectations all pass
    is written for augmentation; a failure names the expectation and the files."""
    from pipelines.steps.validate import MAX_FILES, blocks, capped_files, validate

    name = context.partition_key
    paths = project.paths(name)
    scenario = project.scenario(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = validate(scenario, paths)
    report = rel(r.report_path)
    results = []
    own = set()
    for e in r.results:
        own.add(e["name"])
        if e["name"] not in _CHECKS:
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
            metadata["unexpected_files_more"] = dg.MetadataValue.text(f"and {max(count, len(files)) - MAX_FILES} more; full list in {report}")
        if e["on_failure"] == "set_aside":
            metadata["set_aside_count"] = dg.MetadataValue.int(int(e.get("set_aside_count") or 0))
        # A set_aside check holds on the asset once its failing images are removed: it
        # passes, and its metadata says how many images that took and which.
        results.append(
            dg.AssetCheckResult(
                check_name=e["name"],
                passed=bool(e["success"]) or (e["on_failure"] == "set_aside" and not blocks(e)),
                severity=dg.AssetCheckSeverity.ERROR if blocks(e) or e["on_failure"] == "block" else dg.AssetCheckSeverity.WARN,
                metadata=metadata,
            )
        )
    for other in _CHECKS:
        if other not in own:
            results.append(dg.AssetCheckResult(check_name=other, passed=True, metadata={"applies": dg.MetadataValue.text(f"not an expectation of scenario {name}")}))
    failed = [e for e in r.results if blocks(e)]
    summary = "; ".join(f"{e['name']} failed on {e.get('unexpected_count') or 0} rows, e.g. {list(e.get('unexpected_files') or [])[:3]}" for e in failed)
    aside = capped_files([a["file"] for a in r.set_aside], full_list=rel(r.set_aside_path)) if r.set_aside else "none"
    results.append(
        dg.AssetCheckResult(
            check_name=SUMMARY_CHECK,
            passed=r.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failed": dg.MetadataValue.text(summary or "none"),
                "set_aside_count": dg.MetadataValue.int(r.n_set_aside),
                "set_aside": dg.MetadataValue.text(aside),
                "set_aside_list": dg.MetadataValue.path(rel(r.set_aside_path)),
                "report": dg.MetadataValue.path(report),
            },
        )
    )
    version, lineage = None, {}
    if not r.passed:
        context.log.error(f"validation of scenario {name} failed: {summary}")
    else:
        version, lineage = record_lineage(context, "validate", name, project)
    if r.set_aside:
        context.log.warning(f"scenario {name}: set aside {r.n_set_aside} of {r.n_rows} images: {aside}")
    return dg.MaterializeResult(
        metadata={
            "passed": r.passed,
            "n_expectations": dg.MetadataValue.int(len(r.results)),
            "n_images": dg.MetadataValue.int(r.n_rows),
            "n_kept": dg.MetadataValue.int(r.n_kept),
            "n_set_aside": dg.MetadataValue.int(r.n_set_aside),
            "failed": summary or "none",
            **lineage,
        },
        check_results=results,
        data_version=version,
    )
