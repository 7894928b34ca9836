"""Sampling: uint8 images from a generator, PNG grids, latent interpolation.

Imports torch, numpy and Pillow (for PNG encoding only)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write_bytes


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8 (N, C, H, W), clamped and rounded."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The same ``seed`` always gives the same latents, on any device."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float images in [-1, 1] (N, C, H, W) on the CPU for the given latents."""
    was_training = generator.training
    generator.eval()
    try:
        device = next(generator.parameters()).device
        chunks = [generator(z[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(z), batch_size)]
    finally:
        generator.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def sample(generator: nn.Module, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """``n`` images as uint8 (N, C, H, W); deterministic for a given ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return to_uint8(generate(generator, latents(n, generator.z_dim, seed), batch_size))


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 image (H', W', C) with C in {1, 3}."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"make_grid wants uint8 (N, C, H, W) images; got {images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i]
    return grid


def encode_png(grid: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], nrow: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of uint8 (N, C, H, W) images atomically."""
    return atomic_write_bytes(path, encode_png(make_grid(images, nrow), scale))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a and b (D,) at fractions t (K,) -> (K, D)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_grid(generator: nn.Module, rows: int = 4, steps: int = 8, seed: int = 0) -> torch.Tensor:
    """uint8 (rows*steps, C, H, W): each row walks (slerp) between two random latents."""
    z = latents(2 * rows, generator.z_dim, seed)
    t = torch.linspace(0, 1, steps)
    path = torch.cat([slerp(z[2 * r], z[2 * r + 1], t) for r in range(rows)])
    return to_uint8(generate(generator, path))
