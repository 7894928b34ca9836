"""Stage 3: the scenario's albumentations pipeline, saved with the data, and a preview."""

import dagster as dg

from .common import GROUP, ScenarioGanResource, png_markdown, record_lineage, rel, scenario_partitions, step_lock


@dg.asset(partitions_def=scenario_partitions, group_name=GROUP, deps=["validated_images"], kinds={"python"}, code_version="1")
def augmented_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Build the albumentations Compose from the scenario file, save it with
    albumentations' own serialization beside the images (plus optional offline
    augmented copies), and show originals beside augmentations."""
    from pipelines.steps.augment import augment

    name = context.partition_key
    paths = project.paths(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = augment(project.scenario(name), paths)
    version, lineage = record_lineage(context, "augment", name, project)
    return dg.MaterializeResult(
        metadata={
            "n_images": dg.MetadataValue.int(r.n_images),
            "content_hash": r.content_hash,
            "pipeline": dg.MetadataValue.path(rel(paths.augmented / "pipeline.json")),
            "preview": png_markdown(paths.augmented / "preview.png", f"{name} originals and augmentations"),
            **lineage,
        },
        data_version=version,
    )
