"""The trainer on tiny real data: it trains, logs, checkpoints, resumes bit-exactly,
guards against divergence and refuses unsafe or mismatched checkpoints."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_core.checkpoint import CheckpointError, list_checkpoints, load_generator, load_tensors
from gan_core.config import load_config
from gan_core.trainer import DivergenceError, Trainer, train

from .conftest import tiny_config

RECIPE = {
    "loss": "hinge", "r1_gamma": 0.1, "diffaug": "color,translation,cutout", "ema_half_life_images": 200, "ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2,
    # ADA with a fast schedule, so its strength moves within a dozen steps (and resumes must carry it)
    "augment": [{"op": "affine", "p": 0.5, "translate": 0.05, "scale": [0.9, 1.1], "rotate": 5}], "ada": True, "ada_interval": 2, "ada_speed_images": 200,
}


def test_few_steps_train_log_and_save(digits16, tmp_path):
    events = []
    cfg = load_config(tiny_config(**RECIPE))
    result = train(cfg, digits16, tmp_path, callbacks=[events.append])
    assert result.steps == 12 and result.images_seen == 12 * 16 and result.rollbacks == 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    for key in ("loss_d", "loss_g", "r1", "rot_d", "rot_g", "ema_beta", "ada_p"):
        assert all(math.isfinite(r[key]) for r in lines), key
    assert all(0 <= r["ada_p"] <= 1 for r in lines) and len({r["ada_p"] for r in lines}) > 1, "ADA's strength must move"
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("step") == 12 and kinds.count("checkpoint") == 3
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [8, 12]  # keep_checkpoints=2
    g, loaded_cfg, meta = load_generator(result.generator_path)
    assert loaded_cfg == cfg and meta["step"] == 12 and meta["ema"] is True
    assert g(torch.randn(2, 16)).shape == (2, 1, 16, 16)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["images_per_s"] > 0


def test_training_moves_the_generator_towards_the_data(digits16, tmp_path):
    """After a short run the samples' mean image is much nearer the data's than at init."""
    from gan_core.models import build_models
    from gan_core.sampling import generate, latents

    cfg = load_config(tiny_config(steps=150, checkpoint_every=150, lr_g=1e-3, lr_d=1e-3))
    g0, _ = build_models(cfg)
    result = train(cfg, digits16, tmp_path)
    g1, _, _ = load_generator(result.generator_path)
    target = torch.tensor(digits16, dtype=torch.float32).div(127.5).sub(1).mean(0)  # (H, W)
    z = latents(256, 16, seed=0)
    err0 = (generate(g0, z)[:, 0].mean(0) - target).square().mean()
    err1 = (generate(g1, z)[:, 0].mean(0) - target).square().mean()
    assert err1 < err0 * 0.5, (err0, err1)


def test_same_seed_same_bytes_other_seed_other_bytes(digits16, tmp_path):
    cfg = load_config(tiny_config(**RECIPE))
    a = train(cfg, digits16, tmp_path / "a").generator_path.read_bytes()
    b = train(cfg, digits16, tmp_path / "b").generator_path.read_bytes()
    c = train(load_config(tiny_config(**RECIPE, seed=4)), digits16, tmp_path / "c").generator_path.read_bytes()
    assert a == b
    assert a != c


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "gan_core.cli", "--no-progress", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_then_resume_is_byte_identical(digits16, tmp_path):
    np.savez(tmp_path / "data.npz", images=digits16)
    cfg = tiny_config(**RECIPE, steps=120, checkpoint_every=10)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    common = ["--data", str(tmp_path / "data.npz"), "--config", str(tmp_path / "cfg.json")]

    ref = _run_cli(common + ["--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    out = tmp_path / "killed"
    proc = _run_cli(common + ["--out", str(out)])
    deadline = time.time() + 120
    while time.time() < deadline and not any(s >= 30 for s, _ in list_checkpoints(out / "checkpoints")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; raise steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(out / "checkpoints")[-1][0]
    assert 30 <= killed_at < 120
    assert not (out / "generator.safetensors").exists()

    resumed = _run_cli(common + ["--out", str(out)])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert (out / "generator.safetensors").read_bytes() == (tmp_path / "ref" / "generator.safetensors").read_bytes()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121)), "metrics.jsonl must hold each step once after resume"


def test_training_from_shards_is_byte_identical_to_memory_and_resumes_exactly(digits16, tmp_path):
    """Batches read from a sharded dataset on disk (per step, positional reads) are the
    same images as from memory: the same model bytes, with and without a per-batch
    transform, and a run extended from a checkpoint ends where a straight one does."""
    from gan_core.shards import open_images, write_images

    write_images(tmp_path / "data", digits16[..., None], target=64)  # several shards
    data = open_images(tmp_path / "data")
    assert len(data._index["shards"]) > 1 and not isinstance(data, np.ndarray)
    cfg = load_config(tiny_config(**RECIPE))
    mem = train(cfg, digits16, tmp_path / "mem").generator_path.read_bytes()
    assert train(cfg, data, tmp_path / "disk").generator_path.read_bytes() == mem
    sub = data.subset(np.arange(10, 190))  # a row subset (the training split) stays lazy
    assert train(cfg, sub, tmp_path / "sub").generator_path.read_bytes() == train(cfg, digits16[10:190], tmp_path / "sub_mem").generator_path.read_bytes()
    kw = {"real_transform": _flip_rows}
    assert Trainer(cfg, data, tmp_path / "t_disk", **kw).fit().generator_path.read_bytes() == Trainer(cfg, digits16, tmp_path / "t_mem", **kw).fit().generator_path.read_bytes()
    train(load_config(tiny_config(**RECIPE, steps=8)), data, tmp_path / "ext")
    assert train(cfg, data, tmp_path / "ext").resumed_from == 8
    assert (tmp_path / "ext" / "generator.safetensors").read_bytes() == mem


def test_resume_extends_a_finished_run_exactly(digits16, tmp_path):
    full = train(load_config(tiny_config(steps=12)), digits16, tmp_path / "full").generator_path.read_bytes()
    train(load_config(tiny_config(steps=8)), digits16, tmp_path / "ext")
    assert train(load_config(tiny_config(steps=12)), digits16, tmp_path / "ext").resumed_from == 8
    assert (tmp_path / "ext" / "generator.safetensors").read_bytes() == full


def test_checkpoints_of_another_run_key_are_not_resumed(digits16, tmp_path):
    cfg = load_config(tiny_config(steps=8))
    train(cfg, digits16, tmp_path, run_key="data-a")
    assert train(load_config(tiny_config(steps=12)), digits16, tmp_path, run_key="data-a").resumed_from == 8
    other = train(load_config(tiny_config(steps=12)), digits16, tmp_path, run_key="data-b")
    assert other.resumed_from is None  # started over: the checkpoints were made on other data
    fresh = train(load_config(tiny_config(steps=12)), digits16, tmp_path / "fresh", run_key="data-b")
    assert other.generator_path.read_bytes() == fresh.generator_path.read_bytes()
    _, meta = load_tensors(list_checkpoints(tmp_path / "checkpoints")[-1][1])
    assert meta["run_key"] == "data-b"


def test_importing_the_command_line_leaves_the_package_train_function_alone():
    import gan_core
    import gan_core.cli  # noqa: F401 - a submodule named unlike any exported name

    assert gan_core.train is train
    assert not (Path(gan_core.__file__).parent / "train.py").exists()


def test_the_command_line_hands_its_arguments_to_the_trainer(digits16, tmp_path, monkeypatch, capsys):
    from gan_core import cli

    made = []

    class FakeTrainer:
        is_main, rank = True, 0

        def __init__(self, cfg, images, out, *, progress, resume):
            made.append({"cfg": cfg, "images": images, "out": out, "progress": progress, "resume": resume})

        def fit(self):
            return types.SimpleNamespace(generator_path=tmp_path / "g.safetensors", steps=made[-1]["cfg"].train.steps, images_per_s=1.0)

    monkeypatch.setattr("gan_core.trainer.Trainer", FakeTrainer)
    np.savez(tmp_path / "data.npz", images=digits16)
    assert cli.main(["--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "o"), "--set", "train.steps=3", "--fresh", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 3
    (call,) = made
    assert call["out"] == str(tmp_path / "o") and call["progress"] is False and call["resume"] is False
    assert np.array_equal(call["images"], digits16)
    assert cli.main(["--dry-run", "--out", str(tmp_path / "d")]) == 0
    assert made[-1]["progress"] is None and made[-1]["resume"] is True and made[-1]["cfg"].model.resolution == 16


def test_a_fresh_start_does_not_append_to_an_old_log(digits16, tmp_path):
    cfg = load_config(tiny_config(steps=6, log_every=1))
    train(cfg, digits16, tmp_path)
    for _, p in list_checkpoints(tmp_path / "checkpoints"):
        p.unlink()  # what the pipeline does once a run finished
    train(cfg, digits16, tmp_path)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_resume_refuses_a_changed_config(digits16, tmp_path):
    train(load_config(tiny_config(steps=4)), digits16, tmp_path)
    with pytest.raises(CheckpointError, match=r"train\.lr_d"):
        train(load_config(tiny_config(steps=8, lr_d=1e-3)), digits16, tmp_path)
    # starting over is explicit
    assert train(load_config(tiny_config(steps=4, lr_d=1e-3)), digits16, tmp_path, resume=False).resumed_from is None


def _poison_once(trainer: Trainer, at_step: int):
    fired = []

    def callback(event):
        if event.kind == "step" and event.step == at_step and not fired:
            fired.append(event.step)
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("nan"))

    return callback


def test_nan_rolls_back_to_last_checkpoint_with_lower_lr(digits16, tmp_path):
    cfg = load_config(tiny_config(on_divergence="rollback"))
    trainer = Trainer(cfg, digits16, tmp_path)
    events = []
    trainer.callbacks += [_poison_once(trainer, 6), events.append]
    result = trainer.fit()
    assert result.rollbacks == 1 and result.steps == 12
    rb = [e for e in events if e.kind == "rollback"]
    assert len(rb) == 1 and rb[0].step == 4 and rb[0].logs["lr_scale"] == 0.5
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.train.lr_d * 0.5)
    g, _, _ = load_generator(result.generator_path)
    assert all(torch.isfinite(p).all() for p in g.parameters())
    log = (tmp_path / "metrics.jsonl").read_text()
    assert '"event": "rollback"' in log


def test_nan_stops_with_a_clear_error_and_no_model(digits16, tmp_path):
    cfg = load_config(tiny_config(on_divergence="stop"))
    trainer = Trainer(cfg, digits16, tmp_path)
    trainer.callbacks.append(_poison_once(trainer, 6))
    with pytest.raises(DivergenceError, match=r"non-finite loss at step 7.*ckpt-00000004"):
        trainer.fit()
    assert not (tmp_path / "generator.safetensors").exists()


def test_rollbacks_are_bounded(digits16, tmp_path):
    cfg = load_config(tiny_config(max_rollbacks=2))
    trainer = Trainer(cfg, digits16, tmp_path)

    def always(event):
        if event.kind == "step" and event.step == 6:
            with torch.no_grad():
                next(trainer.G.parameters()).fill_(float("inf"))

    trainer.callbacks.append(always)
    with pytest.raises(DivergenceError, match="2 rollback"):
        trainer.fit()
    assert not (tmp_path / "generator.safetensors").exists()


class _Payload:
    def __reduce__(self):
        return (print, ("payload executed",))


@pytest.mark.parametrize("loader", ["checkpoint", "generator"])
def test_pickle_checkpoints_are_refused(tmp_path, capsys, loader):
    bad = tmp_path / ("ckpt-00000004.safetensors" if loader == "checkpoint" else "generator.safetensors")
    bad.write_bytes(pickle.dumps({"G.weight": _Payload()}))
    fn = load_tensors if loader == "checkpoint" else load_generator
    with pytest.raises(CheckpointError, match="refusing to load"):
        fn(bad)
    assert "payload executed" not in capsys.readouterr().out


def test_torch_save_file_is_refused_on_resume(digits16, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 4}, tmp_path / "checkpoints" / "ckpt-00000004.safetensors")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        train(load_config(tiny_config()), digits16, tmp_path)


def test_half_written_checkpoint_is_ignored(digits16, tmp_path):
    train(load_config(tiny_config(steps=4)), digits16, tmp_path)
    stale = tmp_path / "checkpoints" / ".ckpt-00000008.safetensors.abc.tmp"
    stale.write_bytes(b"\x00" * 10)  # what a writer killed mid-write leaves behind
    result = train(load_config(tiny_config(steps=8)), digits16, tmp_path)
    assert result.resumed_from == 4 and not stale.exists()


def test_bad_data_is_rejected_with_a_reason(digits16, tmp_path):
    cfg = load_config(tiny_config())
    with pytest.raises(ValueError, match=r"model.channels/model.resolution"):
        Trainer(cfg, np.zeros((10, 32, 32, 3), np.uint8), tmp_path)
    nan = torch.zeros(10, 1, 16, 16)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Trainer(cfg, nan, tmp_path)


def test_cli_dry_run(tmp_path):
    proc = _run_cli(["--dry-run", "--out", str(tmp_path)])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out.decode().splitlines()[-1])["steps"] == 5
    assert (tmp_path / "generator.safetensors").exists()


def test_cli_rejects_bad_config_with_exit_2(tmp_path):
    (tmp_path / "cfg.yaml").write_text("model:\n  arch: stylegan\n")
    proc = _run_cli(["--dry-run", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "o")])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and b"model.arch" in err and b"cfg.yaml" in err


@pytest.mark.parametrize("arch", ["seed-dcgan", "dcgan"])
def test_generator_file_round_trips_its_config(tmp_path, arch):
    from gan_core.checkpoint import save_generator
    from gan_core.models import build_models

    cfg = load_config({"model": {"arch": arch, "resolution": 16, "channels": 1}})
    g, _ = build_models(cfg)
    g2, cfg2, _ = load_generator(save_generator(tmp_path / "g.safetensors", g, cfg))
    assert cfg2 == cfg
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values()))


def test_bf16_autocast_path_trains_on_cpu(digits16, tmp_path):
    """The mixed-precision path used on CUDA (bf16 autocast), exercised on the CPU."""
    cfg = load_config(tiny_config(steps=4, amp="bf16", **RECIPE))
    trainer = Trainer(cfg, digits16, tmp_path)
    assert trainer.amp and trainer.channels_last
    result = trainer.fit()
    g, _, _ = load_generator(result.generator_path)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in g.parameters())
    assert all(math.isfinite(v) for v in result.final_logs.values())


def _flip_rows(batch: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded real-image transform: flips a seed-chosen half of the batch left-right."""
    pick = torch.randperm(batch.shape[0], generator=torch.Generator().manual_seed(seed))[: batch.shape[0] // 2]
    out = batch.clone()
    out[pick] = out[pick].flip(-1)
    return out


def test_real_transform_gets_a_seed_per_step_and_resumes_exactly(digits16, tmp_path):
    from gan_core.trainer import real_transform_seed

    seen: list[int] = []

    def recording(batch, seed):
        seen.append(seed)
        return _flip_rows(batch, seed)

    cfg = load_config(tiny_config(steps=12))
    full = train(cfg, digits16, tmp_path / "full", real_transform=recording, describe={"flip": "half"})
    assert seen == [real_transform_seed(3, step, 0) for step in range(1, 13)]
    assert len(set(seen)) == 12
    _, _, meta = load_generator(full.generator_path)
    assert meta["real_transform"] == {"flip": "half"}
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["real_transform"] == {"flip": "half"}

    again = train(cfg, digits16, tmp_path / "again", real_transform=_flip_rows).generator_path.read_bytes()
    train(load_config(tiny_config(steps=8)), digits16, tmp_path / "ext", real_transform=_flip_rows)
    resumed = train(cfg, digits16, tmp_path / "ext", real_transform=_flip_rows)
    assert resumed.resumed_from == 8
    plain = train(cfg, digits16, tmp_path / "plain").generator_path.read_bytes()
    assert resumed.generator_path.read_bytes() == again, "a resumed run must replay the same augmented batches"
    assert again != plain, "the transform must reach the images D is trained on"


def test_real_transform_that_changes_the_batch_shape_is_refused(digits16, tmp_path):
    with pytest.raises(ValueError, match="real_transform turned a .* batch into .*keep shape and dtype"):
        train(load_config(tiny_config(steps=2)), digits16, tmp_path, real_transform=lambda b, s: b[:, :, :8])


def test_ada_moves_p_by_the_sign_of_rt_minus_target(digits16, tmp_path):
    """D quickly tells 32 real digits from an untrained G's output: r_t = E[sign(D(real))]
    exceeds the target and p climbs; every adjustment follows sign(r_t - target) by
    batch * interval / ada_speed_images, clamped to [0, 1]."""
    ada = {"diffaug": "translation,cutout", "ada": True, "ada_interval": 1, "ada_speed_images": 400, "lr_d": 1e-3}
    up = train(load_config(tiny_config(steps=30, **ada)), digits16[:32], tmp_path / "up")
    assert up.ada_p is not None and up.ada_p > 0.3
    log = [json.loads(line) for line in (tmp_path / "up" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["ada_p"] == 0.0
    step_size = 16 * 1 / 400
    for before, after in zip(log, log[1:]):
        want = before["ada_p"] + math.copysign(step_size, before["ada_rt"] - 0.6)
        assert after["ada_p"] == pytest.approx(min(max(want, 0.0), 1.0), abs=1e-6)
    _, _, meta = load_generator(up.generator_path)
    assert meta["ada_p"] == up.ada_p
    # the loss curve shows the strength on its own 0..1 scale
    from PIL import Image

    from gan_core.plots import COLOURS, loss_curve_png, read_losses

    assert [v for _, v in read_losses(tmp_path / "up" / "metrics.jsonl")["ada_p"]] == [r["ada_p"] for r in log]
    png = loss_curve_png(tmp_path / "up" / "metrics.jsonl", tmp_path / "curve.png")
    assert COLOURS["ada_p"] in {c for _, c in Image.open(png).convert("RGB").getcolors(1 << 16)}


def test_ada_without_augmentations_is_a_config_error():
    from gan_core.config import ConfigError

    with pytest.raises(ConfigError, match="train.ada needs augmentations"):
        load_config(tiny_config(ada=True))
