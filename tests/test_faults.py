"""Faults: a step killed with SIGKILL in the middle of writing, and a full disk.

A killed step leaves at most a temporary file and never a complete-looking output: the
next step refuses to start and names what is missing; rerunning the killed step
completes and gives the same bytes as a run that was never interrupted; a killed
training resumes from its last checkpoint. A full disk gives an error naming the file
and leaves the previous outputs as they were."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.dvcio import dvc_hash
from pipelines.registry import STEPS

from .conftest import require
from .dagster_support import tiny_scenario

ROOT = Path(__file__).parents[1]

# Runs `python -m pipelines.stage ...` with every atomic write (gan_core.atomic) counted; the write number
# $KILL_ON_WRITE leaves half its bytes in a temporary file beside the target and then the
# process SIGKILLs itself, as a crash mid-write would. $KILL_ON_WRITE=0 only counts.
KILLER = r"""
import atexit, os, signal, sys
from contextlib import contextmanager
import gan_core.atomic as atomic
target, calls, real = int(os.environ["KILL_ON_WRITE"]), [0], atomic.atomic_writer
@contextmanager
def writer(path, size_hint=None):
    calls[0] += 1
    if calls[0] != target:
        with real(path, size_hint) as f:
            yield f
        return
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".killed.tmp"), "w+b") as f:
        yield f
        f.truncate(f.seek(0, os.SEEK_END) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
atomic.atomic_writer = writer  # before anything imports it: every atomic write of the project goes through it
atexit.register(lambda: print("WRITES", calls[0], file=sys.stderr))
from pipelines.stage import main
sys.exit(main(sys.argv[1:]))
"""


def run_stage(step: str, base: Path, scenarios: Path, kill_on_write: int | None = None) -> subprocess.CompletedProcess:
    args = [step, "digits", "--base-dir", str(base), "--scenarios-dir", str(scenarios)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    if kill_on_write is None:
        cmd = [sys.executable, "-m", "pipelines.stage", *args]
    else:
        cmd = [sys.executable, "-c", KILLER, *args]
        env["KILL_ON_WRITE"] = str(kill_on_write)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def outputs(step: str, base: Path) -> dict[str, str]:
    """DVC's hash of each output of ``step`` that is a function of its inputs (wall
    times and throughput excluded)."""
    skip = {"models/digits/summary.json", "models/digits/MODEL_CARD.md"}
    return {o.at("digits"): dvc_hash(base / o.at("digits")) for o in STEPS[step].outputs if o.at("digits") not in skip}


def remove_outputs(step: str, base: Path) -> None:
    for o in STEPS[step].outputs:
        path = base / o.at("digits")
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if step == "train":
        shutil.rmtree(base / "models/digits/checkpoints", ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The whole chain once, uninterrupted, with the number of writes of each step."""
    root = tmp_path_factory.mktemp("faults")
    scenarios = root / "scenarios"
    # Training sees all three kinds of augmentation (a symmetry per batch on the real
    # images, an op on D's input, ADA), so a killed training must resume all of them exactly.
    augmentation = {
        "invariances": ["horizontal_flip"],
        "transforms": [{"name": "HorizontalFlip", "params": {"p": 0.5}}, {"name": "Affine", "params": {"translate_percent": [-0.1, 0.1], "p": 0.5}}],
        "ada": True,
    }
    train = {"steps": 9, "batch_size": 16, "checkpoint_every": 3, "num_threads": 1, "ema_half_life_images": 100, "ada_interval": 1, "ada_speed_images": 100}
    tiny_scenario(scenarios, gan={"model": {"arch": "dcgan", "width": 8, "z_dim": 16}, "train": train}, augmentation=augmentation)
    base = root / "base"
    writes, hashes = {}, {}
    for step in STEPS:
        p = run_stage(step, base, scenarios, kill_on_write=0)
        assert p.returncode == 0, p.stderr[-2000:]
        writes[step] = int(p.stderr.rsplit("WRITES", 1)[1].split()[0])
        hashes[step] = outputs(step, base)
    return {"base": base, "scenarios": scenarios, "writes": writes, "hashes": hashes}


