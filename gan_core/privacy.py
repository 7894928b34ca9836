"""Privacy of a trained generator: a membership-inference audit, and the accounting of
differentially private training. Imports torch; opacus only when DP training asks for it.

Membership inference (what a released generator gives away about *which* images it was
trained on, copies or not): the attacker draws many samples from the generator and
scores each real image by how close its nearest sample is (the full black-box attack of
GAN-Leaks, Chen et al., CCS 2020; the Monte-Carlo attack of Hilprecht et al., PETS 2019
is the same idea with a radius). A generator that leaks puts its samples nearer to its
training images than to fresh images of the same data, so the score tells them apart.
The audit reports the attack's ROC AUC over the scenario's training images (members)
and held-out images (non-members): 0.5 means the attack does no better than a coin.

An AUC near 0.5 says this attack failed, not that every attack would; a guarantee
needs differentially private training (``train.privacy``, :class:`DPAccounting`).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

DEFAULT_ATTACK_SAMPLES = 2000


def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    pos, neg = pos.double().view(-1, 1), neg.double().view(1, -1)
    wins = (pos > neg).double().sum() + 0.5 * (pos == neg).double().sum()
    return float(wins) / (pos.shape[0] * neg.shape[1])


def bootstrap_auc_interval(pos: torch.Tensor, neg: torch.Tensor, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the AUC, resampling members and non-members separately."""
    g = torch.Generator().manual_seed(seed)
    aucs = []
    for _ in range(n_boot):
        p = pos[torch.randint(0, len(pos), (len(pos),), generator=g)]
        q = neg[torch.randint(0, len(neg), (len(neg),), generator=g)]
        aucs.append(roc_auc(p, q))
    a = torch.tensor(aucs, dtype=torch.float64)
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return float(torch.quantile(a, lo)), float(torch.quantile(a, hi))


