"""Stage 5: metrics with their floor, memorization audit, sample grid; the blocking
check that a model must pass to be promoted."""

from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT

from .common import ScenarioGanResource, asset_arguments, png_markdown, record_lineage, rel, run_step, scenario_check

PROMOTE_CHECK = "check_promotable"
FLOATS = ("fid_over_floor", "precision", "recall", "c2st_accuracy", "sharpness_ratio", "near_copy_share", "membership_auc", "fid", "fid_floor", "kid")


def promotion_check(headline: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    """The ``check_promotable`` evaluation of one evaluation (``metrics/<s>.json`` and
    its verdict) as a plain dict (check_name, passed, severity, metadata): a Dagster run
    and a step run by DVC report the same."""
    floats = {k: dg.MetadataValue.float(round(float(headline[k]), 4)) for k in FLOATS}
    checks = "\n".join(
        ["| criterion | measure | model | bar | |", "|---|---|---|---|---|"]
        + [f"| {c['criterion']} | {c['measure']} | {c['value']:.3f} | {c['op']} {c['bar']:.3f} | {'ok' if c['passed'] else '**fails**'} |" for c in verdict["checks"]]
    )
    reasons = [f"{c['criterion']}: {c['measure']} {c['value']:.4g} fails {c['op']} {c['bar']:.4g}" for c in verdict["failed"]]
    return {
        "asset_key": "evaluation",
        "check_name": PROMOTE_CHECK,
        "passed": bool(headline["promote"]),
        "severity": dg.AssetCheckSeverity.ERROR,
        "metadata": {
            "failed_criteria": dg.MetadataValue.text(", ".join(verdict["failed_criteria"]) or "none"),
            "reasons": dg.MetadataValue.text("; ".join(reasons) or "meets the promotion bar"),
            "checks": dg.MetadataValue.md(checks),
            **floats,
        },
    }


def evaluation_metadata(paths: ScenarioPaths) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, check_promotable evaluation) of the asset, read from the step's files
    (``metrics/<s>.json``, ``eval/metrics.json`` with its verdict, the grids): a Dagster
    run and a step run by DVC show the same."""
    import json

    m = json.loads(paths.metrics.read_text())
    full = json.loads((paths.evaluation / "metrics.json").read_text())
    check = promotion_check(m, full["verdict"])
    dp = m.get("differential_privacy")
    verdict = "promoted" if m["promote"] else f"not promoted: fails {', '.join(full['verdict']['failed_criteria'])}"
    closest = full["memorization"]["closest"][:5]
    metadata = {
        "verdict": dg.MetadataValue.text(verdict),
        "checks": check["metadata"]["checks"],
        **{k: v for k, v in check["metadata"].items() if k in FLOATS},
        "membership_auc_95ci": dg.MetadataValue.text(f"{m['membership_auc_ci_low']:.3f}-{m['membership_auc_ci_high']:.3f} (0.5 = the attack cannot tell training from held-out images)"),
        "differential_privacy": dg.MetadataValue.text(f"epsilon {dp['epsilon_spent']:.3g} spent, delta {dp['delta']:g}" if dp else "not trained with differential privacy"),
        "samples": png_markdown(paths.evaluation / "samples.png", f"{paths.name} samples"),
        "interpolation": png_markdown(paths.evaluation / "interpolation.png", f"{paths.name} latent interpolation"),
        "closest_to_training": dg.MetadataValue.table(
            [dg.TableRecord({"sample": int(c["sample_index"]), "training image": int(c["train_index"]), "distance": round(float(c["distance"]), 4), "relative": round(float(c["relative"]), 3)}) for c in closest],
            schema=dg.TableSchema([dg.TableColumn("sample", "int"), dg.TableColumn("training image", "int"), dg.TableColumn("distance", "float"), dg.TableColumn("relative", "float")]),
        ),
        "metrics": dg.MetadataValue.path(rel(paths.metrics)),
    }
    return metadata, check


def build(partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    @dg.asset(
        **asset_arguments("evaluate", partitions, code_root),
        kinds={"pytorch"},
        check_specs=[
            scenario_check(
                PROMOTE_CHECK, "evaluation", partitions, blocking=True,
                description="fidelity (FID/floor, precision), diversity (recall), realism (classifier two-sample test, sharpness), memorization (near-copies) and, for medical scenarios, privacy (membership-inference AUC) within the scenario's promotion bar",
            )
        ],
    )
    def evaluation(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
        """Holds `models/<scenario>/eval/`, `metrics/<scenario>.json` and the model card:
        the verdict (promoted or not, and why), the metrics, sample and interpolation grids.

        Score the generator with the scenario's ruler (each number beside its floor:
        held-out real images), test whether a classifier tells samples from real images
        and whether they are as sharp, audit memorization and membership inference, draw sample and interpolation
        grids, and decide promotion: the verdict names every criterion that fails."""
        run_step(context, project, "evaluate")
        version, lineage = record_lineage(context, "evaluate", context.partition_key, project)
        metadata, check = evaluation_metadata(project.paths(context.partition_key))
        return dg.MaterializeResult(
            metadata={**metadata, **lineage},
            check_results=[dg.AssetCheckResult(**check)],
            data_version=version,
        )

    return evaluation
