"""Exponential moving average of G, parameterised by a half-life in images with a
ramp-up (StyleGAN2-ADA). A fixed decay such as 0.999 barely moves on short runs;
a half-life capped at ``rampup * images_seen`` tracks G early and smooths it later.
Imports torch only."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch: int, images_seen: int, half_life_images: int, rampup: float) -> float:
    half_life = float(half_life_images)
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


def make_ema(generator: nn.Module) -> nn.Module:
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), generator.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), generator.buffers()):
        b_ema.copy_(b)
