"""Stage 5: metrics with their floor, memorization audit, sample grid; the blocking
check that a model must pass to be promoted."""

import dagster as dg

from .common import GROUP, ScenarioGanResource, png_markdown, record_lineage, rel, scenario_partitions, step_lock

PROMOTE_CHECK = "check_promotable"


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    deps=["generator"],
    kinds={"pytorch"},
    code_version="1",
    check_specs=[dg.AssetCheckSpec(PROMOTE_CHECK, asset="evaluation", blocking=True, description="FID/floor and near-copy share within the scenario's promotion bar")],
)
def evaluation(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Score the generator against held-out real images with the offline metrics and
    their floor, audit memorization, and draw sample and interpolation grids."""
    from pipelines.steps.evaluate import evaluate_step

    name = context.partition_key
    paths = project.paths(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = evaluate_step(project.scenario(name), paths)
    version, lineage = record_lineage(context, "evaluate", name, project)
    m = r.metrics
    floats = {k: dg.MetadataValue.float(float(m[k])) for k in ("fid", "fid_floor", "fid_over_floor", "kid", "precision", "recall", "near_copy_share")}
    return dg.MaterializeResult(
        metadata={
            **floats,
            "samples": png_markdown(r.samples_png, f"{name} samples"),
            "interpolation": png_markdown(r.interpolation_png, f"{name} latent interpolation"),
            "closest_to_training": dg.MetadataValue.json(m["memorization"]["closest"][:5]),
            "metrics": dg.MetadataValue.path(rel(r.metrics_path)),
            **lineage,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PROMOTE_CHECK,
                passed=r.promote,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"reasons": dg.MetadataValue.text("; ".join(r.reasons) or "meets the promotion bar"), **floats},
            )
        ],
        data_version=version,
    )
