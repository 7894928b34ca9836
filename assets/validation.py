"""Stage 2: great-expectations over the per-image table, as Dagster asset checks.

One check result per expectation, with the failing files in its metadata; the
scenario decides which ones block training."""

import dagster as dg

from pipelines.scenario import load_all

from .common import GROUP, ScenarioGanResource, record_lineage, rel, scenario_partitions, step_lock

SUMMARY_CHECK = "check_blocking_expectations"


def _check_names() -> list[str]:
    """Every expectation check of every scenario (a partition runs its own)."""
    from pipelines.steps.validate import check_names

    names: set[str] = set()
    for sc in load_all().values():
        names.update(check_names(sc))
    return sorted(names)


_CHECKS = _check_names()


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    deps=["raw_images"],
    kinds={"python"},
    code_version="1",
    check_specs=[dg.AssetCheckSpec(SUMMARY_CHECK, asset="validated_images", blocking=True, description="all blocking expectations of the scenario passed")]
    + [dg.AssetCheckSpec(n, asset="validated_images", blocking=False) for n in _CHECKS],
)
def validated_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Run the scenario's expectations (great-expectations 1.x, ephemeral context) over
    the ingested table. Only a dataset whose blocking expectations all pass is written
    for augmentation; a failure names the expectation and the files."""
    from pipelines.steps.validate import validate

    name = context.partition_key
    paths = project.paths(name)
    scenario = project.scenario(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = validate(scenario, paths)
    results = []
    own = set()
    for e in r.results:
        own.add(e["name"])
        if e["name"] not in _CHECKS:
            continue
        results.append(
            dg.AssetCheckResult(
                check_name=e["name"],
                passed=bool(e["success"]),
                severity=dg.AssetCheckSeverity.ERROR if e["blocking"] else dg.AssetCheckSeverity.WARN,
                metadata={
                    "expectation": e["expectation"],
                    "kwargs": dg.MetadataValue.json(e["kwargs"]),
                    "blocking": e["blocking"],
                    "unexpected_count": dg.MetadataValue.int(int(e.get("unexpected_count") or 0)),
                    "unexpected_files": dg.MetadataValue.json(list(e.get("unexpected_files") or [])),
                },
            )
        )
    for other in _CHECKS:
        if other not in own:
            results.append(dg.AssetCheckResult(check_name=other, passed=True, metadata={"applies": dg.MetadataValue.text(f"not an expectation of scenario {name}")}))
    failed = [e for e in r.results if e["blocking"] and not e["success"]]
    summary = "; ".join(f"{e['name']} failed on {e.get('unexpected_count') or 0} rows, e.g. {list(e.get('unexpected_files') or [])[:3]}" for e in failed)
    results.append(
        dg.AssetCheckResult(
            check_name=SUMMARY_CHECK,
            passed=r.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failed": dg.MetadataValue.text(summary or "none"), "report": dg.MetadataValue.path(rel(paths.validated / "report.json"))},
        )
    )
    version, lineage = None, {}
    if not r.passed:
        context.log.error(f"validation of scenario {name} failed: {summary}")
    else:
        version, lineage = record_lineage(context, "validate", name, project)
    return dg.MaterializeResult(
        metadata={"passed": r.passed, "n_expectations": dg.MetadataValue.int(len(r.results)), "failed": summary or "none", **lineage},
        check_results=results,
        data_version=version,
    )
