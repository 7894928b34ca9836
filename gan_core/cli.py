"""Command line for the trainer; also the entry point for ``torchrun``.

    python -m gan_core.cli --data images.npz --config gan.yaml --out runs/x
    python -m gan_core.cli --data data/faces/validated/images --out runs/x   # a sharded dataset
    python -m gan_core.cli --dry-run --out /tmp/x          # one tiny cycle in seconds
    torchrun --nproc_per_node 2 -m gan_core.cli --data data/faces/validated/images --out runs/x

``--data`` is a dataset folder (:mod:`gan_core.shards`: ``index.json`` + shards, what the
pipeline's steps write; read per batch from disk, so its size is not bounded by memory)
or an ``.npz`` holding uint8 images (N, H, W[, C]) under ``images`` or, in the MedMNIST
layout, ``train_images`` (loaded whole). ``--config`` is YAML/JSON with ``model:`` and
``train:`` blocks (see :mod:`gan_core.config`); ``--set train.steps=50`` overrides one key.
Under torchrun each process trains on its own shard; gradients are averaged (gloo on
CPU, NCCL on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_images_npz(path: str | os.PathLike[str]) -> Any:
    """The images of ``--data``: a dataset folder, read lazily, or an ``.npz``, loaded."""
    path = Path(path)
    if path.is_dir():
        from .shards import ShardError, open_images

        try:
            return open_images(path)
        except ShardError as e:
            raise ValueError(f"--data {e}") from None
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in ("images", "train_images"):
                if key in z.files:
                    return z[key]
            raise KeyError(f"{path} has arrays {z.files}; expected 'images' or 'train_images' (MedMNIST layout)")
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable .npz archive ({e}); re-export it with numpy.savez") from None


def dry_run_data() -> np.ndarray:
    """256 real handwritten digits from scikit-learn, 16x16 uint8 (N, H, W)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = torch.tensor(load_digits().images[:256], dtype=torch.float32).unsqueeze(1) / 16.0
    return (F.interpolate(d, size=16, mode="bilinear", align_corners=False)[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()


DRY_RUN = {"model": {"arch": "dcgan", "resolution": 16, "channels": 1, "width": 16}, "train": {"steps": 5, "batch_size": 16, "checkpoint_every": 5}}


def _set(cfg: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or "." not in key:
        raise SystemExit(f"--set {assignment!r}: expected section.key=value, e.g. train.steps=100")
    *parents, name = key.split(".")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    node = cfg
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise SystemExit(f"--set {assignment!r}: {p!r} holds {child!r}, not a section")
        node = child
    node[name] = value


def init_distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def _emit_line(record: dict[str, Any]) -> None:
    """Print one JSON line as a single write.

    Ranks of a distributed run share stdout, unbuffered under torchrun; print() writes
    the text and its newline separately, so another rank's line could land between them.
    One write of under PIPE_BUF bytes reaches a pipe whole.
    """
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gan_core.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a dataset folder (index.json + shards) or an .npz with uint8 images under 'images' or 'train_images'")
    p.add_argument("--config", help="YAML or JSON file with model: and train: blocks")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", required=True, help="output directory (checkpoints, metrics.jsonl, generator.safetensors)")
    p.add_argument("--dry-run", action="store_true", help="tiny preset on built-in digits: one full cycle in seconds")
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints in --out and start over")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from .config import ConfigError, load_config
    from .trainer import Trainer

    raw: dict[str, Any] = json.loads(json.dumps(DRY_RUN)) if args.dry_run else {}
    if args.config:
        import yaml

        text = Path(args.config).read_text()
        loaded = yaml.safe_load(text) or {}
        raw = {**raw, **{k: {**raw.get(k, {}), **v} for k, v in loaded.items()}} if isinstance(loaded, dict) else loaded
    for a in args.set:
        _set(raw, a)
    try:
        cfg = load_config(raw, source=args.config or "--dry-run/--set")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if args.data:
        images = load_images_npz(args.data)
    elif args.dry_run:
        images = dry_run_data()
    else:
        p.error("--data is required (or --dry-run)")
    distributed = init_distributed()
    try:
        trainer = Trainer(cfg, images, args.out, progress=False if args.no_progress else None, resume=not args.fresh)
        result = trainer.fit()
        if distributed:
            checksum = trainer_checksum(trainer)
            _emit_line({"rank": trainer.rank, "g_checksum": checksum})
        if trainer.is_main:
            _emit_line({"generator": str(result.generator_path), "steps": result.steps, "images_per_s": round(result.images_per_s, 1)})
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def trainer_checksum(trainer: Any) -> str:
    """sha256 of G's weights on this rank (ranks in sync print the same value)."""
    import hashlib

    h = hashlib.sha256()
    for v in trainer.G.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
