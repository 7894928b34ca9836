"""Generators and discriminators. Imports torch only.

Two architectures, both for 1 or 3 channels at 16, 28, 32, 64 or 128 pixels:

- ``seed-dcgan`` — the founding baseline, made correct. G: z -> Linear -> 128*s*s ->
  ReLU -> reshape -> [ConvTranspose2d(128, 128, 5, stride 2) + ReLU] x 2 ->
  ConvTranspose2d(128, C, 5, stride 2) -> tanh, with s chosen so that the output has
  the requested side (s = r/8; 28 px uses 4 -> 7 -> 14 -> 28). D: [Conv2d(C|128, 128,
  3, stride 2) + LeakyReLU(0.01)] x 2 -> flatten -> Linear -> one logit.
- ``dcgan`` — pytorch/examples DCGAN: 4x4 (7x7 for 28 px) stem, 4x4 stride-2
  transposed convs (or, with ``upsample: resize``, nearest resize + 3x3 convs) with
  BatchNorm + ReLU, width halving per level; D mirrors it with
  LeakyReLU(0.2) and BatchNorm (``model.d_norm``: GroupNorm or none instead; none
  under spectral norm).

D is split into ``features`` (a flat vector per image) and heads: ``adv`` gives the
real/fake logit and, when asked for, ``rot`` predicts one of four rotations (the
self-supervised loss of Chen et al., CVPR 2019).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from .config import GANConfig, ModelConfig

SEED_WIDTH = 128
DCGAN_WIDTH = 64


def _up_sizes(resolution: int, levels: int) -> list[int]:
    """Spatial sizes from the stem to the output, e.g. 28, 3 levels -> [4, 7, 14, 28]."""
    sizes = [resolution]
    for _ in range(levels):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes[::-1]


def _dcgan_levels(resolution: int) -> tuple[int, int]:
    """(stem side, number of stride-2 levels) for the dcgan architecture."""
    base = 7 if resolution == 28 else 4
    return base, int(round(math.log2(resolution / base)))


def _mult(level_from_top: int) -> int:
    return min(2**level_from_top, 8)


class SeedGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.z_dim, self.channels, self.resolution = cfg.z_dim, cfg.channels, cfg.resolution
        sizes = _up_sizes(cfg.resolution, 3)
        self.stem_side = sizes[0]
        w = SEED_WIDTH
        self.stem = nn.Sequential(nn.Linear(cfg.z_dim, w * sizes[0] ** 2), nn.ReLU(True))
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            # out = 2*in - 1 + output_padding with kernel 5, stride 2, padding 2
            out_ch = cfg.channels if i == 2 else w
            layers.append(nn.ConvTranspose2d(w, out_ch, 5, 2, padding=2, output_padding=b - 2 * a + 1))
            layers.append(nn.Tanh() if i == 2 else nn.ReLU(True))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z) -> (B, C, H, W)
        h = self.stem(z).view(z.shape[0], SEED_WIDTH, self.stem_side, self.stem_side)
        return self.body(h)


def _up(c_in: int, c_out: int, how: str) -> list[nn.Module]:
    """Double the side: (B, c_in, s, s) -> (B, c_out, 2s, 2s)."""
    if how == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)]


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.z_dim, self.channels, self.resolution = cfg.z_dim, cfg.channels, cfg.resolution
        base, n_up = _dcgan_levels(cfg.resolution)
        w = cfg.width or DCGAN_WIDTH
        chans = [w * _mult(n_up - 1 - i) for i in range(n_up)]  # e.g. 64px: 8w, 4w, 2w, w
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim, chans[0], base, 1, 0, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [*_up(a, b, cfg.upsample), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [*_up(chans[-1], cfg.channels, cfg.upsample), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z) -> (B, C, H, W)
        return self.main(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """``features`` trunk + ``adv`` logit head (+ optional ``rot`` 4-way head)."""

    def __init__(self, trunk: nn.Sequential, feat_dim: int, *, rotation: bool, sn: bool):
        super().__init__()
        wrap = _sn if sn else (lambda m: m)
        self.trunk = trunk
        self.adv = wrap(nn.Linear(feat_dim, 1))
        self.rot = wrap(nn.Linear(feat_dim, 4)) if rotation else None

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, F)
        return torch.flatten(self.trunk(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        return self.adv(self.features(x)).squeeze(1)


def _seed_discriminator(cfg: ModelConfig, rotation: bool) -> Discriminator:
    wrap = _sn if cfg.spectral_norm else (lambda m: m)
    w = SEED_WIDTH
    trunk = nn.Sequential(
        wrap(nn.Conv2d(cfg.channels, w, 3, 2, 1)),
        nn.LeakyReLU(0.01, True),
        wrap(nn.Conv2d(w, w, 3, 2, 1)),
        nn.LeakyReLU(0.01, True),
    )
    side = math.ceil(math.ceil(cfg.resolution / 2) / 2)
    return Discriminator(trunk, w * side * side, rotation=rotation, sn=cfg.spectral_norm)


def _dcgan_discriminator(cfg: ModelConfig, rotation: bool) -> Discriminator:
    wrap = _sn if cfg.spectral_norm else (lambda m: m)
    base, n_down = _dcgan_levels(cfg.resolution)
    w = cfg.width or DCGAN_WIDTH
    chans = [w * _mult(i) for i in range(n_down)]  # e.g. 64px: w, 2w, 4w, 8w
    layers: list[nn.Module] = [wrap(nn.Conv2d(cfg.channels, chans[0], 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
    norm = cfg.d_norm_effective
    for a, b in zip(chans[:-1], chans[1:]):
        layers.append(wrap(nn.Conv2d(a, b, 4, 2, 1, bias=False)))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(b))
        elif norm == "group":
            layers.append(nn.GroupNorm(math.gcd(b, 16), b))
        layers.append(nn.LeakyReLU(0.2, True))
    return Discriminator(nn.Sequential(*layers), chans[-1] * base * base, rotation=rotation, sn=cfg.spectral_norm)


def _dcgan_init(m: nn.Module) -> None:
    # pytorch/examples dcgan: N(0, 0.02) for convs, N(1, 0.02) for BatchNorm scale.
    name = type(m).__name__
    if "Conv" in name:
        weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
    elif "BatchNorm" in name or "GroupNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_generator(cfg: ModelConfig) -> nn.Module:
    g = SeedGenerator(cfg) if cfg.arch == "seed-dcgan" else DCGANGenerator(cfg)
    if cfg.arch == "dcgan":
        g.apply(_dcgan_init)
    return g


def build_discriminator(cfg: ModelConfig, *, rotation: bool = False) -> Discriminator:
    if cfg.arch == "seed-dcgan":
        return _seed_discriminator(cfg, rotation)
    d = _dcgan_discriminator(cfg, rotation)
    d.apply(_dcgan_init)
    return d


def build_models(cfg: GANConfig, *, seed: int | None = None) -> tuple[nn.Module, Discriminator]:
    """G and D for a config, initialised from ``seed`` (default: ``cfg.train.seed``)
    without touching the caller's global RNG state."""
    seed = cfg.train.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = build_generator(cfg.model)
        d = build_discriminator(cfg.model, rotation=cfg.uses_rotation)
    return g, d
