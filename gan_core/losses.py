"""GAN losses computed stably from logits. Imports torch only.

Non-saturating (the founding description):
    L_D = -mean[log D(x) + log(1 - D(G(z)))] = mean[softplus(-d_real)] + mean[softplus(d_fake)]
    L_G = -mean[log D(G(z))]                 = mean[softplus(-d_fake)]
Hinge (SAGAN / BigGAN):
    L_D = mean[relu(1 - d_real)] + mean[relu(1 + d_fake)],  L_G = -mean[d_fake]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return d_loss_real(kind, d_real) + d_loss_fake(kind, d_fake)


def d_loss_real(kind: str, d_real: torch.Tensor) -> torch.Tensor:
    """The real images' half of :func:`d_loss` (DP-SGD clips its per-image gradients)."""
    if kind == "nonsaturating":
        return F.softplus(-d_real).mean()
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: 'nonsaturating', 'hinge'")


def d_loss_fake(kind: str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generated images' half of :func:`d_loss`."""
    if kind == "nonsaturating":
        return F.softplus(d_fake).mean()
    if kind == "hinge":
        return F.relu(1.0 + d_fake).mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: 'nonsaturating', 'hinge'")


def g_loss(kind: str, d_fake: torch.Tensor) -> torch.Tensor:
    if kind == "nonsaturating":
        return F.softplus(-d_fake).mean()
    if kind == "hinge":
        return -d_fake.mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: 'nonsaturating', 'hinge'")


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||^2] on real images (Mescheder et al. 2018); ``real`` must
    require grad and ``d_real`` be computed from it. Multiply by gamma/2 outside."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image: (B, C, H, W) -> (4B, C, H, W) and labels (4B,)."""
    rots = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return torch.cat(rots), labels


def rotation_loss(rot_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Self-supervised rotation prediction loss (Chen et al., CVPR 2019)."""
    return F.cross_entropy(rot_logits.float(), labels)
