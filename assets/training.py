"""Stage 4: train the scenario's GAN with gan_core; losses stream to the run log."""

import dagster as dg

from .common import GROUP, ScenarioGanResource, png_markdown, record_lineage, rel, scenario_partitions, step_lock


@dg.asset(partitions_def=scenario_partitions, group_name=GROUP, deps=["augmented_images"], kinds={"pytorch"}, code_version="1")
def generator(context: dg.AssetExecutionContext, project: ScenarioGanResource) -> dg.MaterializeResult:
    """Holds `models/<scenario>/generator.safetensors`: the trained generator, with its
    loss curve (loss.csv).

    Train (or resume) the scenario's generator with the budget `profile` of
    scenarios/_project.yaml names (cpu: `gan:`, gpu: `gan:` + `gpu:`). Checkpoints are resumable; a diverged run never
    produces a model."""
    from gan_core.plots import loss_curve_png
    from pipelines.steps.train import train_step

    name = context.partition_key
    paths = project.paths(name)
    scenario = project.scenario(name)
    every = max(1, scenario.gan_config().train.steps // 20)

    def on_event(e) -> None:
        if e.kind == "step" and (e.step % every == 0 or e.step == e.total_steps):
            context.log.info(f"[{name}] step {e.step}/{e.total_steps} " + " ".join(f"{k}={v:.4f}" for k, v in e.logs.items()))
        elif e.kind in ("rollback", "start", "end"):
            context.log.info(f"[{name}] {e.kind} at step {e.step} {e.logs}")

    with step_lock(paths, project.roots().data.parent, log=context.log.info):
        r = train_step(scenario, paths, on_event=on_event, progress=False, profile=project.settings().profile)
    curve = loss_curve_png(paths.model / "metrics.jsonl", paths.model / "loss_curve.png")
    version, lineage = record_lineage(context, "train", name, project)
    return dg.MaterializeResult(
        metadata={
            "generator": dg.MetadataValue.path(rel(r.generator_path)),
            "model_sha256": r.model_hash,
            "steps": dg.MetadataValue.int(r.steps),
            "images_seen": dg.MetadataValue.int(r.images_seen),
            "images_per_s": dg.MetadataValue.float(round(float(r.images_per_s), 1)),
            "wall_s": dg.MetadataValue.float(round(float(r.wall_s), 1)),
            "rollbacks": dg.MetadataValue.int(r.rollbacks),
            "n_train_images": dg.MetadataValue.int(r.n_train_images),
            "profile": dg.MetadataValue.text(f"{r.profile} (scenarios/_project.yaml: the {'gan: + gpu:' if r.profile == 'gpu' else 'gan:'} budget)"),
            "real_images_augmented": dg.MetadataValue.text(f"{', '.join(r.training_saw['reals']['transforms']) or 'none'} ({r.training_saw['reals']['applied']})"),
            "d_input_ops": dg.MetadataValue.json(r.training_saw["discriminator"]["ops"]),
            "ada": dg.MetadataValue.text(f"on, final p {r.ada_p:.3f}" if r.ada_p is not None else "off"),
            "differential_privacy": dg.MetadataValue.text(
                f"epsilon {r.privacy['epsilon_spent']:.3g} spent of {r.privacy['epsilon_budget']:g}, delta {r.privacy['delta']:g} "
                f"(noise x{r.privacy['noise_multiplier']:.3g}, clip {r.privacy['max_grad_norm']:g})"
                if r.privacy else "off"
            ),
            **{f"final_{k}": dg.MetadataValue.float(round(float(v), 4)) for k, v in r.final_logs.items()},
            "loss_curve": png_markdown(curve, f"{name} losses"),
            **lineage,
        },
        data_version=version,
    )
