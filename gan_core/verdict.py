"""Two-sample realism measures and the promotion verdict built on them.

FID, precision and recall on the scenario's ruler (:mod:`gan_core.features`) see
what the ruler sees; a rotation-prediction CNN is nearly blind to blur and to
missing fine structure, and with few real images the FID floor is itself large,
so a ratio to it says little. This module adds measures that see the images
themselves and are calibrated for 50 images as well as 5,000:

* :func:`classifier_two_sample_test` -- a classifier trained to tell real images
  from samples, scored on held-out folds (Lopez-Paz & Oquab, 2017): logistic
  regression on multi-scale statistics of an untrained, seeded CNN. Accuracy
  0.5: indistinguishable; 1.0: every sample is recognisably generated.
* :func:`sharpness` -- the share of each image's variance above the 5x5
  binomial low-pass (the first Laplacian-pyramid level), pooled over the set,
  for samples over reals. ~1 real-like, << 1 blur, >> 1 noise; reported with the
  spread of the same ratio for random draws of real images (its floor).
* :func:`one_nn_accuracy` -- leave-one-out 1-nearest-neighbour two-sample
  accuracy (Xu et al., 2018) in any feature space: no training; > 0.5 the sets
  differ (collapse, noise), < 0.5 the samples sit on top of the reals (copies).

:func:`verdict_metrics` computes these beside
:func:`gan_core.quality.evaluate_samples` and
:func:`gan_core.manifold.memorization_audit`; :func:`judge` turns that flat dict
and a :class:`Bar` (thresholds) into a :class:`Verdict`: passed, plus every
failed criterion with its value and bar. The default bar and the reference
models it was measured on are in docs/BENCHMARKS.md ("Ruler and verdict:
reference models").

Images: float (N, C, H, W) in [-1, 1] or uint8 (see
:func:`gan_core.images.as_float_images`). Everything is deterministic given
``seed`` (local ``torch.Generator``; the global RNG is never touched) for a
given torch thread count. Pure PyTorch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import PixelFeatures, SSLFeatureNet, _init_weights, extract_features
from .images import as_float_images, check_pair
from .manifold import CDIST_MODE as _CDIST_MODE
from .swd import binomial_blur as _blur

__all__ = [
    "realism_metrics",
    "classifier_two_sample_test",
    "sharpness",
    "high_frequency_share",
    "one_nn_accuracy",
    "wilson_interval",
    "verdict_metrics",
    "Bar",
    "Check",
    "Verdict",
    "judge",
]


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #
def _pair(real: Any, fake: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r = as_float_images(real, name="real")
    f = as_float_images(fake, name="fake")
    check_pair(r, f, "real", "fake")
    return r, f


def _balanced(real: torch.Tensor, fake: torch.Tensor, max_per_class: int | None, g: torch.Generator, min_n: int, what: str):
    """Equal-size seeded subsets of ``real`` and ``fake`` (n = min of both and ``max_per_class``)."""
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < min_n):
        raise ValueError(f"max_per_class must be an int >= {min_n} or None, got {max_per_class!r}")
    n = min(real.shape[0], fake.shape[0], max_per_class or real.shape[0])
    if n < min_n:
        raise ValueError(
            f"{what} needs at least {min_n} real and {min_n} fake images, got real={real.shape[0]}, fake={fake.shape[0]}"
        )
    r = real[torch.randperm(real.shape[0], generator=g)[:n]]
    f = fake[torch.randperm(fake.shape[0], generator=g)[:n]]
    return r, f


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95 %)."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    p = successes / trials
    den = 1 + z * z / trials
    mid = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _binomial_p_value(successes: int, trials: int) -> float:
    """One-sided P(X >= successes) for X ~ Binomial(trials, 0.5), exact."""
    log_half = trials * math.log(0.5)
    terms = [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + log_half for k in range(successes, trials + 1)]
    if not terms:
        return 0.0
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


# --------------------------------------------------------------------------- #
# Classifier two-sample test
# --------------------------------------------------------------------------- #
def _random_feature_stats(x: torch.Tensor, seed: int, batch_size: int = 256, symmetries: tuple[str, ...] = ()) -> torch.Tensor:
    """Per-channel mean and standard deviation of the pixels and of every layer of an
    untrained :class:`~gan_core.features.SSLFeatureNet` (Kaiming-uniform weights from
    ``seed``): multi-scale texture statistics, (N, d) float64, averaged over the
    group of the declared ``symmetries`` (an image and its mirror get the same)."""
    from .symmetry import symmetrized

    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
        net = SSLFeatureNet(x.shape[1], x.shape[-1], dim=64)
    _init_weights(net, torch.Generator().manual_seed(int(seed)))
    net.eval()

    def stats_of(b: torch.Tensor) -> torch.Tensor:
        stats = [b.mean(dim=(2, 3)), b.std(dim=(2, 3))]
        h = b
        for layer in net.body:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        return torch.cat(stats, 1)

    stats = symmetrized(stats_of, symmetries)
    with torch.no_grad():
        return torch.cat([stats(b) for b in x.split(batch_size)]).double()


def _logistic_fit(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression on standardised float64 features (L-BFGS)."""
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def classifier_two_sample_test(
    real: Any,
    fake: Any,
    *,
    folds: int = 4,
    l2: float = 1e-2,
    max_per_class: int | None = 1000,
    seed: int = 0,
    symmetries: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Can a classifier tell ``real`` from ``fake``? (Lopez-Paz & Oquab, 2017.)

    Equal numbers ``n = min(len(real), len(fake), max_per_class)`` of each (a
    seeded choice) are split into ``folds`` stratified folds; a classifier is
    fitted on all folds but one and predicts the held-out fold, so every image is
    predicted exactly once, by a classifier that never saw it.

    The classifier is L2-regularised logistic regression (weight ``l2`` on
    standardised features) on multi-scale texture statistics: the per-channel
    mean and standard deviation of the pixels and of every layer of an
    *untrained*, seeded :class:`~gan_core.features.SSLFeatureNet`. Nothing but the
    logistic regression is fitted, so it works with 10 images per class as with
    1,000 and takes 0.1-0.5 s; it sees blur, noise, grain, contrast and missing or
    wrong fine structure (membranes, stone edges, a speckled background). It does
    not see global layout (where the eyes are): that is the ruler's job (FID,
    precision). Measured against a small CNN trained on the pixels of each fold
    (2-15 s per test), it was as good or better on every reference model of
    docs/BENCHMARKS.md.

    Returns ``accuracy`` (share of the 2n held-out predictions that are right:
    0.5 = indistinguishable, 1 = separable; below 0.5 is chance), ``ci_low`` /
    ``ci_high`` (95 % Wilson interval over the 2n predictions), ``p_value``
    (one-sided exact binomial test against 0.5), ``fold_accuracies``,
    ``accuracy_real`` / ``accuracy_fake`` (per class), ``n_real``, ``n_fake``,
    ``folds``, ``n_features``, ``seed``. Deterministic given ``seed``. The
    interval treats the 2n predictions as independent; cross-validated
    predictions are slightly correlated, so it is a little optimistic.
    """
    r, f = _pair(real, fake)
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    if r.shape[-1] != r.shape[-2] or not 8 <= r.shape[-1] <= 512:
        raise ValueError(f"the classifier test needs square images of 8 to 512 pixels, got {tuple(r.shape[-2:])}")
    g = torch.Generator().manual_seed(int(seed))
    r, f = _balanced(r, f, max_per_class, g, folds, "the classifier two-sample test")
    n = r.shape[0]
    x = torch.cat([r, f])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    # stratified folds: each class is permuted and dealt round-robin
    fold_of = torch.empty(2 * n, dtype=torch.long)
    for cls in (0, 1):
        idx = torch.randperm(n, generator=g) + cls * n
        fold_of[idx] = torch.arange(n) % folds
    feats = _random_feature_stats(x, seed, symmetries=tuple(symmetries))
    pred = torch.empty(2 * n)
    fold_acc = []
    for k in range(folds):
        tr = (fold_of != k).nonzero().squeeze(1)
        te = (fold_of == k).nonzero().squeeze(1)
        mu = feats[tr].mean(0)
        sd = feats[tr].std(0).clamp_min(1e-8)
        w, b = _logistic_fit((feats[tr] - mu) / sd, y[tr].double(), float(l2))
        logits = ((feats[te] - mu) / sd) @ w + b
        pred[te] = (logits > 0).float()
        fold_acc.append(float((pred[te] == y[te]).float().mean()))
    right = pred == y
    k_right = int(right.sum())
    lo, hi = wilson_interval(k_right, 2 * n)
    return {
        "accuracy": k_right / (2 * n),
        "ci_low": lo,
        "ci_high": hi,
        "p_value": _binomial_p_value(k_right, 2 * n),
        "accuracy_real": float(right[:n].float().mean()),
        "accuracy_fake": float(right[n:].float().mean()),
        "fold_accuracies": fold_acc,
        "n_real": int(n),
        "n_fake": int(n),
        "folds": int(folds),
        "n_features": int(feats.shape[1]),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- #
# Sharpness
# --------------------------------------------------------------------------- #
def _hf_and_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: mean squared high-pass response (x - 5x5 binomial blur) and variance,
    both averaged over channels and pixels (float64)."""
    if min(x.shape[-2:]) < 3:
        raise ValueError(f"sharpness needs images of at least 3x3 pixels, got {tuple(x.shape[-2:])}")
    hf = []
    for b in x.split(256):
        hf.append((b - _blur(b)).double().pow(2).mean(dim=(1, 2, 3)))
    var = (x.double() - x.double().mean(dim=(2, 3), keepdim=True)).pow(2).mean(dim=(1, 2, 3))
    return torch.cat(hf), var


