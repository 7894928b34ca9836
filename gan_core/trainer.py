"""The one GAN trainer used by every entry point. Imports torch (and tqdm) only.

Each step reads like the paper: (1) update D on real and fake images, (2) update G
through D, (3) update the EMA copy of G. Everything random in a step — which images,
which z, which augmentation — is drawn from a generator seeded by (seed, step, rank),
so a run is a pure function of its config and data: resuming from a checkpoint replays
exactly the steps an uninterrupted run would have taken, bit for bit on CPU.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint as ck
from .config import GANConfig
from .diffaug import apply_ops
from .ema import ema_beta, make_ema, update_ema
from .losses import d_loss, d_loss_fake, d_loss_real, g_loss, r1_penalty, rotation_loss
from .models import build_models

# Settings that may change between a run and its resumption without changing the maths.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "device", "num_threads", "on_divergence", "max_rollbacks"}
GENERATOR_FILE = "generator.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss and could not (or was told not to) recover."""


@dataclass
class TrainEvent:
    kind: Literal["start", "step", "checkpoint", "rollback", "end"]
    step: int
    total_steps: int
    logs: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class TrainResult:
    generator_path: Path
    steps: int
    images_seen: int
    resumed_from: int | None
    rollbacks: int
    wall_s: float
    images_per_s: float
    final_logs: dict[str, float]
    ada_p: float | None = None
    """ADA's final strength (None when ADA is off)."""
    real_transform: Any = None
    """What the real images went through (the ``describe`` given to the Trainer)."""
    privacy: dict[str, Any] | None = None
    """Differentially private training: the (epsilon, delta) spent and how
    (:meth:`gan_core.privacy.DPAccounting.to_dict`); None when ``train.privacy`` is off."""


Callback = Callable[[TrainEvent], None]
RealTransform = Callable[[torch.Tensor, int], torch.Tensor]
"""``(batch, seed) -> batch``: uint8 real images (B, C, H, W) in, the same shape and
dtype out, a pure function of its arguments (e.g. the scenario's albumentations
pipeline seeded with ``seed``)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    if name == "cuda" and dist.is_available() and dist.is_initialized():
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(name)


class LazyImages(Protocol):
    """Images read from disk per batch (e.g. :class:`gan_core.shards.ShardedImages`):
    uint8 ``(N, H, W, C)`` by ``shape``, ``len`` and ``take(rows) -> ndarray``."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def take(self, rows: Any) -> Any: ...


def is_lazy(images: Any) -> bool:
    return not isinstance(images, (torch.Tensor, np.ndarray)) and hasattr(images, "take") and hasattr(images, "shape")


def _nchw(batch: Any) -> torch.Tensor:
    """A uint8 NHWC numpy batch as the contiguous NCHW tensor in-memory data gives."""
    x = torch.from_numpy(np.ascontiguousarray(batch))
    x = x.unsqueeze(-1) if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).contiguous()


def as_training_tensor(images: Any) -> torch.Tensor:
    """Images as a tensor (N, C, H, W). numpy arrays are taken as channels-last
    (N, H, W[, C]), tensors as (N, C, H, W) or (N, H, W). uint8 stays uint8 (it is
    converted to [-1, 1] per batch, a quarter of the memory); anything else becomes float."""
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(1) if images.ndim == 3 else images
    else:
        x = torch.as_tensor(images)
        x = x.unsqueeze(-1) if x.ndim == 3 else x
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) tensors or (N, H, W, C) arrays; got shape {tuple(x.shape)}")
    return (x if x.dtype == torch.uint8 else x.float()).contiguous()


def _to_float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 127.5 - 1.0 if batch.dtype == torch.uint8 else batch


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + step * 0x100000001B3 + rank * 0x2545F491) % (2**63 - 1)


def real_transform_seed(seed: int, step: int, rank: int) -> int:
    """The seed a real-image transform gets for (seed, step, rank): its own stream,
    independent of the step's other draws; fits in 32 bits (numpy, ``random``)."""
    return _step_seed(seed ^ 0x5EED_A06, step, rank) % (2**32)


