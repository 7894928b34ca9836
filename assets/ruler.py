"""Stage 3b: the scenario's ruler, built once per version of its real images."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT

from .common import ScenarioGanResource, asset_arguments, record_lineage, rel, run_step


def ruler_metadata(paths: ScenarioPaths) -> dict[str, Any]:
    """What the asset shows, read from ``ruler/ruler.json``: a Dagster run and a step run
    by DVC show the same."""
    r = json.loads((paths.ruler / "ruler.json").read_text())
    return {
        "n_train": dg.MetadataValue.int(int(r["n_train"])),
        "n_heldout": dg.MetadataValue.int(int(r["n_heldout"])),
        "fid_floor": dg.MetadataValue.float(round(float(r["floor"]["fid_floor"]), 4)),
        "rotation_accuracy": dg.MetadataValue.float(round(float(r["feature_net"]["final_rotation_accuracy"]), 4)),
        "ruler": dg.MetadataValue.path(rel(paths.ruler)),
    }


def build(partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    @dg.asset(**asset_arguments("ruler", partitions, code_root), kinds={"pytorch"})
    def ruler(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
        """Holds `models/<scenario>/ruler/`: the network every model of the scenario is
        measured with, and the metrics' floors.

        The measuring stick of the scenario: a small feature network trained on its real
        training images, the held-out split, and the floor of every metric (held-out real
        images scored like a model). Every model of the scenario is measured with the same
        ruler, so scores are comparable across retrains; rebuilt only when the real images
        change."""
        run_step(context, project, "ruler")
        version, lineage = record_lineage(context, "ruler", context.partition_key, project)
        return dg.MaterializeResult(metadata={**ruler_metadata(project.paths(context.partition_key)), **lineage}, data_version=version)

    return ruler
