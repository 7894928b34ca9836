"""Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al., 2018):
a training-free cross-check for FID (no feature extractor, so no ruler to retrain).

Also home of :func:`binomial_blur`, the Gaussian-pyramid filter, which
:mod:`gan_core.verdict` uses for its sharpness ratio.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .images import as_float_images, check_pair

__all__ = ["swd", "binomial_blur"]


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur (the Gaussian-pyramid filter), reflect-padded, per channel."""
    c = x.shape[1]
    b = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype) / 16.0
    k = (b[:, None] * b[None, :])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def _laplacian_pyramid(x: torch.Tensor, min_res: int) -> list[torch.Tensor]:
    levels = []
    g = x
    while g.shape[-1] // 2 >= min_res and g.shape[-1] % 2 == 0:
        down = binomial_blur(g)[..., ::2, ::2]
        up = torch.zeros_like(g)
        up[..., ::2, ::2] = down * 4.0  # zero-insertion upsampling, gain restored by the blur
        levels.append(g - binomial_blur(up))
        g = down
    levels.append(g)
    return levels


def _patches(level: torch.Tensor, n_per_image: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(n * n_per_image, C, size*size) random patches, indexed directly (no unfold copy)."""
    n, c, h, w = level.shape
    size = min(size, h, w)
    ys = torch.randint(0, h - size + 1, (n, n_per_image), generator=g)
    xs = torch.randint(0, w - size + 1, (n, n_per_image), generator=g)
    ar = torch.arange(size)
    rows = (ys[..., None] + ar)[:, :, :, None]  # (n, P, size, 1)
    cols = (xs[..., None] + ar)[:, :, None, :]  # (n, P, 1, size)
    img = torch.arange(n)[:, None, None, None]
    out = level.permute(0, 2, 3, 1)[img, rows, cols]  # (n, P, size, size, C)
    return out.reshape(n * n_per_image, size * size, c).transpose(1, 2)


def swd(
    real: Any,
    fake: Any,
    *,
    seed: int = 0,
    patches_per_image: int = 16,
    patch_size: int = 7,
    n_projections: int = 128,
    min_resolution: int = 16,
) -> float:
    """Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al., 2018), x1e3.

    Training-free cross-check for FID. Per pyramid level (down to
    ``min_resolution``), ``patches_per_image`` random ``patch_size`` patches per
    image are taken, normalized per channel with the *real* set's mean/std
    (Karras et al. normalize each set by its own statistics, which hides a
    global brightness/contrast change; using the real statistics keeps it),
    projected on ``n_projections`` random unit directions; the 1-D Wasserstein
    distances (sorted projections) are averaged over directions and levels.
    Uses ``min(len(real), len(fake))`` images of each set (seeded choice).
    Deterministic given ``seed``; returns a float (x1e3, as in the paper).
    """
    r = as_float_images(real, name="real")
    f = as_float_images(fake, name="fake")
    check_pair(r, f, "real", "fake")
    # Both sets draw images and patch positions from identically seeded
    # generators, so swd(x, x) == 0 exactly; directions have their own stream.
    g_r = torch.Generator().manual_seed(int(seed))
    g_f = torch.Generator().manual_seed(int(seed))
    g = torch.Generator().manual_seed(int(seed) + 1)
    n = min(r.shape[0], f.shape[0])
    r = r[torch.randperm(r.shape[0], generator=g_r)[:n]]
    f = f[torch.randperm(f.shape[0], generator=g_f)[:n]]
    dists = []
    for lr, lf in zip(_laplacian_pyramid(r, min_resolution), _laplacian_pyramid(f, min_resolution)):
        pr = _patches(lr, patches_per_image, patch_size, g_r)
        pf = _patches(lf, patches_per_image, patch_size, g_f)
        mean = pr.mean(dim=(0, 2), keepdim=True)
        std = pr.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
        pr = ((pr - mean) / std).reshape(pr.shape[0], -1)
        pf = ((pf - mean) / std).reshape(pf.shape[0], -1)
        dirs = torch.randn(pr.shape[1], n_projections, generator=g)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # (directions, descriptors), contiguous: sorting along the last dim is much faster
        proj_r = torch.sort((pr @ dirs).t().contiguous(), dim=1).values
        proj_f = torch.sort((pf @ dirs).t().contiguous(), dim=1).values
        dists.append(float((proj_r - proj_f).abs().mean()))
    return 1e3 * sum(dists) / len(dists)