NEXT = {"ingest": "validate", "validate": "augment", "augment": "train", "ruler": "evaluate", "train": "evaluate"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "step,which",
    # the last write is the completion marker (manifest, report, card) or, for training, a
    # checkpoint mid-run; the first write of training is its split, before any checkpoint
    [("ingest", "last"), ("validate", "last"), ("augment", "last"), ("train", "first"), ("train", "last"), ("evaluate", "last")],
)
def test_sigkill_mid_write_then_rerun(reference, tmp_path, step, which):
    base = tmp_path / "base"
    shutil.copytree(reference["base"], base)
    remove_outputs(step, base)
    n = 1 if which == "first" else reference["writes"][step]
    if step == "train" and which == "last":
        n = 4  # the split, the step-0 checkpoint, step 3, then killed writing step 6
    killed = run_stage(step, base, reference["scenarios"], kill_on_write=n)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(base.rglob("*.killed.tmp")), "the kill should have left a half-written temporary file"

    # Nothing downstream consumes what the killed step left.
    if step in NEXT:
        nxt = run_stage(NEXT[step], base, reference["scenarios"])
        assert nxt.returncode == 1, f"{NEXT[step]} ran on the output of a killed {step}: {nxt.stdout}"
        assert "missing" in nxt.stderr or "has not finished" in nxt.stderr or "first" in nxt.stderr, nxt.stderr

    again = run_stage(step, base, reference["scenarios"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(base.rglob("*.tmp")), "temporary files of the killed writer must be cleaned up, not recorded"
    assert outputs(step, base) == reference["hashes"][step]
    if step == "train" and which == "last":
        assert json.loads(again.stdout.splitlines()[-1])["resumed_from"] == 3
        from gan_core.checkpoint import load_generator

        _, _, meta = load_generator(base / "models/digits/generator.safetensors")
        assert meta["real_transform"]["reals"]["transforms"] == ["HorizontalFlip"] and meta["ada_p"] > 0


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs. Root can mount one; elsewhere the test is skipped, and under CI
    (``CI`` or ``SCENARIO_GAN_REQUIRE_TMPFS`` set; CI runs as root) it fails instead,
    since a skip there would hide the test."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    how = "run the tests as root (or in a container with CAP_SYS_ADMIN), as CI does"
    require(shutil.which("mount"), "the mount command", "install it (apt-get install -y mount) and " + how, flag="SCENARIO_GAN_REQUIRE_TMPFS")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    require(p.returncode == 0, f"the permission to mount a size-limited tmpfs (mount: {p.stderr.strip()})", how, flag="SCENARIO_GAN_REQUIRE_TMPFS")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_keeps_the_previous_outputs(small_disk, tmp_path):
    scenarios = tmp_path / "scenarios"
    tiny_scenario(scenarios)
    base = small_disk / "base"
    assert run_stage("ingest", base, scenarios).returncode == 0
    before = dvc_hash(base / "data/digits/ingested")
    # Fill the disk, then ingest different data (an 8-bit image size change rewrites every file).
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    raw = yaml.safe_load((scenarios / "digits.yaml").read_text())
    raw["image"]["size"] = 28
    (scenarios / "digits.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    p = run_stage("ingest", base, scenarios)
    assert p.returncode == 1
    assert "No space left on device" in p.stderr and "data/digits/ingested" in p.stderr, p.stderr
    assert not list(base.rglob("*.tmp"))
    assert dvc_hash(base / "data/digits/ingested") == before, "the previous ingest output must be untouched"
    filler.unlink()
    assert run_stage("ingest", base, scenarios).returncode == 0  # with space again it completes
    assert dvc_hash(base / "data/digits/ingested") != before


def test_augmentation_reaches_training(reference, tmp_path):
    """The same chain with the transforms removed trains another model: the real-image
    flips and the ops on D's input are part of what training saw (and say so)."""
    from gan_core.checkpoint import load_generator
    from pipelines.stage import run_step

    base = tmp_path / "base"
    shutil.copytree(reference["base"], base)
    _, _, meta = load_generator(base / "models/digits/generator.safetensors")
    assert meta["real_transform"]["reals"]["applied"] == "per batch, seeded by (seed, step, rank)"
    assert [op["op"] for op in meta["real_transform"]["discriminator"]["ops"]] == ["affine"]
    assert meta["real_transform"]["discriminator"]["ada"] is True

    scenarios = tmp_path / "scenarios"
    shutil.copytree(reference["scenarios"], scenarios)
    raw = yaml.safe_load((scenarios / "digits.yaml").read_text())
    raw["augmentation"] = {"transforms": []}
    (scenarios / "digits.yaml").write_text(yaml.safe_dump(raw))
    for step in ("augment", "train"):
        run_step(step, "digits", base_dir=base, scenarios_dir=scenarios)
    plain = outputs("train", base)["models/digits/generator.safetensors"]
    assert plain != reference["hashes"]["train"]["models/digits/generator.safetensors"]
    _, _, meta = load_generator(base / "models/digits/generator.safetensors")
    assert meta["real_transform"]["reals"]["applied"] == "none" and meta["real_transform"]["discriminator"]["ops"] == []