def membership_inference_audit(
    members: Any,
    non_members: Any,
    samples: Any,
    *,
    symmetries: tuple[str, ...] | list[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Can the generator's ``samples`` tell its training images (``members``) from
    held-out images of the same data (``non_members``)?

    Each real image is scored by minus the distance to its nearest sample (RMS pixel
    difference at <= 32x32, the memorization audit's space; with ``symmetries`` the
    nearest flipped or turned view of the sample counts). The attack's ROC AUC is the
    chance that a random member scores higher than a random non-member: 0.5 for a
    generator that gives nothing away, 1.0 when every training image has a sample
    closer than any fresh image does. ``auc_ci_low``/``auc_ci_high``: 95 % bootstrap
    interval (members and non-members resampled separately, ``seed``-ed).

    Returns plain Python types: ``membership_auc``, ``auc_ci_low``, ``auc_ci_high``,
    ``n_members``, ``n_non_members``, ``n_samples``, ``median_member_distance``,
    ``median_non_member_distance``, ``attack``.
    """
    from .features import PixelFeatures, extract_features
    from .images import as_float_images, check_pair
    from .manifold import nearest_k
    from .symmetry import group

    mem = as_float_images(members, name="members")
    non = as_float_images(non_members, name="non_members")
    samp = as_float_images(samples, name="samples")
    check_pair(mem, samp, "members", "samples")
    check_pair(non, samp, "non_members", "samples")
    if len(mem) < 2 or len(non) < 2:
        raise ValueError(f"the membership audit needs at least 2 members and 2 non-members, got {len(mem)} and {len(non)}")
    extractor = PixelFeatures()
    views = group(symmetries)
    f_samp = torch.cat([extract_features(v(samp), extractor, name="samples").float() for v in views])
    d_mem, _ = nearest_k(extract_features(mem, extractor, name="members").float(), f_samp, 1, chunk_size, views=len(views))
    d_non, _ = nearest_k(extract_features(non, extractor, name="non_members").float(), f_samp, 1, chunk_size, views=len(views))
    d_mem, d_non = d_mem[:, 0].double(), d_non[:, 0].double()
    auc = roc_auc(-d_mem, -d_non)
    lo, hi = bootstrap_auc_interval(-d_mem, -d_non, n_boot=n_boot, seed=seed)
    return {
        "membership_auc": auc,
        "auc_ci_low": lo,
        "auc_ci_high": hi,
        "n_members": int(len(mem)),
        "n_non_members": int(len(non)),
        "n_samples": int(len(samp)),
        "median_member_distance": float(d_mem.median()),
        "median_non_member_distance": float(d_non.median()),
        "attack": "nearest generated sample, RMS pixel distance (GAN-Leaks full black-box)",
    }


# --------------------------------------------------------------------------- #
# Differentially private training: accounting
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _quiet_accountant():
    """opacus warns when the best RDP order is its largest, which happens for the noise
    levels its own search tries far from the answer; the epsilon it returns is still a
    valid (looser) bound."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


class PrivacyBudgetError(RuntimeError):
    """DP training would spend more than its (epsilon, delta) budget."""


@dataclass
class DPAccounting:
    """The (epsilon, delta) bookkeeping of DP-SGD on D: Poisson sampling at
    ``sample_rate``, Gaussian noise ``noise_multiplier`` x ``max_grad_norm``, composed by
    opacus' RDP accountant. ``history`` is the accountant's state (kept in checkpoints)."""

    epsilon: float
    delta: float
    max_grad_norm: float
    sample_rate: float
    noise_multiplier: float
    history: list[tuple[float, float, int]] = field(default_factory=list)

    @classmethod
    def calibrate(cls, *, epsilon: float, delta: float, max_grad_norm: float, n_images: int, batch_size: int, steps: int) -> "DPAccounting":
        """The smallest noise that keeps ``steps`` steps within (epsilon, delta)."""
        from opacus.accountants.utils import get_noise_multiplier

        if not 0 < delta < 1 / n_images:
            raise PrivacyBudgetError(
                f"train.privacy.delta {delta:g} must be below 1/N = {1 / n_images:.3g} for {n_images} training images "
                "(a larger delta allows releasing an image outright); lower it, e.g. 1e-5"
            )
        q = min(1.0, batch_size / n_images)
        with _quiet_accountant():
            sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp")
        return cls(epsilon=epsilon, delta=delta, max_grad_norm=max_grad_norm, sample_rate=q, noise_multiplier=float(sigma))

    def _accountant(self):
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        acc.history = [tuple(h) for h in self.history]
        return acc

    def spent(self, extra_steps: int = 0) -> float:
        """Epsilon spent so far (plus ``extra_steps`` more, to look ahead)."""
        acc = self._accountant()
        if extra_steps:
            acc.history.append((self.noise_multiplier, self.sample_rate, extra_steps))
        if not acc.history:
            return 0.0
        with _quiet_accountant():
            return float(acc.get_epsilon(delta=self.delta))

    def steps_taken(self) -> int:
        return sum(int(h[2]) for h in self.history)

    def max_steps(self) -> int:
        """The most steps at this noise and sample rate that stay within ``epsilon``."""
        from opacus.accountants import RDPAccountant

        def eps(steps: int) -> float:
            acc = RDPAccountant()
            acc.history = [(self.noise_multiplier, self.sample_rate, steps)]
            with _quiet_accountant():
                return float(acc.get_epsilon(delta=self.delta))

        limit = self.epsilon * (1 + 1e-6)
        lo, hi = 0, 1
        while eps(hi) <= limit:
            lo, hi = hi, hi * 2
            if hi > 10**9:
                return hi
        while hi - lo > 1:  # eps(lo) <= limit < eps(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if eps(mid) <= limit else (lo, mid)
        return lo

    def check_budget(self, total_steps: int) -> None:
        """Refuse to go on when ``total_steps`` would spend more than ``epsilon``."""
        remaining = total_steps - self.steps_taken()
        if remaining > 0 and self.spent(remaining) > self.epsilon * (1 + 1e-6):
            raise PrivacyBudgetError(
                f"train.steps {total_steps} would spend epsilon {self.spent(remaining):.3g} > train.privacy.epsilon "
                f"{self.epsilon:g} (noise {self.noise_multiplier:.3g} was set for {self.steps_taken()} steps taken + the "
                "steps planned when training started); keep train.steps, or raise the budget and train from scratch"
            )

    def record_step(self) -> None:
        if self.history and self.history[-1][0] == self.noise_multiplier and self.history[-1][1] == self.sample_rate:
            s, q, n = self.history[-1]
            self.history[-1] = (s, q, n + 1)
        else:
            self.history.append((self.noise_multiplier, self.sample_rate, 1))

    def to_dict(self) -> dict[str, Any]:
        spent = self.spent()
        return {
            "epsilon_budget": self.epsilon,
            "epsilon_spent": spent,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps_taken(),
            "accountant": "rdp",
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DPAccounting":
        return cls(
            epsilon=float(d["epsilon_budget"]), delta=float(d["delta"]), max_grad_norm=float(d["max_grad_norm"]),
            sample_rate=float(d["sample_rate"]), noise_multiplier=float(d["noise_multiplier"]),
            history=[(float(s), float(q), int(n)) for s, q, n in d.get("history", [])],
        )


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())

