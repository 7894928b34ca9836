"""Stage 3: the scenario's albumentations pipeline, saved with the data, and a preview."""

from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT

from .common import ScenarioGanResource, asset_arguments, png_markdown, record_lineage, rel, run_step


def routes_table(routes: list[dict]) -> str:
    """Markdown: where each listed transform acts in training, and why."""
    rows = [f"| {r['index']} | {r['name']} | {r['to']} | {r['why']} |" for r in routes]
    return "\n".join(["| # | transform | applied to | why |", "|---|---|---|---|", *rows]) if rows else "no transforms"


def augmentation_metadata(paths: ScenarioPaths) -> dict[str, Any]:
    """What the asset shows, read from the step's files (``augmented/``): a Dagster run and
    a step run by DVC show the same."""
    import json

    manifest = json.loads((paths.augmented / "manifest.json").read_text())
    policy = json.loads((paths.augmented / "policy.json").read_text())
    return {
        "n_images": dg.MetadataValue.int(int(manifest["n_images"])),
        "content_hash": manifest["content_hash"],
        "routes": dg.MetadataValue.md(routes_table(policy.get("routes") or [])),
        "pipeline": dg.MetadataValue.path(rel(paths.augmented / "pipeline.json")),
        "policy": dg.MetadataValue.path(rel(paths.augmented / "policy.json")),
        "preview": png_markdown(paths.augmented / "preview.png", f"{paths.name}: each original, then views of it as D sees a real image in training"),
    }


def build(partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    @dg.asset(**asset_arguments("augment", partitions, code_root), kinds={"python"})
    def augmented_images(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
        """Holds `data/<scenario>/augmented/`: the augmentation policy training applies
        (policy.json, the serialized albumentations pipeline) and a preview of what D sees.

        Route each transform of the scenario: symmetries of the data to the real images
        (an albumentations Compose, serialized with albumentations' own format and applied
        per batch in training, or as offline copies), image-changing transforms to D's input
        for real and generated images alike, anything else refused. Shows originals beside
        what D sees of them."""
        run_step(context, project, "augment")
        version, lineage = record_lineage(context, "augment", context.partition_key, project)
        return dg.MaterializeResult(metadata={**augmentation_metadata(project.paths(context.partition_key)), **lineage}, data_version=version)

    return augmented_images