class Trainer:
    """Train one GAN. ``data``: images (N, C, H, W) in [-1, 1] or uint8; ``out_dir``
    receives ``checkpoints/``, ``metrics.jsonl``, ``summary.json`` and, only when
    training finished with finite losses, ``generator.safetensors``.

    ``real_transform`` (optional) is applied to every batch of real images before D
    sees them, with a seed derived from (seed, step, rank) (:func:`real_transform_seed`),
    so a resumed run replays the same augmented batches. It must only apply transforms
    that keep the data's distribution (G learns whatever reals look like); transforms
    that do not belong on D's input for reals and fakes alike (``train.diffaug``,
    ``train.augment``, ``train.ada``). ``describe`` (JSON-able) says what the transform
    is; it is stored in ``generator.safetensors`` and ``summary.json`` as
    ``real_transform``.

    The newest checkpoint in ``out_dir`` is resumed when its config is compatible;
    ``run_key`` (e.g. a hash of the training data) is stored in every checkpoint, and
    checkpoints carrying another key are discarded rather than resumed."""

    def __init__(
        self,
        cfg: GANConfig,
        data: Any,
        out_dir: str | os.PathLike[str],
        *,
        callbacks: Iterable[Callback] = (),
        progress: bool | None = None,
        resume: bool = True,
        run_key: str | None = None,
        real_transform: RealTransform | None = None,
        describe: Any = None,
    ):
        self.cfg = cfg
        self.run_key = run_key
        self.real_transform = real_transform
        self.real_transform_info = describe
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.callbacks = list(callbacks)
        self.resume = resume
        self.rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.is_main
        self.device = resolve_device(cfg.train.device)
        amp = cfg.train.amp
        self.amp = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        self.channels_last = True  # NHWC: faster convolutions with cuDNN and with oneDNN on the CPU (~10 % per step measured)

        self.lazy = is_lazy(data)
        if not self.lazy:
            data = as_training_tensor(data)
            dims = tuple(data.shape[1:])
        else:  # read per batch from disk: memory does not grow with the dataset
            n_, h_, w_, *c_ = data.shape
            dims = (c_[0] if c_ else 1, h_, w_)
        m = cfg.model
        if dims != (m.channels, m.resolution, m.resolution):
            raise ValueError(
                f"training images are {dims} (C, H, W) but the config asks for "
                f"({m.channels}, {m.resolution}, {m.resolution}); set model.channels/model.resolution "
                "to match, or resize the data"
            )
        if data.shape[0] < 2:
            raise ValueError(f"need at least 2 training images, got {data.shape[0]}")
        if not self.lazy and data.dtype != torch.uint8 and not torch.isfinite(data).all():
            raise ValueError("training images contain NaN or inf values")
        # A real-image transform works on host memory (e.g. numpy / OpenCV).
        self.data = data if real_transform is not None or self.lazy else data.to(self.device)
        self.n = data.shape[0]
        self.d_ops = cfg.d_augment_ops
        self.ada_p = cfg.train.ada_p_init if cfg.train.ada else 1.0
        self.ada_rt: float | None = None
        self._ada_acc = [0.0, 0]  # sum of sign(D(real)) and count since the last adjustment

        self.G, self.D = build_models(cfg)
        self.G.to(self.device)
        self.D.to(self.device)
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = make_ema(self.G) if cfg.uses_ema else None
        t = cfg.train
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.step = 0
        self.lr_scale = 1.0
        self.rollbacks = 0
        self._perm_cache: dict[int, torch.Tensor] = {}
        self._prefetch: tuple[int, Any] | None = None  # (step, future of its batch) for data on disk
        self.dp = None  # gan_core.privacy.DPAccounting, set when training starts
        if t.privacy is not None:
            self._init_private()
        if self.world > 1:
            self._broadcast(list(self.G.parameters()) + list(self.D.parameters()))

    def _init_private(self) -> None:
        """DP-SGD on D with opacus: per-image gradients of the real images' loss
        (GradSampleModule hooks on D's layers, switched on for that backward pass only),
        clipped and noised by a DPOptimizer around D's Adam; the noise is drawn from a
        generator seeded per step, so a resumed run replays it."""
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        from .privacy import has_batchnorm

        if self.world > 1:
            raise ValueError("train.privacy trains in one process; run it without torchrun")
        if has_batchnorm(self.D):  # the config refuses this; a guard for hand-built models
            raise ValueError("train.privacy needs a discriminator without BatchNorm; set model.d_norm: group")
        import warnings

        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")
        self.amp = False
        self.D.to(memory_format=torch.contiguous_format)  # opacus writes D's gradients contiguous
        for m in self.D.modules():  # opacus' backward hooks forbid in-place ops on hooked outputs
            if hasattr(m, "inplace"):
                m.inplace = False
        p = self.cfg.train.privacy
        self._d_grad_sample = GradSampleModule(self.D, loss_reduction="mean", strict=True)
        self._d_grad_sample.disable_hooks()
        self._dp_noise = torch.Generator(device=self.device)
        # expected real images per step (Poisson sampling) + the generated ones
        expected = max(1, round(min(1.0, self.cfg.train.batch_size / self.n) * self.n)) + self.cfg.train.batch_size
        self._dp_opt = DPOptimizer(
            self.opt_d, noise_multiplier=0.0, max_grad_norm=p.max_grad_norm, expected_batch_size=expected, loss_reduction="mean", generator=self._dp_noise
        )

    # ------------------------------------------------------------------ data, z
    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            g = torch.Generator().manual_seed(_step_seed(self.cfg.train.seed, epoch, 7919))
            self._perm_cache = {epoch: torch.randperm(self.n, generator=g), **{k: v for k, v in self._perm_cache.items() if k >= epoch - 1}}
        return self._perm_cache[epoch]

    def _batch_indices(self, step: int) -> torch.Tensor:
        if self.dp is not None:
            return self._poisson_indices(step)
        return self._epoch_indices(step)

    def _poisson_indices(self, step: int) -> torch.Tensor:
        """DP-SGD's sampling: each image joins the step's batch with probability q,
        independently (the accountant's analysis assumes it); the batch size varies."""
        g = torch.Generator().manual_seed(_step_seed(self.cfg.train.seed, step, 104729))
        return torch.nonzero(torch.rand(self.n, generator=g) < self.dp.sample_rate).flatten()

    def _epoch_indices(self, step: int) -> torch.Tensor:
        """Global sample positions (step, rank, j) walk through per-epoch permutations,
        so every image is seen once per epoch and ranks read disjoint shards."""
        b = self.cfg.train.batch_size
        start = ((step - 1) * self.world + self.rank) * b
        pos = torch.arange(start, start + b)
        epochs, offsets = pos // self.n, pos % self.n
        out = torch.empty(b, dtype=torch.long)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self._epoch_perm(e)[offsets[sel]]
        return out

    # ------------------------------------------------------------------ distributed
    def _all_reduce_grads(self, module: nn.Module) -> None:
        if self.world == 1:
            return
        params = [p for p in module.parameters() if p.grad is not None]
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        if self.world == 1 or not tensors:
            return
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    # ------------------------------------------------------------------ one step
    @staticmethod
    def _rotated(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One random rotation per image (a quarter of the cost of all four): (B, C, H, W)."""
        k = torch.randint(0, 4, (x.shape[0],), generator=g, device=g.device).to(x.device)
        out = torch.empty_like(x)
        for r in range(4):
            sel = k == r
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
        return out, k

    def _read_ahead(self, step: int, idx: torch.Tensor) -> Any:
        """The rows of ``step`` from disk, and the next step's rows read in a background
        thread while this step computes (the reads release the GIL). The next step's
        indices are a function of the step alone, so what is read is what would be read
        anyway; a step that is not the one read ahead (a rollback) reads directly."""
        from concurrent.futures import ThreadPoolExecutor

        ahead, self._prefetch = self._prefetch, None
        got = ahead[1].result() if ahead is not None else None  # never two reads at once
        batch = got if ahead is not None and ahead[0] == step else self.data.take(idx.numpy())
        if step < self.cfg.train.steps:
            if not hasattr(self, "_reader"):
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
            nxt = self._batch_indices(step + 1).numpy()
            self._prefetch = (step + 1, self._reader.submit(self.data.take, nxt))
        return batch

    def _real_batch(self, step: int) -> torch.Tensor:
        """The step's real images (B, C, H, W), through ``real_transform`` if any."""
        idx = self._batch_indices(step)
        if self.lazy:
            batch = _nchw(self._read_ahead(step, idx))
            if self.real_transform is None:
                return batch.to(self.device)
        elif self.real_transform is None:
            return self.data[idx.to(self.device)]
        else:
            batch = self.data[idx]
        out = self.real_transform(batch, real_transform_seed(self.cfg.train.seed, step, self.rank))
        if not isinstance(out, torch.Tensor) or out.shape != batch.shape or out.dtype != batch.dtype:
            got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"real_transform turned a {tuple(batch.shape)} {batch.dtype} batch into {got}; it must keep shape and dtype")
        return out.to(self.device)

    def _ada_adjust(self, step: int) -> None:
        """ADA: every ``ada_interval`` steps move p towards r_t = E[sign(D(real))] = target."""
        t = self.cfg.train
        if step % t.ada_interval:
            return
        acc = torch.tensor(self._ada_acc, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(acc)
        s, n = acc.tolist()
        self.ada_rt = s / max(n, 1.0)
        adjust = math.copysign(1.0, self.ada_rt - t.ada_target) * (t.batch_size * self.world * t.ada_interval) / t.ada_speed_images
        self.ada_p = min(max(self.ada_p + adjust, 0.0), 1.0)
        self._ada_acc = [0.0, 0]

    def train_step(self, step: int) -> dict[str, float]:
        t = self.cfg.train
        g = torch.Generator(device=self.device).manual_seed(_step_seed(t.seed, step, self.rank))
        real = _to_float(self._real_batch(step))
        n_fake = t.batch_size if self.dp is not None else real.shape[0]  # DP: the real batch size varies (Poisson)
        z = torch.randn(n_fake, self.cfg.model.z_dim, generator=g, device=self.device)
        ops, p_scale = self.d_ops, self.ada_p
        aug = (lambda x: apply_ops(x, ops, g, p_scale)) if ops else (lambda x: x)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        logs: dict[str, torch.Tensor] = {}

        # (1) update D: real -> 1, fake -> 0 (+ R1 on real, + rotation prediction on real)
        self.D.requires_grad_(True)
        if self.dp is not None:
            fake, d_real, d_fake, loss_d = self._private_d_update(step, real, z, aug)
        else:
            if t.r1_gamma > 0:
                real.requires_grad_(True)
            with autocast:
                fake = self.G(z)
                d_real = self.D(aug(real))
                d_fake = self.D(aug(fake.detach()))
                loss_d = d_loss(t.loss, d_real.float(), d_fake.float())
                if t.ssl_rotation_d > 0:
                    xr, yr = self._rotated(aug(real.detach()), g)
                    rot_d = rotation_loss(self.D.rot(self.D.features(xr)), yr)
                    loss_d = loss_d + t.ssl_rotation_d * rot_d
                    logs["rot_d"] = rot_d.detach()
            if t.r1_gamma > 0:
                r1 = r1_penalty(d_real.float(), real)
                loss_d = loss_d + 0.5 * t.r1_gamma * r1
                logs["r1"] = r1.detach()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._all_reduce_grads(self.D)
            self.opt_d.step()

        # (2) update G through the just-updated D (D frozen: no wasted weight grads)
        self.D.requires_grad_(False)
        with autocast:
            d_fake_g = self.D(aug(fake))
            loss_g = g_loss(t.loss, d_fake_g.float())
            if t.ssl_rotation_g > 0:
                xr, yr = self._rotated(aug(fake), g)
                rot_g = rotation_loss(self.D.rot(self.D.features(xr)), yr)
                loss_g = loss_g + t.ssl_rotation_g * rot_g
                logs["rot_g"] = rot_g.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._all_reduce_grads(self.G)
        self.opt_g.step()
        if self.world > 1:
            self._broadcast(list(self.G.buffers()) + list(self.D.buffers()))

        # (3) EMA of G, half-life in images with ramp-up
        images_seen = step * t.batch_size * self.world
        if self.G_ema is not None:
            beta = ema_beta(t.batch_size * self.world, images_seen, t.ema_half_life_images, t.ema_rampup)
            update_ema(self.G_ema, self.G, beta)
            logs["ema_beta"] = torch.tensor(beta)

        d_real_mean = d_real.detach().float().mean() if d_real.numel() else torch.zeros((), device=self.device)
        logs.update(loss_d=loss_d.detach(), loss_g=loss_g.detach(), d_real=d_real_mean, d_fake=d_fake.detach().float().mean())
        if t.ada:
            logs["d_real_sign"] = torch.sign(d_real.detach().float()).mean()
        names = list(logs)
        values = dict(zip(names, torch.stack([logs[k].float().cpu() for k in names]).tolist()))  # one sync
        if t.ada:
            values["ada_p"] = self.ada_p  # the strength this step used
            self._ada_acc[0] += values.pop("d_real_sign") * real.shape[0]
            self._ada_acc[1] += real.shape[0]
            self._ada_adjust(step)
            if self.ada_rt is not None:
                values["ada_rt"] = self.ada_rt
        return values

    def _private_d_update(self, step: int, real: torch.Tensor, z: torch.Tensor, aug: Callable[[torch.Tensor], torch.Tensor]):
        """D's step under DP-SGD. Real and generated images go through D as one batch with
        a gradient per image (opacus); each is clipped to ``max_grad_norm``, they are
        summed, Gaussian noise of std ``noise_multiplier * max_grad_norm`` is added, and the
        sum is divided by the expected batch size. Only the real images are private (one
        of them changes the sum by at most the clip norm, which is what the accountant
        counts); the generated ones are clipped too, or the clipped real term would be
        outweighed by the unclipped fake term and D would learn to call everything fake."""
        t = self.cfg.train
        self._dp_opt.zero_grad(set_to_none=True)  # grads, per-image grads and sums
        fake = self.G(z)
        n_real = real.shape[0]
        # opacus' convolution grad sampler misreads channels-last activations (a (B, 1, H, W)
        # batch can have such strides): D gets its input in the standard layout
        x = torch.cat([aug(real), aug(fake.detach())]).clone(memory_format=torch.contiguous_format)
        self._d_grad_sample.enable_hooks()
        try:
            d_all = self.D(x)
            d_real, d_fake = d_all[:n_real], d_all[n_real:]
            loss_sum = d_loss_real(t.loss, d_real) * n_real if n_real else torch.zeros((), device=self.device)
            loss_sum = loss_sum + d_loss_fake(t.loss, d_fake) * d_fake.shape[0]
            (loss_sum / x.shape[0]).backward()  # mean over the batch: opacus scales per-image grads back up
        finally:
            self._d_grad_sample.disable_hooks()
        self._dp_noise.manual_seed(_step_seed(t.seed ^ 0xD1FF, step, self.rank))
        self._dp_opt.pre_step()  # clip, sum, add noise, divide: p.grad is now private
        self.opt_d.step()
        self.dp.record_step()
        loss_d = (d_loss_real(t.loss, d_real.detach()) if n_real else torch.zeros((), device=self.device)) + d_loss_fake(t.loss, d_fake.detach())
        return fake, d_real, d_fake, loss_d

    # ------------------------------------------------------------------ state
    def _state_meta(self) -> dict[str, Any]:
        return {
            "kind": "training-state",
            "step": self.step,
            "images_seen": self.step * self.cfg.train.batch_size * self.world,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "world_size": self.world,
            "config": self.cfg.model_dump(mode="json"),
            "torch": torch.__version__,
            "run_key": self.run_key,
            "ada": {"p": self.ada_p, "rt": self.ada_rt, "acc": list(self._ada_acc)},
            "privacy": self.dp.to_dict() if self.dp is not None else None,
        }

    def save_checkpoint(self) -> Path | None:
        if not self.is_main:
            return None
        tensors = {**ck.module_tensors("G", self.G), **ck.module_tensors("D", self.D)}
        if self.G_ema is not None:
            tensors.update(ck.module_tensors("G_ema", self.G_ema))
        meta = self._state_meta()
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            ot, om = ck.optimizer_tensors(name, opt)
            tensors.update(ot)
            meta[name] = om
        path = ck.save_tensors(ck.checkpoint_path(self.ckpt_dir, self.step), tensors, meta)
        for _, old in ck.list_checkpoints(self.ckpt_dir)[: -self.cfg.train.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path, *, keep_privacy: bool = False) -> None:
        tensors, meta = ck.load_tensors(path)
        if meta.get("kind") != "training-state":
            raise ck.CheckpointError(f"{path} is not a training checkpoint (kind {meta.get('kind')!r})")
        self._check_compatible(meta["config"], path)
        if meta.get("world_size", 1) != self.world:
            raise ck.CheckpointError(
                f"{path} was written by a run with {meta.get('world_size')} processes; this run has {self.world}. "
                "Resume with the same number of processes (the data order depends on it)."
            )
        ck.load_module("G", self.G, tensors, path)
        ck.load_module("D", self.D, tensors, path)
        if self.G_ema is not None:
            ck.load_module("G_ema", self.G_ema, tensors, path)
        ck.load_optimizer("opt_g", self.opt_g, tensors, meta["opt_g"])
        ck.load_optimizer("opt_d", self.opt_d, tensors, meta["opt_d"])
        self.step, self.lr_scale, self.rollbacks = meta["step"], meta["lr_scale"], meta["rollbacks"]
        ada = meta.get("ada") or {}
        if self.cfg.train.ada:
            self.ada_p, self.ada_rt, self._ada_acc = ada["p"], ada["rt"], [float(ada["acc"][0]), int(ada["acc"][1])]
        if self.cfg.train.privacy is not None and not keep_privacy:
            from .privacy import DPAccounting

            if not meta.get("privacy"):
                raise ck.CheckpointError(f"{path} has no privacy accounting; train.privacy cannot resume from it")
            self._set_accounting(DPAccounting.from_dict(meta["privacy"]))

    def _check_compatible(self, saved: dict[str, Any], path: Path) -> None:
        now = self.cfg.model_dump(mode="json")
        diffs = [f"model.{k}" for k in now["model"] if now["model"][k] != saved["model"].get(k)]
        diffs += [f"train.{k}" for k in now["train"] if k not in RESUMABLE_CHANGES and now["train"][k] != saved["train"].get(k)]
        if diffs:
            raise ck.CheckpointError(
                f"cannot resume from {path}: the config changed in {diffs} (only {sorted(RESUMABLE_CHANGES)} may change "
                "between a run and its resumption). Use a new output directory, or pass resume=False to start over."
            )

    # ------------------------------------------------------------------ logs
    def _rewrite_metrics_upto(self, step: int) -> None:
        path = self.out_dir / METRICS_FILE
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        ck.atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())

    def _emit(self, event: TrainEvent) -> None:
        for cb in self.callbacks:
            cb(event)

    # ------------------------------------------------------------------ fit
    def _start(self) -> int | None:
        """Resume from the newest checkpoint, or start fresh with a step-0 checkpoint."""
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ck.remove_stale_temp_files(self.ckpt_dir)
            (self.out_dir / GENERATOR_FILE).unlink(missing_ok=True)  # only a finished run has one
            if not self.resume or not self._checkpoints_match_run_key():
                for _, p in ck.list_checkpoints(self.ckpt_dir):
                    p.unlink()
                (self.out_dir / METRICS_FILE).unlink(missing_ok=True)
        if self.world > 1:
            dist.barrier()
        found = ck.list_checkpoints(self.ckpt_dir)
        if found:
            self.load_checkpoint(found[-1][1])
            if self.dp is not None:
                self.dp.check_budget(self.cfg.train.steps)
            if self.is_main:
                self._rewrite_metrics_upto(self.step)
            return self.step
        if self.is_main:  # a fresh start: no log lines of an earlier run
            (self.out_dir / METRICS_FILE).unlink(missing_ok=True)
        if self.cfg.train.privacy is not None:
            from .privacy import DPAccounting

            p, t = self.cfg.train.privacy, self.cfg.train
            self._set_accounting(
                DPAccounting.calibrate(epsilon=p.epsilon, delta=p.delta, max_grad_norm=p.max_grad_norm, n_images=self.n, batch_size=t.batch_size, steps=t.steps)
            )
        self.save_checkpoint()
        return None

    def _set_accounting(self, acct: Any) -> None:
        self.dp = acct
        self._dp_opt.noise_multiplier = acct.noise_multiplier
        self._dp_max_steps = acct.max_steps()

    def _checkpoints_match_run_key(self) -> bool:
        """Checkpoints written for another ``run_key`` (e.g. other training data) are not
        resumed: the run starts over instead of continuing someone else's model."""
        found = ck.list_checkpoints(self.ckpt_dir)
        if self.run_key is None or not found:
            return True
        _, meta = ck.load_tensors(found[-1][1])
        return meta.get("run_key") == self.run_key

    def _rollback(self, step: int, logs: dict[str, float]) -> None:
        t = self.cfg.train
        found = ck.list_checkpoints(self.ckpt_dir)
        where = found[-1][1] if found else None
        if t.on_divergence == "stop" or self.rollbacks >= t.max_rollbacks or where is None:
            why = "train.on_divergence is 'stop'" if t.on_divergence == "stop" else f"{self.rollbacks} rollback(s) already used (train.max_rollbacks)"
            raise DivergenceError(
                f"non-finite loss at step {step} ({', '.join(f'{k}={v}' for k, v in logs.items())}); {why}. "
                f"No generator was written. Last good checkpoint: {where}. Try a lower train.lr_d/lr_g, "
                "model.spectral_norm: true or train.r1_gamma > 0."
            )
        rollbacks = self.rollbacks + 1
        lr_scale = self.lr_scale * t.divergence_lr_factor
        if self.world > 1:
            dist.barrier()
        self.load_checkpoint(where, keep_privacy=True)  # the steps rolled back were spent all the same
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        for opt, lr in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale
        event = {"event": "rollback", "step": step, "to_step": self.step, "lr_scale": lr_scale}
        if self.is_main:
            with open(self.out_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(event) + "\n")
        self._emit(TrainEvent("rollback", self.step, t.steps, {"from_step": float(step), "lr_scale": lr_scale}, where))

    def fit(self) -> TrainResult:
        t = self.cfg.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        resumed_from = self._start()
        self._emit(TrainEvent("start", self.step, t.steps))
        self.G.train()
        self.D.train()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        logs: dict[str, float] = {}
        first_step, t0 = self.step, time.perf_counter()
        metrics = open(self.out_dir / METRICS_FILE, "a") if self.is_main else None
        try:
            while self.step < t.steps:
                step = self.step + 1
                if self.dp is not None and self.dp.steps_taken() >= self._dp_max_steps:
                    from .privacy import PrivacyBudgetError

                    raise PrivacyBudgetError(
                        f"the privacy budget (epsilon {self.dp.epsilon:g}) is spent after {self.dp.steps_taken()} noisy steps "
                        f"({self.rollbacks} rollback(s) replayed some); training stopped at step {self.step} of {t.steps} and no "
                        "generator was written. Lower the learning rates or raise train.privacy.epsilon, and train again."
                    )
                logs = self.train_step(step)
                if not all(math.isfinite(v) for v in logs.values()):
                    if metrics:
                        metrics.flush()
                    self._rollback(step, logs)
                    if bar:
                        bar.n = self.step
                    continue
                self.step = step
                if metrics and (step % t.log_every == 0 or step == t.steps):
                    metrics.write(json.dumps({"step": step, **{k: round(v, 6) for k, v in logs.items()}}) + "\n")
                self._emit(TrainEvent("step", step, t.steps, logs))
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss_d=f"{logs['loss_d']:.3f}", loss_g=f"{logs['loss_g']:.3f}", refresh=False)
                if step % t.checkpoint_every == 0 or step == t.steps:
                    if metrics:
                        metrics.flush()
                        os.fsync(metrics.fileno())
                    path = self.save_checkpoint()
                    self._emit(TrainEvent("checkpoint", step, t.steps, logs, path))
        finally:
            if metrics:
                metrics.close()
            if bar:
                bar.close()
            if hasattr(self, "_reader"):
                self._reader.shutdown(wait=True)
                del self._reader
                self._prefetch = None
        wall = time.perf_counter() - t0
        images = (self.step - first_step) * t.batch_size * self.world
        gen_path = self.out_dir / GENERATOR_FILE
        result = TrainResult(
            generator_path=gen_path,
            steps=self.step,
            images_seen=self.step * t.batch_size * self.world,
            resumed_from=resumed_from,
            rollbacks=self.rollbacks,
            wall_s=wall,
            images_per_s=images / wall if wall > 0 else 0.0,
            final_logs=logs,
            ada_p=self.ada_p if t.ada else None,
            real_transform=self.real_transform_info,
            privacy=self.dp.to_dict() if self.dp is not None else None,
        )
        if self.is_main:
            final_g = self.G_ema if self.G_ema is not None else self.G
            ck.save_generator(
                gen_path, final_g, self.cfg, step=self.step, images_seen=result.images_seen, ema=self.G_ema is not None,
                ada_p=result.ada_p, real_transform=self.real_transform_info, privacy=result.privacy,
            )
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()}
            # what the speed depends on besides the machine (see docs/BENCHMARKS.md, entry points)
            summary.update(torch_threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
            ck.atomic_write_bytes(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True).encode())
        if self.world > 1:
            dist.barrier()
        self._emit(TrainEvent("end", self.step, t.steps, logs, gen_path))
        return result


def train(cfg: GANConfig, data: Any, out_dir: str | os.PathLike[str], **kwargs: Any) -> TrainResult:
    """Convenience wrapper: ``Trainer(cfg, data, out_dir, **kwargs).fit()``."""
    return Trainer(cfg, data, out_dir, **kwargs).fit()
