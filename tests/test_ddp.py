"""Distributed training with two gloo processes under torchrun on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import tiny_config


@pytest.mark.slow
def test_two_gloo_processes_stay_in_sync_and_only_rank0_writes(digits16, tmp_path):
    """On a sharded dataset folder (what the pipeline writes), read per batch by each rank."""
    from gan_core.shards import write_images

    write_images(tmp_path / "data", digits16[..., None], target=64)
    (tmp_path / "cfg.json").write_text(json.dumps(tiny_config(steps=6, checkpoint_every=3, diffaug="translation", ema_half_life_images=100)))
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    cmd = torchrun + ["--standalone", "--nproc_per_node", "2", "-m", "gan_core.cli", "--no-progress",
                      "--data", str(tmp_path / "data"), "--config", str(tmp_path / "cfg.json"), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"rank"')]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert reports[0]["g_checksum"] == reports[1]["g_checksum"], "ranks drifted apart"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_seen"] == 6 * 16 * 2  # global batch = per-process batch x world size
    # rank 0 alone wrote: one metrics line per step, no duplicates
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "generator.safetensors", "metrics.jsonl", "summary.json"]


def test_each_rank_reads_its_own_shard(digits16, tmp_path, monkeypatch):
    """The data order depends on rank: two ranks never read the same images in a step."""
    from gan_core.config import load_config
    from gan_core.trainer import Trainer

    t0 = Trainer(load_config(tiny_config()), digits16, tmp_path / "a")
    t1 = Trainer(load_config(tiny_config()), digits16, tmp_path / "b")
    t0.world = t1.world = 2
    t1.rank = 1
    for step in (1, 2, 7):
        a, b = set(t0._batch_indices(step).tolist()), set(t1._batch_indices(step).tolist())
        assert len(a) == len(b) == 16 and not a & b
