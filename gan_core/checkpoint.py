"""Checkpoints that can never execute code when loaded.

Everything — weights, optimiser moments, EMA, step counters — goes into one
safetensors file: tensors as tensors, everything else as JSON in the file's metadata.
Files are written atomically (temp file in the same directory, fsync, rename, fsync of
the directory), so a crash leaves either the old file or the new one, never half of
one. A file that is not safetensors (e.g. a ``torch.save`` pickle) is refused.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from .atomic import atomic_write_bytes, atomic_writer  # noqa: F401 - part of this module's API
from .config import GANConfig, config_from_json

CKPT_RE = re.compile(r"^ckpt-(\d{8})\.safetensors$")
FORMAT = "scenario-gan/1"


class CheckpointError(RuntimeError):
    """A checkpoint or model file is missing, corrupt, or not in the safe format."""


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # One metadata key: safetensors does not keep the order of several, and the file's
    # bytes must be a function of its content for byte-identical reruns.
    data = _st_save(tensors, metadata={"scenario_gan": json.dumps({"format": FORMAT, **meta}, sort_keys=True)})
    return atomic_write_bytes(path, data)


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`. Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    hint = (
        f"{path} is not a safetensors file written by scenario-gan; refusing to load it "
        "(pickle-based .pt/.pth files can execute code when loaded). Re-export the weights "
        "with safetensors, or retrain."
    )
    if len(raw) < 8:
        raise CheckpointError(hint + " (file too short)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > len(raw) - 8 or not raw[8:9] == b"{":
        raise CheckpointError(hint)
    try:
        tensors = _st_load(raw)
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{hint} ({e})") from None
    try:
        meta = json.loads(header.get("__metadata__", {})["scenario_gan"])
    except (KeyError, ValueError):
        meta = {}
    if meta.pop("format", None) != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a scenario-gan checkpoint; re-save it with gan_core.save_generator")
    return tensors, meta


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor], source: Path | str) -> None:
    sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(sub, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: weights for {prefix!r} do not match the configured model: {e}") from None


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + ".state."):
            idx, name = key[len(prefix) + 7 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for idx, extra in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"ckpt-{step:08d}.safetensors"


def list_checkpoints(ckpt_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first; temp files are ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files left by a writer that was killed mid-write."""
    directory = Path(directory)
    stale = [p for p in directory.glob(".*.tmp")] if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_generator(path: str | os.PathLike[str], generator: nn.Module, cfg: GANConfig, **meta: Any) -> Path:
    """The deliverable model: G's weights plus the config needed to rebuild it."""
    return save_tensors(path, module_tensors("G", generator), {"kind": "generator", "config": cfg.model_dump(mode="json"), **meta})


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, GANConfig, dict[str, Any]]:
    """Rebuild G from a file written by :func:`save_generator`; returns (G in eval mode, config, metadata)."""
    from .models import build_generator

    tensors, meta = load_tensors(path)
    if meta.get("kind") != "generator":
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r}, not a generator")
    cfg = config_from_json(json.dumps(meta["config"]))
    g = build_generator(cfg.model)
    load_module("G", g, tensors, path)
    return g.to(device).eval(), cfg, meta
