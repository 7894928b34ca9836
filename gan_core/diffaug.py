"""Differentiable augmentation on the discriminator's input, for real and generated
images alike (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020). Imports torch only.

Why on both sides: a transform applied to the real images only is part of the data G
is asked to imitate, so G learns it (jittered colours, shifted faces). Applied to the
real *and* the generated images right before D, with gradients flowing through it, it
only makes D's job harder to memorise; G still learns the un-augmented distribution
as long as each transform fires with a probability below ~0.8 or is invertible in
distribution (ADA's "non-leaking" condition).

A registry of small pure functions, one per op::

    op(x, g, p, **params) -> x'     # x: (B, C, H, W) float in [-1, 1]

Each op applies itself to every image with probability ``p`` (a per-image Bernoulli
draw) and draws all its randomness from the ``generator`` argument, so training stays
a deterministic function of the seed and the step. The parameters mean what the
albumentations parameters of the same name mean (fractions of the image side, limits
in [0, 1] pixel units), so a scenario's transform can be moved here faithfully.

DiffAugment's policy string (``"color,translation,cutout"``) is sugar for a list of
ops at DiffAugment's strengths with ``p = 1`` (:data:`POLICIES`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

AugFn = Callable[..., torch.Tensor]


def _rand(x: torch.Tensor, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device).to(device=x.device, dtype=x.dtype)


def _fires(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """(B, 1, 1, 1) mask: 1 where the op applies to that image. Always drawn, whatever
    ``p``, so the random stream (and hence every later draw) does not depend on ``p``."""
    return (_rand(x, g, x.shape[0], 1, 1, 1) < p).to(x.dtype)


def _blend(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x + (y - x) * mask


def brightness(x: torch.Tensor, g: torch.Generator, p: float = 1.0, *, limit: float = 0.25) -> torch.Tensor:
    """Add U(-limit, limit) (in [0, 1] pixel units) to the whole image."""
    m = _fires(x, g, p)
    delta = (_rand(x, g, x.shape[0], 1, 1, 1) * 2 - 1) * (2 * limit)  # [-1, 1] images span 2 units
    return x + delta * m


def contrast(x: torch.Tensor, g: torch.Generator, p: float = 1.0, *, limit: float = 0.5) -> torch.Tensor:
    """Scale deviations from the image's mean by U(1 - limit, 1 + limit)."""
    m = _fires(x, g, p)
    factor = 1 + (_rand(x, g, x.shape[0], 1, 1, 1) * 2 - 1) * limit
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return _blend(x, (x - mean) * factor + mean, m)


def saturation(x: torch.Tensor, g: torch.Generator, p: float = 1.0, *, limit: float = 1.0) -> torch.Tensor:
    """Scale deviations from the per-pixel grey by U(1 - limit, 1 + limit); a no-op on
    one channel (the draws are still made, so the stream does not depend on C)."""
    m = _fires(x, g, p)
    factor = 1 + (_rand(x, g, x.shape[0], 1, 1, 1) * 2 - 1) * limit
    if x.shape[1] == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return _blend(x, (x - mean) * factor + mean, m)


def translation(x: torch.Tensor, g: torch.Generator, p: float = 1.0, *, ratio: float = 0.125) -> torch.Tensor:
    """Shift by a whole number of pixels, up to ``ratio`` of the side, zero padded."""
    b, _, h, w = x.shape
    m = _fires(x, g, p).view(b, 1, 1).long()
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=g.device).to(x.device) * m
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=g.device).to(x.device) * m
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator, p: float = 1.0, *, ratio: float = 0.5) -> torch.Tensor:
    """Zero (grey in [-1, 1] terms: 0) a random square of ``ratio`` of the side."""
    b, _, h, w = x.shape
    m = _fires(x, g, p)
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij"
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return _blend(x, x * mask.unsqueeze(1), m)


def affine(
    x: torch.Tensor,
    g: torch.Generator,
    p: float = 1.0,
    *,
    translate: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    rotate: float = 0.0,
) -> torch.Tensor:
    """Random shift (up to ``translate`` of the side), isotropic zoom (factor in
    ``scale``, > 1 enlarges) and rotation (up to ``rotate`` degrees), resampled
    bilinearly with reflected borders (``grid_sample``: differentiable)."""
    b = x.shape[0]
    m = _fires(x, g, p).view(b)
    u = _rand(x, g, b, 4)
    tx, ty = (u[:, 0] * 2 - 1) * translate * 2, (u[:, 1] * 2 - 1) * translate * 2  # grid units span 2 per side
    lo, hi = math.log(scale[0]), math.log(scale[1])
    s = torch.exp(lo + u[:, 2] * (hi - lo))
    a = (u[:, 3] * 2 - 1) * math.radians(rotate)
    # where the op does not fire: the identity (s = 1, no shift, no turn)
    s, a, tx, ty = 1 + (s - 1) * m, a * m, tx * m, ty * m
    cos, sin = torch.cos(a) / s, torch.sin(a) / s  # output pixel -> input pixel: inverse zoom
    theta = torch.stack([torch.stack([cos, -sin, -tx], 1), torch.stack([sin, cos, -ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


OPS: dict[str, AugFn] = {
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "translation": translation,
    "cutout": cutout,
    "affine": affine,
}

# DiffAugment's policy names, as ops at DiffAugment's strengths, always on.
POLICIES: dict[str, list[dict[str, Any]]] = {
    "color": [{"op": "brightness", "limit": 0.25}, {"op": "saturation", "limit": 1.0}, {"op": "contrast", "limit": 0.5}],
    "translation": [{"op": "translation", "ratio": 0.125}],
    "cutout": [{"op": "cutout", "ratio": 0.5}],
}


def policy_ops(policy: str) -> list[dict[str, Any]]:
    """The ops of a DiffAugment policy string such as ``"color,translation"``."""
    ops: list[dict[str, Any]] = []
    for name in (p.strip() for p in policy.split(",") if p.strip()):
        try:
            ops += [dict(o, p=1.0) for o in POLICIES[name]]
        except KeyError:
            raise ValueError(f"unknown DiffAugment policy {name!r}; allowed: {sorted(POLICIES)}") from None
    return ops


def apply_ops(x: torch.Tensor, ops: Iterable[Mapping[str, Any]], generator: torch.Generator, p_scale: float = 1.0) -> torch.Tensor:
    """Apply ``ops`` (dicts ``{"op": name, "p": prob, **params}``) in order; each op
    fires per image with probability ``p * p_scale`` (``p_scale``: ADA's adaptive
    strength, 1 when ADA is off)."""
    for spec in ops:
        params = dict(spec)
        name = params.pop("op")
        p = float(params.pop("p", 1.0)) * p_scale
        try:
            fn = OPS[name]
        except KeyError:
            raise ValueError(f"unknown augmentation op {name!r}; allowed: {sorted(OPS)}") from None
        x = fn(x, generator, p, **params)
    return x


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """DiffAugment: apply ``policy`` (comma separated names from :data:`POLICIES`)."""
    return apply_ops(x, policy_ops(policy), generator)

