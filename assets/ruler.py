"""Stage 3b: the scenario's ruler, built once per version of its real images."""

import dagster as dg

from .common import GROUP, ScenarioGanResource, record_lineage, rel, scenario_partitions, step_lock


@dg.asset(partitions_def=scenario_partitions, group_name=GROUP, deps=["validated_images"], kinds={"pytorch"}, code_version="1")
def ruler(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Holds `models/<scenario>/ruler/`: the network every model of the scenario is
    measured with, and the metrics' floors.

    The measuring stick of the scenario: a small feature network trained on its real
    training images, the held-out split, and the floor of every metric (held-out real
    images scored like a model). Every model of the scenario is measured with the same
    ruler, so scores are comparable across retrains; rebuilt only when the real images
    change."""
    from pipelines.steps.ruler import build_ruler

    name = context.partition_key
    paths = project.paths(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = build_ruler(project.scenario(name), paths)
    version, lineage = record_lineage(context, "ruler", name, project)
    return dg.MaterializeResult(
        metadata={
            "n_train": dg.MetadataValue.int(r.n_train),
            "n_heldout": dg.MetadataValue.int(r.n_heldout),
            "fid_floor": dg.MetadataValue.float(round(float(r.floor["fid_floor"]), 4)),
            "rotation_accuracy": dg.MetadataValue.float(round(float(r.train_info["final_rotation_accuracy"]), 4)),
            "ruler": dg.MetadataValue.path(rel(r.path)),
            **lineage,
        },
        data_version=version,
    )
