"""Training throughput of gan_core's Trainer against a plain DCGAN loop, side by side.

    python -m benchmarks.bench_train                      # default run: ~4 min on 2 idle cores
    python -m benchmarks.bench_train --quick              # smoke test: tiny settings, < 30 s
    python -m benchmarks.bench_train --json out.json --reps 5 --steps 8 --threads 2

What is compared (all at 32x32 RGB, batch 64, z_dim 100, width 64, same threads):

- ``reference``   a plain loop written after pytorch/examples ``dcgan/main.py``:
  Generator/Discriminator ``nn.Sequential`` (ConvTranspose2d/BatchNorm/ReLU,
  Conv2d/BatchNorm/LeakyReLU(0.2)), Sigmoid + ``nn.BCELoss``, Adam(2e-4, (0.5, 0.999)),
  (1) D on real, then on ``fake.detach()``, (2) G on the same fake batch labelled real.
  One level fewer than the 64x64 original, i.e. the architecture of gan_core's ``dcgan``
  at resolution 32.
- ``trainer``     ``gan_core.trainer.Trainer.train_step(step)`` in a loop (plain config).
- ``trainer_fit`` ``Trainer.fit()`` end to end on a fresh trainer each repetition, so
  the step-0 and final checkpoints, metrics.jsonl, generator.safetensors and
  summary.json are all counted (``checkpoint_every`` is larger than the run).
- ``recipe``      the small-data recipe: ``model.spectral_norm``,
  ``train.diffaug: color,translation,cutout``, ``train.ema_half_life_images: 10000``.
- ``recipe_ssl``  recipe + ``ssl_rotation_d: 1.0, ssl_rotation_g: 0.2`` (extra D passes).
- ``recipe_r1``   recipe + ``r1_gamma`` (double backward through D on real images).

Optional (``--variants``): ``sn``, ``diffaug``, ``ema`` — one recipe ingredient at a time;
``trainer_cl``, ``recipe_cl`` — the trainer's G and D converted to ``channels_last`` again
by this script (the trainer already uses it on the CPU and on CUDA: these rows equal
``trainer``/``recipe`` up to noise).

Method: every variant is built once and warmed up (``--warmup`` steps). Each
repetition then runs ``--steps`` timed steps of every variant in lockstep: one step of
each, the order reversed every round (A B C, C B A, ...), so that bursts of load from
other processes land on all variants alike. ``trainer_fit`` is a single ``fit()`` call
on a fresh trainer per repetition; the other variants take their steps from inside it
(from its step events), and that time is taken out of its measurement. Reported:
the median images/s per variant, and the median over repetitions of per-repetition
ratios. "CPU util" is this process's CPU time over wall time during the timed steps:
about ``--threads`` on an idle machine, lower when other processes take the cores. The
CPU-time columns are a second opinion that other processes barely disturb, but they
also count OpenMP threads spinning at barriers (see below). The data are real photos
(random 32x32 crops of scikit-image's astronaut, coffee and chelsea), uint8, in memory
for both loops; neither loop pays for a DataLoader. ``--max-minutes`` (default 6)
starts no further repetition once the run would pass it (at least 2 always run).

Busy machines: PyTorch's CPU wheel uses GNU OpenMP, whose threads spin at barriers.
When other processes keep the 2 cores busy, 2 spinning threads wait for each other and a
step can take several times longer than with 1 thread (measured here: 4.2 s vs 0.8 s
for the reference step at load average ~5). ``OMP_WAIT_POLICY=PASSIVE`` (set before
Python starts) or ``--threads 1`` avoid it; the JSON records those variables and the
load average before and after.

A timer breakdown (``--breakdown N``, separate untimed-for-the-table steps) shows where
a step's time goes: G/D forward, backward of the D and G losses, optimiser steps,
D-side augmentation (DiffAugment/ADA ops), R1, EMA, and the rest (batch assembly, RNG, logs).

``main(argv)`` is importable and returns the exit status; ``run(args)`` returns the
result dictionary that ``--json`` writes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]

# Targets from the task: the trainer should be no slower than the plain loop, and the
# small-data recipe (SN + DiffAugment + EMA) should cost at most 15 % more time per image.
TARGET_TRAINER_VS_REFERENCE = 1.0
TARGET_RECIPE_EXTRA_PCT = 15.0

RECIPE_MODEL = {"spectral_norm": True}
RECIPE_TRAIN = {"diffaug": "color,translation,cutout", "ema_half_life_images": 10000}
SSL_TRAIN = {"ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2}
R1_GAMMA = 1.0  # any value > 0 costs the same


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "reference" | "step" | "fit"
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    channels_last: bool = False  # what-if: G, D (and G_ema) in channels_last on CPU too


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("reference", "reference", about="pytorch/examples dcgan loop"),
        Variant("trainer", "step", about="Trainer.train_step, plain"),
        Variant("trainer_fit", "fit", about="Trainer.fit end to end, plain"),
        Variant("recipe", "step", RECIPE_MODEL, RECIPE_TRAIN, "SN + DiffAug(color,translation,cutout) + EMA"),
        Variant("recipe_ssl", "step", RECIPE_MODEL, {**RECIPE_TRAIN, **SSL_TRAIN}, "recipe + rotation SSL (D 1.0, G 0.2)"),
        Variant("recipe_r1", "step", RECIPE_MODEL, {**RECIPE_TRAIN, "r1_gamma": R1_GAMMA}, f"recipe + R1 (gamma {R1_GAMMA:g})"),
        # ablations, not run by default
        Variant("sn", "step", RECIPE_MODEL, {}, "spectral norm only"),
        Variant("diffaug", "step", {}, {"diffaug": RECIPE_TRAIN["diffaug"]}, "DiffAugment only"),
        Variant("ema", "step", {}, {"ema_half_life_images": RECIPE_TRAIN["ema_half_life_images"]}, "EMA only"),
        # what-if for a proposed gan_core change: the Trainer uses channels_last only on
        # CUDA; these convert its modules after construction to show the CPU gain
        Variant("trainer_cl", "step", about="trainer + channels_last on CPU (what-if)", channels_last=True),
        Variant("recipe_cl", "step", RECIPE_MODEL, RECIPE_TRAIN, "recipe + channels_last on CPU (what-if)", channels_last=True),
    )
}
DEFAULT_VARIANTS = ["reference", "trainer", "trainer_fit", "recipe", "recipe_ssl", "recipe_r1"]
BREAKDOWN_VARIANTS = ["reference", "trainer", "recipe"]

# --quick uses one thread unless --threads says otherwise: at width 8 a second thread
# only adds synchronisation, and on a busy 2-core machine two OpenMP threads that spin
# at barriers make tiny steps several times slower (see the module docstring).
QUICK = {"width": 8, "batch": 16, "steps": 2, "reps": 2, "warmup": 1, "n_images": 64, "breakdown": 1, "threads": 1, "max_minutes": 1.0}
DEFAULTS = {"width": 64, "batch": 64, "steps": 8, "reps": 5, "warmup": 2, "n_images": 512, "breakdown": 2, "threads": 2, "max_minutes": 6.0}


# --------------------------------------------------------------------------- data
def make_data(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` x ``size`` RGB crops of real photos shipped with
    scikit-image (astronaut, coffee, chelsea), uint8, channels last (N, H, W, 3)."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        out[i] = img[y : y + size, x : x + size, :3]
    return out


# --------------------------------------------------------------------------- reference
# After pytorch/examples dcgan/main.py (BSD-3-Clause), one level fewer for 32x32:
# the 64x64 original goes nz -> 8ngf (4x4) -> 4ngf -> 2ngf -> ngf -> nc (64x64).
class RefGenerator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 4 x 4
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 8 x 8
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 16 x 16
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 32 x 32
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class RefDiscriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            # input is (nc) x 32 x 32
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 16 x 16
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 8 x 8
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 4 x 4
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output = self.main(input)
        return output.view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


class ReferenceLoop:
    """The training loop of pytorch/examples dcgan, minus printing and image dumps;
    batches come from the same in-memory uint8 tensor the trainer uses."""

    def __init__(self, data_nhwc: np.ndarray, *, batch: int, nz: int, width: int, seed: int = 0, lr: float = 2e-4, beta1: float = 0.5):
        self.data = torch.from_numpy(data_nhwc).permute(0, 3, 1, 2).contiguous()  # uint8 (N, C, H, W)
        self.batch, self.nz = batch, nz
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.netG = RefGenerator(nz, width, self.data.shape[1])
            self.netG.apply(weights_init)
            self.netD = RefDiscriminator(width, self.data.shape[1])
            self.netD.apply(weights_init)
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=lr, betas=(beta1, 0.999))
        self.gen = torch.Generator().manual_seed(seed)
        self.real_label, self.fake_label = 1.0, 0.0
        self.step = 0

    def _batch(self) -> torch.Tensor:
        idx = torch.randint(0, self.data.shape[0], (self.batch,), generator=self.gen)
        return self.data[idx].float() / 127.5 - 1.0  # what ToTensor + Normalize(0.5, 0.5) give

    def train_step(self) -> dict[str, float]:
        netD, netG, criterion = self.netD, self.netG, self.criterion
        self.step += 1
        ############################
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        ###########################
        # train with real
        netD.zero_grad()
        real_cpu = self._batch()
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), self.real_label, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        # train with fake
        noise = torch.randn(batch_size, self.nz, 1, 1, generator=self.gen)
        fake = netG(noise)
        label.fill_(self.fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        ############################
        # (2) Update G network: maximize log(D(G(z)))
        ###########################
        netG.zero_grad()
        label.fill_(self.real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optimizerG.step()
        return {"loss_d": errD.item(), "loss_g": errG.item(), "D_x": D_x, "D_G_z1": D_G_z1, "D_G_z2": D_G_z2}


# --------------------------------------------------------------------------- runners
@dataclass
class Measurement:
    images: int
    wall_s: float
    cpu_s: float
    step_s: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "images_per_s": round(self.images_per_s, 3),
            "cpu_util": round(self.cpu_s / self.wall_s, 3),
            "step_s": [round(s, 4) for s in self.step_s],
            **self.extra,
        }


def gan_config(opts: argparse.Namespace, v: Variant, steps: int = 10**6) -> Any:
    from gan_core.config import load_config

    model = {"arch": "dcgan", "resolution": 32, "channels": 3, "width": opts.width, "z_dim": opts.z_dim, **v.model}
    train = {
        "batch_size": opts.batch,
        "steps": steps,
        "checkpoint_every": 10**9,
        "num_threads": opts.threads,
        "device": "cpu",
        "seed": 0,
        **v.train,
    }
    return load_config({"model": model, "train": train}, source=f"benchmark variant {v.name!r}")


class StepRunner:
    """Anything with a ``train_step``; :meth:`one` times a single step (wall, CPU)."""

    def __init__(self, name: str, step_fn: Callable[[], Any], batch: int):
        self.name, self.step_fn, self.batch = name, step_fn, batch

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.step_fn()

    def one(self) -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        self.step_fn()
        return time.perf_counter() - t0, time.process_time() - c0


def make_step_runner(opts: argparse.Namespace, v: Variant, data: np.ndarray, workdir: Path) -> tuple[StepRunner, Any]:
    if v.kind == "reference":
        loop = ReferenceLoop(data, batch=opts.batch, nz=opts.z_dim, width=opts.width)
        return StepRunner(v.name, loop.train_step, opts.batch), loop
    from gan_core.trainer import Trainer

    trainer = Trainer(gan_config(opts, v), data, workdir / v.name, progress=False, resume=False)
    if v.channels_last:
        for m in (trainer.G, trainer.D, trainer.G_ema):
            if m is not None:
                m.to(memory_format=torch.channels_last)
    counter = {"step": 0}

    def step() -> dict[str, float]:
        counter["step"] += 1
        return trainer.train_step(counter["step"])

    return StepRunner(v.name, step, opts.batch), trainer


class FitRunner:
    """A fresh Trainer per measurement (built untimed), then ``fit()`` timed end to end."""

    def __init__(self, opts: argparse.Namespace, v: Variant, data: np.ndarray, workdir: Path):
        self.opts, self.v, self.data, self.workdir = opts, v, data, workdir
        self.name, self.batch, self.runs = v.name, opts.batch, 0

    def _fit(self, n: int, between_steps: Callable[[int], None] | None = None) -> Measurement:
        """``between_steps(i)`` runs inside fit() after its step ``i + 1`` (from the
        trainer's step event); its wall and CPU time are taken out of fit()'s, so the
        other variants can step in lockstep with this one."""
        from gan_core.trainer import Trainer

        self.runs += 1
        out = self.workdir / f"{self.v.name}-{self.runs}"
        shutil.rmtree(out, ignore_errors=True)
        stamps: list[tuple[str, float]] = []  # on fit()'s own clock: wall minus foreign time
        foreign = [0.0, 0.0]  # wall, CPU spent in between_steps

        def on_event(e: Any) -> None:
            now = time.perf_counter()
            stamps.append((e.kind, now - foreign[0]))
            if e.kind == "step" and between_steps is not None:
                c = time.process_time()
                between_steps(e.step - 1)
                foreign[0] += time.perf_counter() - now
                foreign[1] += time.process_time() - c

        trainer = Trainer(gan_config(self.opts, self.v, steps=n), self.data, out, progress=False, resume=False, callbacks=[on_event])
        c0, t0 = time.process_time(), time.perf_counter()
        result = trainer.fit()
        t1, c1 = time.perf_counter() - foreign[0], time.process_time() - foreign[1]
        step_t = [t for k, t in stamps if k == "step"]
        start_t = next(t for k, t in stamps if k == "start")
        steps = [b - a for a, b in zip([start_t, *step_t[:-1]], step_t)]
        extra = {
            "start_overhead_s": round(start_t - t0, 4),  # output dir + step-0 checkpoint
            "end_overhead_s": round(t1 - step_t[-1], 4),  # final checkpoint + generator + summary
            # fit()'s own figure; it includes the lockstep steps of the other variants
            "trainer_reported_images_per_s": round(result.images_per_s, 3),
        }
        shutil.rmtree(out, ignore_errors=True)
        return Measurement(n * self.batch, t1 - t0, c1 - c0, steps, extra)

    def warmup(self, n: int) -> None:
        if n > 0:
            self._fit(n)

    def measure(self, n: int, between_steps: Callable[[int], None] | None = None) -> Measurement:
        return self._fit(n, between_steps)


# --------------------------------------------------------------------------- breakdown
class PhaseTimer:
    """Wall time per phase of a training step, by wrapping the pieces a step calls.
    Backward time is charged to D or G by the optimiser that steps next."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.pending_backward = 0.0
        self.depth = 0  # nested timed calls (e.g. D.forward inside R1) count once

    def add(self, key: str, dt: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + dt

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            if self.depth:
                return fn(*a, **kw)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.depth -= 1
                self.add(key, time.perf_counter() - t0)

        return timed

    def wrap_opt(self, who: str, opt: torch.optim.Optimizer) -> None:
        step = opt.step

        def timed_step(*a: Any, **kw: Any) -> Any:
            self.add(f"backward {who} loss", self.pending_backward)
            self.pending_backward = 0.0
            t0 = time.perf_counter()
            try:
                return step(*a, **kw)
            finally:
                self.add(f"optimizer {who}", time.perf_counter() - t0)

        opt.step = timed_step  # type: ignore[method-assign]


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def breakdown(opts: argparse.Namespace, v: Variant, data: np.ndarray, workdir: Path, n: int) -> dict[str, float]:
    """Seconds per step by phase, over ``n`` steps after one warm-up step."""
    import gan_core.trainer as gt

    runner, obj = make_step_runner(opts, v, data, workdir / "breakdown")
    runner.warmup(1)
    pt = PhaseTimer()
    if v.kind == "reference":
        G, D, opt_d, opt_g = obj.netG, obj.netD, obj.optimizerD, obj.optimizerG
    else:
        G, D, opt_d, opt_g = obj.G, obj.D, obj.opt_d, obj.opt_g
    G.forward = pt.wrap("G forward", G.forward)  # instance attributes shadow the methods
    D.forward = pt.wrap("D forward", D.forward)
    if hasattr(D, "features"):
        D.features = pt.wrap("D forward", D.features)  # rotation head path
    pt.wrap_opt("D", opt_d)
    pt.wrap_opt("G", opt_g)
    orig_backward = torch.Tensor.backward

    def timed_backward(self: torch.Tensor, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig_backward(self, *a, **kw)
        finally:
            pt.pending_backward += time.perf_counter() - t0

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(torch.Tensor, "backward", timed_backward))
        stack.enter_context(_patched(gt, "apply_ops", pt.wrap("D-side augmentation (DiffAugment/ADA ops)", gt.apply_ops)))
        stack.enter_context(_patched(gt, "update_ema", pt.wrap("EMA update", gt.update_ema)))
        stack.enter_context(_patched(gt, "r1_penalty", pt.wrap("R1 grad (double backward)", gt.r1_penalty)))
        t0 = time.perf_counter()
        runner.warmup(n)
        total = time.perf_counter() - t0
    out = {k: v_ / n for k, v_ in sorted(pt.totals.items(), key=lambda kv: -kv[1])}
    out["other (batch, RNG, losses, logs)"] = total / n - sum(out.values())
    out["total"] = total / n
    return {k: round(v_, 4) for k, v_ in out.items()}


# --------------------------------------------------------------------------- run
def param_counts(opts: argparse.Namespace) -> dict[str, Any]:
    from gan_core.models import build_models

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    g, d = build_models(gan_config(opts, VARIANTS["trainer"]))
    rg, rd = RefGenerator(opts.z_dim, opts.width, 3), RefDiscriminator(opts.width, 3)
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    # D: everything but the head must match; the head is Linear(4*4*4w, 1) + bias in
    # gan_core and Conv2d(4w, 1, 4) without bias in pytorch/examples (same FLOPs).
    return {
        "gan_core": {"G": count(g), "D": count(d)},
        "reference": {"G": count(rg), "D": count(rd)},
        "G_same_shapes": shapes(g) == shapes(rg),
        "D_trunk_same_shapes": shapes(d.trunk) == shapes(rd)[:-1],
        "D_difference": count(d) - count(rd),
    }


def machine_info(opts: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.harness import machine_info as common

    try:
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "gan_core"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {
        **common(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME") if k in os.environ},
        "gan_core_uncommitted_changes": dirty,
    }


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run(opts: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; torch's thread count is restored afterwards."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        return _run(opts, log)
    finally:
        torch.set_num_threads(threads_before)


def _run(opts: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    names = opts.variants
    variants = [VARIANTS[n] for n in names]
    load_before = loadavg()
    wall0 = time.perf_counter()
    data = make_data(opts.n_images)
    params = param_counts(opts)
    log(f"# bench_train: {len(variants)} variants x {opts.reps} reps x {opts.steps} steps, batch {opts.batch}, width {opts.width}, threads {opts.threads}, loadavg {load_before}")

    with contextlib.ExitStack() as stack:
        workdir = Path(opts.workdir) if opts.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_train-")))
        runners: dict[str, Any] = {}
        for v in variants:
            runners[v.name] = FitRunner(opts, v, data, workdir) if v.kind == "fit" else make_step_runner(opts, v, data, workdir)[0]
        for v in variants:
            runners[v.name].warmup(opts.warmup)
        t_reps0 = time.perf_counter() - wall0

        fit_name = next((n for n in names if isinstance(runners[n], FitRunner)), None)  # at most one
        per_rep: list[dict[str, Measurement]] = []
        stopped_early = False
        for rep in range(opts.reps):
            if rep >= 2 and opts.max_minutes > 0:
                elapsed = time.perf_counter() - wall0
                per_rep_s = (elapsed - t_reps0) / rep
                if elapsed + per_rep_s > opts.max_minutes * 60:
                    log(f"  stopping after {rep} repetitions: another would pass --max-minutes {opts.max_minutes:g} (a repetition takes {per_rep_s:.0f} s here)")
                    stopped_early = True
                    break
            # All variants step in lockstep: one step of each, the order reversed every
            # round (A B C, C B A, ...), so that a burst of load lands on all of them.
            # trainer_fit is one fit() call: the others step from inside it (from its
            # step events), their time taken out of its time.
            stepped = [n for n in names if not isinstance(runners[n], FitRunner)]
            walls: dict[str, list[float]] = {n: [] for n in stepped}
            cpus: dict[str, list[float]] = {n: [] for n in stepped}

            def one_round(i: int, rep: int = rep) -> None:
                for n in stepped if (rep * opts.steps + i) % 2 == 0 else stepped[::-1]:
                    w, c = runners[n].one()
                    walls[n].append(w)
                    cpus[n].append(c)

            got: dict[str, Measurement] = {}
            if fit_name:
                got[fit_name] = runners[fit_name].measure(opts.steps, between_steps=one_round)
            else:
                for i in range(opts.steps):
                    one_round(i)
            got.update({n: Measurement(opts.steps * opts.batch, sum(walls[n]), sum(cpus[n]), walls[n]) for n in stepped})
            per_rep.append({n: got[n] for n in names})
            log(f"  rep {rep + 1}/{opts.reps} ({time.perf_counter() - wall0:.0f} s, load {loadavg()}): " + ", ".join(f"{n} {got[n].images_per_s:.1f}" for n in names) + " img/s")

        bd: dict[str, dict[str, float]] = {}
        if opts.breakdown > 0:
            for name in [n for n in BREAKDOWN_VARIANTS if n in names] + [n for n in names if n in ("recipe_ssl", "recipe_r1")]:
                bd[name] = breakdown(opts, VARIANTS[name], data, workdir, opts.breakdown)
        del runners

    summary: dict[str, dict[str, Any]] = {}
    for v in variants:
        ips = [r[v.name].images_per_s for r in per_rep]
        s: dict[str, Any] = {
            "about": v.about,
            "images_per_s_median": round(_median(ips), 3),
            "images_per_s_min": round(min(ips), 3),
            "images_per_s_max": round(max(ips), 3),
            "s_per_step_median": round(opts.batch / _median(ips), 4),
            "cpu_util_median": round(_median([r[v.name].cpu_s / r[v.name].wall_s for r in per_rep]), 3),
            "cpu_s_per_step_median": round(_median([r[v.name].cpu_s / opts.steps for r in per_rep]), 4),
        }
        if "reference" in names:
            s["ratio_vs_reference"] = round(_median([r[v.name].images_per_s / r["reference"].images_per_s for r in per_rep]), 4)
            s["cpu_ratio_vs_reference"] = round(_median([r["reference"].cpu_s / r[v.name].cpu_s for r in per_rep]), 4)
        if "trainer" in names:
            # extra time per image relative to the plain trainer, in percent
            s["extra_cost_vs_trainer_pct"] = round(_median([(r[v.name].wall_s / r["trainer"].wall_s - 1) * 100 for r in per_rep]), 2)
            # the same in CPU time: robust to other processes taking the cores, but it
            # also counts OpenMP threads spinning at barriers
            s["extra_cpu_vs_trainer_pct"] = round(_median([(r[v.name].cpu_s / r["trainer"].cpu_s - 1) * 100 for r in per_rep]), 2)
        if v.kind == "fit":
            s["start_overhead_s_median"] = _median([r[v.name].extra["start_overhead_s"] for r in per_rep])
            s["end_overhead_s_median"] = _median([r[v.name].extra["end_overhead_s"] for r in per_rep])
            s["in_fit_s_per_step_median"] = round(_median([x for r in per_rep for x in r[v.name].step_s]), 4)
        summary[v.name] = s

    targets: dict[str, Any] = {}
    if "trainer" in summary and "ratio_vs_reference" in summary["trainer"]:
        r = summary["trainer"]["ratio_vs_reference"]
        targets["trainer_vs_reference"] = {"value": r, "target": f">= {TARGET_TRAINER_VS_REFERENCE}", "met": r >= TARGET_TRAINER_VS_REFERENCE}
    if "recipe" in summary and "extra_cost_vs_trainer_pct" in summary["recipe"]:
        e = summary["recipe"]["extra_cost_vs_trainer_pct"]
        targets["recipe_extra_cost_pct"] = {"value": e, "target": f"<= {TARGET_RECIPE_EXTRA_PCT}", "met": e <= TARGET_RECIPE_EXTRA_PCT}

    return {
        "benchmark": "bench_train",
        "settings": {
            "variants": names,
            "reps": opts.reps,
            "reps_done": len(per_rep),
            "stopped_early_by_max_minutes": stopped_early,
            "max_minutes": opts.max_minutes,
            "steps": opts.steps,
            "warmup": opts.warmup,
            "batch": opts.batch,
            "width": opts.width,
            "z_dim": opts.z_dim,
            "resolution": 32,
            "channels": 3,
            "n_images": opts.n_images,
            "threads": opts.threads,
            "quick": opts.quick,
            "data": "random 32x32 crops of skimage.data astronaut/coffee/chelsea, uint8",
            "configs": {v.name: ({"model": v.model, "train": v.train, "channels_last": v.channels_last} if v.kind != "reference" else "pytorch/examples dcgan") for v in variants},
        },
        "machine": machine_info(opts),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "params": params,
        "summary": summary,
        "targets": targets,
        "breakdown_s_per_step": bd,
        "reps": [{n: m.as_dict() for n, m in r.items()} for r in per_rep],
    }


# --------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    st, summ = res["settings"], res["summary"]
    lines = [
        f"### Training throughput, 32x32 RGB, batch {st['batch']}, width {st['width']}, {res['machine']['threads']} threads "
        f"({st['reps_done']} reps x {st['steps']} steps; torch {res['machine']['torch']}; {res['machine']['cpu_count']} CPUs; "
        f"loadavg {res['loadavg_before']} -> {res['loadavg_after']})",
        "",
        "| variant | what | img/s (median) | img/s (min-max) | s/step | CPU util | vs reference (x) | extra time vs trainer | CPU-s/step | extra CPU vs trainer |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summ.items():
        ratio = f"{s['ratio_vs_reference']:.3f}" if "ratio_vs_reference" in s else "-"
        extra = f"{s['extra_cost_vs_trainer_pct']:+.1f} %" if "extra_cost_vs_trainer_pct" in s else "-"
        extra_cpu = f"{s['extra_cpu_vs_trainer_pct']:+.1f} %" if "extra_cpu_vs_trainer_pct" in s else "-"
        lines.append(
            f"| {name} | {s['about']} | {s['images_per_s_median']:.1f} | {s['images_per_s_min']:.1f}-{s['images_per_s_max']:.1f} "
            f"| {s['s_per_step_median']:.3f} | {s['cpu_util_median']:.2f} | {ratio} | {extra} | {s['cpu_s_per_step_median']:.3f} | {extra_cpu} |"
        )
    if "trainer_fit" in summ:
        f = summ["trainer_fit"]
        lines += ["", f"trainer_fit: fixed costs per fit() call: start {f['start_overhead_s_median']:.3f} s (step-0 checkpoint), "
                  f"end {f['end_overhead_s_median']:.3f} s (final checkpoint + generator + summary); in-fit step {f['in_fit_s_per_step_median']:.3f} s."]
    p = res["params"]
    lines += [
        "",
        f"Parameters: G gan_core {p['gan_core']['G']:,} / reference {p['reference']['G']:,} (same shapes: {p['G_same_shapes']}); "
        f"D gan_core {p['gan_core']['D']:,} / reference {p['reference']['D']:,} (trunk same shapes: {p['D_trunk_same_shapes']}; "
        f"difference {p['D_difference']:+d} = the Linear head's bias).",
    ]
    utils = [s["cpu_util_median"] for s in summ.values()]
    if utils and min(utils) < 0.8 * res["machine"]["threads"]:
        lines.append(
            f"WARNING: CPU util {min(utils):.2f}-{max(utils):.2f} with {res['machine']['threads']} threads: other processes held the cores (or the model is too small to keep them busy), "
            "so these numbers are contention-limited (compare ratios, not absolute img/s; see OMP_WAIT_POLICY in the module docstring)."
        )
    for key, t in res["targets"].items():
        lines.append(f"Target {key}: {t['value']} (want {t['target']}): {'met' if t['met'] else 'MISSED'}")
    if res["breakdown_s_per_step"]:
        keys: list[str] = []
        for bd in res["breakdown_s_per_step"].values():
            keys += [k for k in bd if k not in keys and k != "total"]
        cols = list(res["breakdown_s_per_step"])
        lines += ["", "Where a step's time goes (s/step, separate instrumented steps):", "", "| phase | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for k in keys + ["total"]:
            lines.append(f"| {k} | " + " | ".join(f"{res['breakdown_s_per_step'][c].get(k, 0.0):.3f}" for c in cols) + " |")
    lines += ["", f"(whole run {res['wall_s']} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads for every variant (default 2; 1 with --quick)")
    p.add_argument("--reps", type=int, default=None, help="repetitions, variants interleaved in each (default 5)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant per repetition (default 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant before the first repetition (default 2)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64)")
    p.add_argument("--width", type=int, default=None, help="base filters ngf = ndf (default 64)")
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--n-images", type=int, default=None, help="training crops (default 512)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma separated from {list(VARIANTS)} (default: %(default)s)")
    p.add_argument("--breakdown", type=int, default=None, help="instrumented steps per variant for the time breakdown, 0 = off (default 2)")
    p.add_argument("--max-minutes", type=float, default=None, help="start no further repetition once the run is expected to pass this (at least 2 repetitions run; default 6, 0 = no limit)")
    p.add_argument("--workdir", help="where trainers write (default: a temporary directory, removed afterwards)")
    p.add_argument("--json", help="write the result dictionary here")
    p.add_argument("--quick", action="store_true", help=f"tiny smoke-test settings {QUICK} (explicit flags still win)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    defaults = QUICK if a.quick else DEFAULTS
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.variants = [n.strip() for n in a.variants.split(",") if n.strip()]
    bad = [n for n in a.variants if n not in VARIANTS]
    if bad or not a.variants:
        p.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    if len(set(a.variants)) != len(a.variants):
        p.error("--variants lists a variant twice")
    for k in ("threads", "reps", "steps", "batch", "width", "z_dim", "n_images"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if a.warmup < 0 or a.breakdown < 0 or a.max_minutes < 0:
        p.error("--warmup, --breakdown and --max-minutes must be >= 0")
    if a.n_images < 2:
        p.error("--n-images must be >= 2")
    return a


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import write_result

    opts = parse_args(argv)
    res = run(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(res))
    write_result(opts.json, res)
    if opts.check and not all(t["met"] for t in res["targets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
