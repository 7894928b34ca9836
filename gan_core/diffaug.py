"""Differentiable augmentation (Zhao et al., NeurIPS 2020), applied identically in
spirit to real and fake images before D. Imports torch only.

A registry of small pure functions chosen by a policy string such as
``"color,translation,cutout"``. Every random draw comes from the ``generator``
argument, so training stays a deterministic function of the seed and the step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

AugFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _rand(x: torch.Tensor, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device).to(device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + (_rand(x, g, x.shape[0], 1, 1, 1) - 0.5)


def saturation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, g, x.shape[0], 1, 1, 1) * 2) + mean


def contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, g, x.shape[0], 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the side, zero padded."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=g.device).to(x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=g.device).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` of the side."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


AUGMENTS: dict[str, list[AugFn]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """Apply ``policy`` (comma separated names from :data:`AUGMENTS`) to a batch."""
    for name in (p for p in policy.split(",") if p):
        try:
            fns = AUGMENTS[name]
        except KeyError:
            raise ValueError(f"unknown DiffAugment op {name!r}; allowed: {sorted(AUGMENTS)}") from None
        for fn in fns:
            x = fn(x, generator)
    return x
