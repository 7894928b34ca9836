"""Stage 1: raw images of a scenario -> normalized images + per-image table."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT

from .common import ScenarioGanResource, asset_arguments, record_lineage, rel, run_step


def ingestion_metadata(paths: ScenarioPaths) -> dict[str, Any]:
    """What the asset shows, read from the step's files (``ingested/``): a Dagster run and
    a step run by DVC show the same."""
    m = json.loads((paths.ingested / "manifest.json").read_text())
    quarantine = json.loads((paths.ingested / "quarantine.json").read_text())
    rows = "\n".join(f"| {q['file']} | {q['reason']} |" for q in quarantine[:50])
    return {
        "n_images": dg.MetadataValue.int(int(m["n_images"])),
        "n_quarantined": dg.MetadataValue.int(int(m["n_quarantined"])),
        "n_duplicates": dg.MetadataValue.int(int(m["n_duplicates"])),
        "content_hash": m["content_hash"],
        "table": dg.MetadataValue.path(rel(paths.ingested / "table.csv")),
        "quarantine": dg.MetadataValue.md("| file | reason |\n|---|---|\n" + rows if rows else "nothing quarantined"),
    }


def build(partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    @dg.asset(**asset_arguments("ingest", partitions, code_root), kinds={"python"})
    def ingested_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
        """Holds `data/<scenario>/ingested/`: the scenario's raw files as uniform images
        (images/, sharded) and one row per image (table.csv), quarantined files apart.

        Decode, orient, convert and resize the scenario's images; write the per-image
        table (size, mode, mean/std, symmetry, content hash, duplicates). Unreadable or
        unfit files are quarantined with a reason, never dropped silently."""
        run_step(context, project, "ingest")
        version, lineage = record_lineage(context, "ingest", context.partition_key, project)
        return dg.MaterializeResult(metadata={**ingestion_metadata(project.paths(context.partition_key)), **lineage}, data_version=version)

    return ingested_images
