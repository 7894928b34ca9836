"""Stage 4: train the scenario's GAN with gan_core; losses stream to the run log."""

from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import ScenarioPaths
from pipelines.registry import PROJECT_ROOT

from .common import ScenarioGanResource, asset_arguments, png_markdown, record_lineage, rel, run_step


def generator_metadata(paths: ScenarioPaths) -> dict[str, Any]:
    """What the asset shows, read from the step's files (``summary.json``, the generator,
    ``metrics.jsonl`` drawn as ``loss_curve.png``): a Dagster run and a step run by DVC
    show the same."""
    import json

    from gan_core.plots import loss_curve_png
    from pipelines.io import sha256_file as file_sha256

    s = json.loads((paths.model / "summary.json").read_text())
    saw, dp, profile = s.get("real_transform") or {}, s.get("privacy"), s.get("profile", "cpu")
    gen = paths.model / "generator.safetensors"
    curve = loss_curve_png(paths.model / "metrics.jsonl", paths.model / "loss_curve.png")
    reals = saw.get("reals") or {}
    return {
        "generator": dg.MetadataValue.path(rel(gen)),
        "model_sha256": file_sha256(gen),
        "steps": dg.MetadataValue.int(int(s["steps"])),
        "images_seen": dg.MetadataValue.int(int(s["images_seen"])),
        "images_per_s": dg.MetadataValue.float(round(float(s["images_per_s"]), 1)),
        "wall_s": dg.MetadataValue.float(round(float(s["wall_s"]), 1)),
        "rollbacks": dg.MetadataValue.int(int(s["rollbacks"])),
        "n_train_images": dg.MetadataValue.int(int(saw.get("images", 0))),
        "profile": dg.MetadataValue.text(f"{profile} (scenarios/_project.yaml: the {'gan: + gpu:' if profile == 'gpu' else 'gan:'} budget)"),
        "real_images_augmented": dg.MetadataValue.text(f"{', '.join(reals.get('transforms') or []) or 'none'} ({reals.get('applied', 'not at all')})"),
        "d_input_ops": dg.MetadataValue.json((saw.get("discriminator") or {}).get("ops") or []),
        "ada": dg.MetadataValue.text(f"on, final p {s['ada_p']:.3f}" if s.get("ada_p") is not None else "off"),
        "differential_privacy": dg.MetadataValue.text(
            f"epsilon {dp['epsilon_spent']:.3g} spent of {dp['epsilon_budget']:g}, delta {dp['delta']:g} (noise x{dp['noise_multiplier']:.3g}, clip {dp['max_grad_norm']:g})"
            if dp else "off"
        ),
        **{f"final_{k}": dg.MetadataValue.float(round(float(v), 4)) for k, v in (s.get("final_logs") or {}).items()},
        "loss_curve": png_markdown(curve, f"{paths.name} losses"),
    }


def build(partitions: dg.PartitionsDefinition, code_root: Path = PROJECT_ROOT) -> dg.AssetsDefinition:
    @dg.asset(**asset_arguments("train", partitions, code_root), kinds={"pytorch"})
    def generator(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
        """Holds `models/<scenario>/generator.safetensors`: the trained generator, with its
        loss curve (loss.csv).

        Train (or resume) the scenario's generator with the budget `profile` of
        scenarios/_project.yaml names (cpu: `gan:`, gpu: `gan:` + `gpu:`). Checkpoints are resumable; a diverged run never
        produces a model."""
        name = context.partition_key
        every = max(1, project.scenario(name).gan_config().train.steps // 20)

        def on_event(e) -> None:
            if e.kind == "step" and (e.step % every == 0 or e.step == e.total_steps):
                context.log.info(f"[{name}] step {e.step}/{e.total_steps} " + " ".join(f"{k}={v:.4f}" for k, v in e.logs.items()))
            elif e.kind in ("rollback", "start", "end"):
                context.log.info(f"[{name}] {e.kind} at step {e.step} {e.logs}")

        run_step(context, project, "train", on_event=on_event, progress=False, profile=project.settings().profile)
        version, lineage = record_lineage(context, "train", name, project)
        return dg.MaterializeResult(metadata={**generator_metadata(project.paths(name)), **lineage}, data_version=version)

    return generator
