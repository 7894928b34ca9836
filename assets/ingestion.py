"""Stage 1: raw images of a scenario -> normalized images + per-image table."""

import dagster as dg

from .common import GROUP, ScenarioGanResource, record_lineage, rel, scenario_partitions, step_lock


@dg.asset(partitions_def=scenario_partitions, group_name=GROUP, kinds={"python"}, code_version="1")
def ingested_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Holds `data/<scenario>/ingested/`: the scenario's raw files as uniform images
    (images.npz) and one row per image (table.csv), quarantined files apart.

    Decode, orient, convert and resize the scenario's images; write the per-image
    table (size, mode, mean/std, symmetry, content hash, duplicates). Unreadable or
    unfit files are quarantined with a reason, never dropped silently."""
    from pipelines.steps.ingest import ingest

    name = context.partition_key
    paths = project.paths(name)
    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = ingest(project.scenario(name), paths)
    version, lineage = record_lineage(context, "ingest", name, project)
    quarantine = "\n".join(f"| {q['file']} | {q['reason']} |" for q in r.quarantine[:50])
    return dg.MaterializeResult(
        metadata={
            "n_images": dg.MetadataValue.int(r.n_images),
            "n_quarantined": dg.MetadataValue.int(r.n_quarantined),
            "n_duplicates": dg.MetadataValue.int(r.n_duplicates),
            "content_hash": r.content_hash,
            "table": dg.MetadataValue.path(rel(paths.ingested / "table.csv")),
            "quarantine": dg.MetadataValue.md("| file | reason |\n|---|---|\n" + quarantine if quarantine else "nothing quarantined"),
            **lineage,
        },
        data_version=version,
    )