def high_frequency_share(images: Any, *, name: str = "images") -> float:
    """Share of the set's pixel variance above the 5x5 binomial low-pass (0 flat/blurred ..
    ~0.8 white noise), pooled: sum of high-pass energy / sum of variance."""
    x = as_float_images(images, name=name)
    hf, var = _hf_and_var(x)
    total = float(var.sum())
    return float(hf.sum()) / total if total > 0 else 0.0


def sharpness(real: Any, fake: Any, *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """High-frequency share of ``fake`` over that of ``real`` (see :func:`high_frequency_share`).

    ``ratio`` ~1: real-like detail; << 1: blur (layout without detail); >> 1:
    noise or checkerboard artefacts. The share is a ratio of pooled sums, so it
    does not depend on contrast (a faint but sharp sample is not "blurry").

    Floor: ``floor_low`` / ``floor_high`` are the 5th / 95th percentiles of the
    same ratio for ``n_boot`` draws (with replacement) of ``len(fake)`` real
    images against all of ``real`` -- what a perfect generator would score with
    this many samples. ``log_excess`` is by how much (in log units) the ratio
    lies outside that band (0 inside it).
    """
    r, f = _pair(real, fake)
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    hf_r, var_r = _hf_and_var(r)
    hf_f, var_f = _hf_and_var(f)
    if float(var_r.sum()) <= 0:
        raise ValueError("real: the real images are flat (zero variance); sharpness is undefined")
    share_r = float(hf_r.sum() / var_r.sum())
    share_f = float(hf_f.sum() / var_f.sum()) if float(var_f.sum()) > 0 else 0.0
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, r.shape[0], (n_boot, f.shape[0]), generator=g)
    boot = (hf_r[idx].sum(1) / var_r[idx].sum(1).clamp_min(1e-30)) / share_r
    lo, hi = (float(v) for v in torch.quantile(boot, torch.tensor([0.05, 0.95], dtype=boot.dtype)))
    ratio = share_f / share_r
    if ratio <= 0:
        excess = float("inf")
    else:
        excess = max(0.0, math.log(lo) - math.log(ratio), math.log(ratio) - math.log(hi))
    return {
        "ratio": ratio,
        "floor_low": lo,
        "floor_high": hi,
        "log_excess": excess,
        "share_real": share_r,
        "share_fake": share_f,
        "n_real": int(r.shape[0]),
        "n_fake": int(f.shape[0]),
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- #
# Leave-one-out 1-NN two-sample accuracy
# --------------------------------------------------------------------------- #
def one_nn_accuracy(
    real: Any,
    fake: Any,
    *,
    extractor: nn.Module | None = None,
    max_per_class: int | None = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Leave-one-out 1-nearest-neighbour two-sample accuracy (Xu et al., 2018).

    Equal numbers of real and fake images (seeded choice, at most
    ``max_per_class`` each) are pooled; each is labelled by its nearest other
    image (Euclidean distance of ``extractor`` features; default
    :class:`~gan_core.features.PixelFeatures`). ``accuracy`` ~0.5: the sets are
    mixed; -> 1: separable (noise, collapse: the samples' neighbours are
    samples); < 0.5: samples sit next to reals (copies of them). Also
    ``accuracy_real``, ``accuracy_fake``, ``n_real``, ``n_fake``.
    """
    r, f = _pair(real, fake)
    g = torch.Generator().manual_seed(int(seed))
    r, f = _balanced(r, f, max_per_class, g, 2, "1-NN accuracy")
    ext = PixelFeatures() if extractor is None else extractor
    feats = extract_features(torch.cat([r, f]), ext, name="images").float()
    n = r.shape[0]
    d = torch.cdist(feats, feats, compute_mode=_CDIST_MODE)
    d.fill_diagonal_(float("inf"))
    nn_idx = d.argmin(dim=1)
    label = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
    right = label[nn_idx] == label
    return {
        "accuracy": float(right.float().mean()),
        "accuracy_real": float(right[:n].float().mean()),
        "accuracy_fake": float(right[n:].float().mean()),
        "n_real": int(n),
        "n_fake": int(n),
        "extractor": type(ext).__name__,
    }


# --------------------------------------------------------------------------- #
# All measures at once
# --------------------------------------------------------------------------- #
def realism_metrics(real: Any, fake: Any, *, seed: int = 0, max_per_class: int | None = 1000, symmetries: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The realism measures :func:`judge` reads, flat: the classifier two-sample test
    (``c2st_accuracy``, ``c2st_ci_low``, ``c2st_ci_high``, ``c2st_p_value``, ``c2st_n``)
    and the sharpness ratio with its floor (``sharpness_ratio``,
    ``sharpness_floor_low``, ``sharpness_floor_high``) of ``fake`` against ``real``.
    ``symmetries``: the flips and turns the data is declared invariant to
    (:mod:`gan_core.symmetry`); the classifier does not tell an image from those."""
    c2st = classifier_two_sample_test(real, fake, seed=seed, max_per_class=max_per_class, symmetries=symmetries)
    return _realism_flat(c2st, sharpness(real, fake, seed=seed))


def _realism_flat(c2st: Mapping[str, Any], sharp: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "c2st_accuracy": c2st["accuracy"],
        "c2st_ci_low": c2st["ci_low"],
        "c2st_ci_high": c2st["ci_high"],
        "c2st_p_value": c2st["p_value"],
        "c2st_n": c2st["n_real"],
        "sharpness_ratio": sharp["ratio"],
        "sharpness_floor_low": sharp["floor_low"],
        "sharpness_floor_high": sharp["floor_high"],
    }


def verdict_metrics(
    real_train: Any,
    real_heldout: Any,
    fake: Any,
    *,
    extractor: nn.Module,
    seed: int = 0,
    n_audit: int = 500,
    max_per_class: int | None = 1000,
    c2st_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every measure :func:`judge` reads, for ``fake`` against the scenario's real images.

    * ``fid``, ``fid_floor``, ``fid_over_floor``, ``precision``, ``recall`` and their
      floors: :func:`gan_core.quality.evaluate_samples` (``n = min(len(real_heldout),
      len(fake))`` samples, the ruler ``extractor``);
    * ``near_copy_share``: :func:`gan_core.manifold.memorization_audit` of the first
      ``n_audit`` samples against ``real_train`` (pixels);
    * ``c2st_*``: :func:`classifier_two_sample_test` of ``real_train`` against ``fake``
      (at most ``max_per_class`` of each; ``c2st_options`` go to it);
    * ``sharpness_*``: :func:`sharpness` of ``fake`` against ``real_train``;
    * ``nn1_accuracy*``: :func:`one_nn_accuracy` in the ruler's feature space.

    Returns a flat, JSON-ready dict of numbers, plus ``seconds`` (wall time of each
    measure) and ``details`` (the full result of each function).
    """
    from .manifold import memorization_audit
    from .quality import evaluate_samples

    train = as_float_images(real_train, name="real_train")
    held = as_float_images(real_heldout, name="real_heldout")
    fk = as_float_images(fake, name="fake")
    check_pair(train, fk, "real_train", "fake")
    if not isinstance(n_audit, int) or n_audit < 1:
        raise ValueError(f"n_audit must be a positive int, got {n_audit!r}")
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - t0, 3)
        return out

    q = timed("evaluate_samples", evaluate_samples, train, held, fk, extractor=extractor, seed=seed)
    audit = timed("memorization_audit", memorization_audit, train, fk[:n_audit])
    c2st = timed("c2st", classifier_two_sample_test, train, fk, seed=seed, max_per_class=max_per_class, **dict(c2st_options or {}))
    sharp = timed("sharpness", sharpness, train, fk, seed=seed)
    nn1 = timed("nn1", one_nn_accuracy, train, fk, extractor=extractor, seed=seed, max_per_class=max_per_class)
    out: dict[str, Any] = {
        k: q[k]
        for k in ("fid", "fid_floor", "fid_over_floor", "kid_mean", "kid_floor_mean", "precision", "precision_floor", "recall", "recall_floor", "n_real_train", "n_heldout", "n_fake")
    }
    out.update(_realism_flat(c2st, sharp))
    out.update(
        near_copy_share=audit["near_copy_share"],
        nn1_accuracy=nn1["accuracy"],
        nn1_accuracy_fake=nn1["accuracy_fake"],
        nn1_n=nn1["n_real"],
        seed=int(seed),
        seconds=seconds,
        details={"quality": q, "memorization": {k: v for k, v in audit.items() if k != "closest"}, "c2st": c2st, "sharpness": sharp, "nn1": nn1},
    )
    return out


# --------------------------------------------------------------------------- #
# The verdict
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Bar:
    """Promotion thresholds. Defaults: measured on the reference models of
    docs/BENCHMARKS.md ("Ruler and verdict: reference models"), where every bad
    model is refused and the held-out reals pass in 50- to 1,800-image cases.

    Each threshold is widened, never tightened, by what real images score with the
    same sample counts, so that a perfect generator of a 50-image scenario is not
    refused for sampling noise:

    * realism is refused on the *lower* end of the classifier test's 95 % interval
      (``c2st_ci_low > max_c2st_accuracy``): the classifier must be shown to beat
      the bar, which needs more evidence with 10 images per class than with 1,000;
    * the sharpness band is widened to the real images' own bootstrap band
      (``sharpness_floor_low`` / ``sharpness_floor_high``);
    * ``min_precision`` / ``min_recall`` are lowered to ``floor_fraction`` of the
      held-out reals' precision / recall when that is lower.
    """

    max_fid_over_floor: float = 4.0
    min_precision: float = 0.5
    min_recall: float = 0.3
    floor_fraction: float = 0.6
    max_c2st_accuracy: float = 0.7
    min_sharpness_ratio: float = 0.75
    max_sharpness_ratio: float = 2.0
    max_near_copy_share: float = 0.05
    max_membership_auc: float | None = None
    """Privacy: the membership-inference attack's ROC AUC must stay at or below this
    (None: reported, not gated; scenarios of domain ``medical`` default to 0.6)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name == "max_membership_auc":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Bar.{f.name} must be a finite number, got {v!r}")
        if not self.max_fid_over_floor > 0:
            raise ValueError(f"Bar.max_fid_over_floor must be > 0, got {self.max_fid_over_floor}")
        for name in ("min_precision", "min_recall", "floor_fraction", "max_near_copy_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Bar.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_membership_auc is not None and not 0.5 <= self.max_membership_auc <= 1:
            raise ValueError(f"Bar.max_membership_auc must be in [0.5, 1], got {self.max_membership_auc}")
        if not 0.5 <= self.max_c2st_accuracy <= 1:
            raise ValueError(f"Bar.max_c2st_accuracy must be in [0.5, 1], got {self.max_c2st_accuracy}")
        if not 0 < self.min_sharpness_ratio <= 1 <= self.max_sharpness_ratio:
            raise ValueError(
                "Bar needs 0 < min_sharpness_ratio <= 1 <= max_sharpness_ratio, got "
                f"{self.min_sharpness_ratio} and {self.max_sharpness_ratio}"
            )


@dataclass(frozen=True)
class Check:
    """One criterion: ``measure`` ``op`` ``bar`` (``op`` is "<=" or ">=")."""

    criterion: str  # fidelity, diversity, realism, memorization, privacy
    measure: str
    value: float
    op: str
    bar: float
    passed: bool

    @property
    def margin(self) -> float:
        """How far inside (> 0) or outside (< 0) the bar the value lies, relative to the bar."""
        if not math.isfinite(self.value):
            return -math.inf
        scale = abs(self.bar) if self.bar != 0 else 1.0
        return (self.bar - self.value) / scale if self.op == "<=" else (self.value - self.bar) / scale

    def __str__(self) -> str:
        return f"{self.criterion}: {self.measure} {self.value:.4g} {'meets' if self.passed else 'fails'} {self.op} {self.bar:.4g}"


@dataclass(frozen=True)
class Verdict:
    """``passed`` when every check passed; ``failed`` lists the checks that did not."""

    passed: bool
    checks: tuple[Check, ...]
    bar: Bar = field(default_factory=Bar)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def failed_criteria(self) -> list[str]:
        """Names of the failed criteria (fidelity, diversity, realism, memorization, privacy), each once."""
        return list(dict.fromkeys(c.criterion for c in self.failed))

    @property
    def reasons(self) -> list[str]:
        return [str(c) for c in self.failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed_criteria": self.failed_criteria,
            "failed": [{**asdict(c), "margin": c.margin} for c in self.failed],
            "checks": [{**asdict(c), "margin": c.margin} for c in self.checks],
            "bar": asdict(self.bar),
        }


_REQUIRED = {
    "fid_over_floor": "gan_core.quality.evaluate_samples",
    "precision": "gan_core.quality.evaluate_samples",
    "recall": "gan_core.quality.evaluate_samples",
    "near_copy_share": "gan_core.manifold.memorization_audit",
    "c2st_ci_low": "gan_core.verdict.classifier_two_sample_test (ci_low)",
    "sharpness_ratio": "gan_core.verdict.sharpness",
    "membership_auc": "gan_core.privacy.membership_inference_audit",
}


def _flatten(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Accept :func:`verdict_metrics` output, or an ``evaluate_generator``-style
    ``{"quality": .., "memorization": .., "realism": ..}`` dict."""
    flat = dict(metrics)
    for section in ("quality", "realism"):
        if isinstance(metrics.get(section), Mapping):
            flat.update(metrics[section])
    mem = metrics.get("memorization")
    if isinstance(mem, Mapping) and "near_copy_share" in mem:
        flat["near_copy_share"] = mem["near_copy_share"]
    priv = metrics.get("privacy")
    if isinstance(priv, Mapping) and "membership_auc" in priv:
        flat["membership_auc"] = priv["membership_auc"]
    return flat


def _number(flat: Mapping[str, Any], key: str) -> float:
    if key not in flat:
        raise KeyError(f"metrics has no {key!r} (computed by {_REQUIRED.get(key, 'verdict_metrics')}); pass the dict of verdict_metrics()")
    v = flat[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"metrics[{key!r}] must be a number, got {type(v).__name__} {v!r}")
    return float(v)


def judge(metrics: Mapping[str, Any], bar: Bar | None = None) -> Verdict:
    """Promotion verdict for the measures of :func:`verdict_metrics` against ``bar``.

    Criteria (a NaN value fails its check):

    * fidelity -- ``fid_over_floor <= max_fid_over_floor`` and ``precision >=
      min(min_precision, floor_fraction * precision_floor)``;
    * diversity -- ``recall >= min(min_recall, floor_fraction * recall_floor)``;
    * realism -- ``c2st_ci_low <= max_c2st_accuracy`` (the lower end of the
      classifier test's 95 % interval) and ``sharpness_ratio`` within
      ``[min(min_sharpness_ratio, sharpness_floor_low), max(max_sharpness_ratio,
      sharpness_floor_high)]``;
    * memorization -- ``near_copy_share <= max_near_copy_share``;
    * privacy -- ``membership_auc <= max_membership_auc``, when the bar sets one.

    Floors (``precision_floor``, ``recall_floor``, ``sharpness_floor_*``) are
    optional keys; without them the fixed thresholds apply.
    """
    bar = Bar() if bar is None else bar
    if not isinstance(bar, Bar):
        raise TypeError(f"bar must be a gan_core.verdict.Bar, got {type(bar).__name__}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping (the dict of verdict_metrics()), got {type(metrics).__name__}")
    m = _flatten(metrics)
    get = lambda k: _number(m, k)  # noqa: E731
    opt = lambda k, default: _number(m, k) if k in m else default  # noqa: E731

    def check(criterion: str, measure: str, value: float, op: str, threshold: float) -> Check:
        ok = value <= threshold if op == "<=" else value >= threshold  # False for NaN
        return Check(criterion, measure, value, op, float(threshold), bool(ok))

    prec_bar = min(bar.min_precision, bar.floor_fraction * opt("precision_floor", 1.0))
    rec_bar = min(bar.min_recall, bar.floor_fraction * opt("recall_floor", 1.0))
    s = get("sharpness_ratio")
    s_lo = min(bar.min_sharpness_ratio, opt("sharpness_floor_low", bar.min_sharpness_ratio))
    s_hi = max(bar.max_sharpness_ratio, opt("sharpness_floor_high", bar.max_sharpness_ratio))
    checks = (
        check("fidelity", "fid_over_floor", get("fid_over_floor"), "<=", bar.max_fid_over_floor),
        check("fidelity", "precision", get("precision"), ">=", prec_bar),
        check("diversity", "recall", get("recall"), ">=", rec_bar),
        check("realism", "c2st_ci_low", get("c2st_ci_low"), "<=", bar.max_c2st_accuracy),
        check("realism", "sharpness_ratio", s, ">=", s_lo),
        check("realism", "sharpness_ratio", s, "<=", s_hi),
        check("memorization", "near_copy_share", get("near_copy_share"), "<=", bar.max_near_copy_share),
    )
    if bar.max_membership_auc is not None:
        checks += (check("privacy", "membership_auc", get("membership_auc"), "<=", bar.max_membership_auc),)
    return Verdict(passed=all(c.passed for c in checks), checks=checks, bar=bar)
