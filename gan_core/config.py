"""Typed configuration for models and training.

One documented set of defaults; every field can be overridden from a scenario file.
Unknown keys, wrong types and incompatible combinations are rejected with a message
that names the key and the allowed values (pydantic with ``extra="forbid"``, plus
one cross-field validator that holds every rule involving several settings).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ARCHITECTURES = ("seed-dcgan", "dcgan")
RESOLUTIONS = (16, 28, 32, 64, 128)
DIFFAUG_OPS = ("color", "translation", "cutout")


class ConfigError(ValueError):
    """A configuration value is unknown, has the wrong type, or conflicts with another."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


class ModelConfig(_Strict):
    """Architecture of G and D."""

    arch: Literal["seed-dcgan", "dcgan"] = "dcgan"
    """``seed-dcgan``: the founding baseline (Linear stem, 5x5 transposed convs, two
    stride-2 convs in D). ``dcgan``: pytorch/examples DCGAN with BatchNorm."""
    resolution: int = 32
    """Output side in pixels: 16, 28, 32, 64 or 128."""
    channels: Literal[1, 3] = 3
    """1 (grey) or 3 (RGB)."""
    z_dim: int = Field(100, ge=1, le=1024)
    """Size of the latent vector G draws images from."""
    width: int | None = Field(None, ge=8, le=512)
    """``dcgan`` base filters (ngf = ndf), default 64. ``seed-dcgan`` has a fixed 128
    and rejects this key."""
    spectral_norm: bool = False
    """Spectral normalisation on every D layer (``dcgan`` then drops BatchNorm in D)."""
    d_norm: Literal["batch", "group", "none"] | None = None
    """Normalisation between ``dcgan``'s D convolutions: ``batch`` (pytorch/examples),
    ``group`` (GroupNorm: per image, so differentially private training can clip each
    image's influence) or ``none``. Default: ``batch``, ``none`` under spectral_norm."""
    upsample: Literal["transposed", "resize"] = "transposed"
    """How ``dcgan``'s G doubles the resolution: a 4x4 stride-2 transposed convolution
    (pytorch/examples), or nearest-neighbour resize + 3x3 convolution, which avoids the
    checkerboard pattern of overlapping strides (Odena et al., 2016)."""

    @property
    def d_norm_effective(self) -> str:
        """D's normalisation as built: ``d_norm``, or its default."""
        if self.d_norm is not None:
            return self.d_norm
        return "none" if self.spectral_norm or self.arch == "seed-dcgan" else "batch"

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        if v not in RESOLUTIONS:
            raise ValueError(f"resolution {v} is not supported; allowed: {list(RESOLUTIONS)}")
        return v


class _AugOp(_Strict):
    p: float = Field(1.0, ge=0, le=1)
    """Probability that the op fires for an image (scaled by ADA's strength when ``train.ada`` is on)."""


class BrightnessOp(_AugOp):
    op: Literal["brightness"]
    limit: float = Field(0.25, ge=0, le=1)
    """Add U(-limit, limit) in [0, 1] pixel units."""


class ContrastOp(_AugOp):
    op: Literal["contrast"]
    limit: float = Field(0.5, ge=0, le=1)
    """Scale deviations from the image mean by U(1 - limit, 1 + limit)."""


class SaturationOp(_AugOp):
    op: Literal["saturation"]
    limit: float = Field(1.0, ge=0, le=1)
    """Scale deviations from the pixel's grey by U(1 - limit, 1 + limit) (RGB only)."""


class TranslationOp(_AugOp):
    op: Literal["translation"]
    ratio: float = Field(0.125, gt=0, le=0.5)
    """Shift by whole pixels, up to this share of the side, zero padded."""


class CutoutOp(_AugOp):
    op: Literal["cutout"]
    ratio: float = Field(0.5, gt=0, le=1)
    """Side of the zeroed square, as a share of the image side."""


class AffineOp(_AugOp):
    op: Literal["affine"]
    translate: float = Field(0.0, ge=0, le=0.5)
    """Shift up to this share of the side."""
    scale: tuple[float, float] = (1.0, 1.0)
    """Zoom factor range (> 1 enlarges)."""
    rotate: float = Field(0.0, ge=0, le=180)
    """Rotate up to this many degrees either way."""

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"scale {list(v)} must be [low, high] with 0 < low <= high")
        return v


AugOp = Annotated[Union[BrightnessOp, ContrastOp, SaturationOp, TranslationOp, CutoutOp, AffineOp], Field(discriminator="op")]
"""One differentiable op on D's input (``gan_core.diffaug``), applied to real and
generated images alike."""


class PrivacyConfig(_Strict):
    """Differentially private training: DP-SGD on D (the only network that sees real
    images), the guarantee passed on to G by post-processing."""

    epsilon: float = Field(gt=0)
    """The privacy budget: the whole training spends at most this epsilon (smaller = more
    private, noisier). The noise is set so that ``train.steps`` steps spend exactly this."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """Probability that the epsilon bound fails; must be below 1 / (number of training images)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Each real image's gradient on D is clipped to this L2 norm before noise is added."""


class TrainConfig(_Strict):
    """The training loop: budget, optimiser, loss and the small-data recipe."""

    steps: int = Field(1000, ge=1)
    """Training steps (one D and one G update each): the budget."""
    batch_size: int = Field(64, ge=1)
    """Real (and generated) images per step."""
    seed: int = 0
    """Seed of everything random in training: same seed, data and config, same bytes."""
    lr_g: float = Field(2e-4, gt=0)
    """Adam learning rate of G."""
    lr_d: float = Field(2e-4, gt=0)
    """Adam learning rate of D."""
    beta1: float = Field(0.5, ge=0, lt=1)
    """Adam beta1 of both."""
    beta2: float = Field(0.999, ge=0, lt=1)
    """Adam beta2 of both."""
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    """GAN loss: the non-saturating logistic loss, or the hinge loss in D."""
    r1_gamma: float = Field(0.0, ge=0)
    """R1 penalty weight on real images (0 = off)."""
    diffaug: str = ""
    """DiffAugment policy, comma separated from color, translation, cutout ('' = off):
    shorthand for those ops at DiffAugment's strengths with p = 1, before ``augment``."""
    augment: tuple[AugOp, ...] = ()
    """Differentiable ops on D's input, for real and generated images alike, e.g.
    ``[{op: translation, ratio: 0.06, p: 0.5}, {op: brightness, limit: 0.1}]``
    (ops: brightness, contrast, saturation, translation, cutout, affine)."""
    ada: bool = False
    """Adaptive augmentation (StyleGAN2-ADA): the ops of ``diffaug``/``augment`` fire
    with probability ``p * ada_p``; ``ada_p`` starts at ``ada_p_init`` and follows the
    overfitting heuristic r_t = E[sign(D(real))] towards ``ada_target``."""
    ada_target: float = Field(0.6, gt=0, lt=1)
    """The r_t that ADA steers towards (0.6 in StyleGAN2-ADA)."""
    ada_interval: int = Field(4, ge=1)
    """Steps between adjustments of ada_p (r_t is averaged over them)."""
    ada_speed_images: int = Field(50_000, ge=1)
    """Images over which ada_p can move by 1 (StyleGAN2-ADA: 500k on large data)."""
    ada_p_init: float = Field(0.0, ge=0, le=1)
    """ADA's probability at step 0."""
    ema_half_life_images: int = Field(0, ge=0)
    """Half-life of the EMA of G in images (0 = no EMA). StyleGAN2-ADA uses 10k-20k."""
    ema_rampup: float = Field(0.05, ge=0)
    """Half-life is capped at ``images_seen * ema_rampup`` early on (0 = no ramp-up)."""
    ssl_rotation_d: float = Field(0.0, ge=0)
    """Weight of D's rotation-prediction loss on real images (Chen et al. 2019 use 1.0)."""
    ssl_rotation_g: float = Field(0.0, ge=0)
    """Weight of G's rotation loss on fakes (Chen et al. 2019 use 0.2)."""
    checkpoint_every: int = Field(100, ge=1)
    """Steps between checkpoints (a killed training resumes from the last one)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk; older ones are removed."""
    log_every: int = Field(1, ge=1)
    """Steps between rows of ``loss.csv``."""
    on_divergence: Literal["rollback", "stop"] = "rollback"
    """A non-finite loss: go back to the last checkpoint with lower learning rates, or stop."""
    divergence_lr_factor: float = Field(0.5, gt=0, lt=1)
    """Learning rates are multiplied by this on each rollback."""
    max_rollbacks: int = Field(3, ge=0)
    """Rollbacks before training stops with an error."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    num_threads: int | None = Field(None, ge=1)
    """torch CPU threads (default: torch's own choice)."""
    amp: Literal["auto", "off", "bf16"] = "auto"
    """Mixed precision: ``auto`` = bf16 autocast on CUDA, off on CPU (and under ``privacy``)."""
    privacy: PrivacyConfig | None = None
    """Differentially private training, e.g. ``{epsilon: 8}`` (also ``delta``,
    ``max_grad_norm``): D is trained with DP-SGD (opacus: per-image clipping, Gaussian
    noise, Poisson sampling, RDP accountant); the spent (epsilon, delta) is recorded with
    the generator. Needs a D without BatchNorm (``model.d_norm: group``, or arch
    ``seed-dcgan``) and no ADA, R1 or rotation loss on real images."""

    @field_validator("diffaug")
    @classmethod
    def _policy(cls, v: str) -> str:
        ops = [p.strip() for p in v.split(",") if p.strip()]
        bad = [p for p in ops if p not in DIFFAUG_OPS]
        if bad:
            raise ValueError(f"unknown DiffAugment op(s) {bad}; allowed: {list(DIFFAUG_OPS)}")
        return ",".join(ops)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"device {v!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")


class GANConfig(_Strict):
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _combinations(self) -> "GANConfig":
        m, t = self.model, self.train
        if m.arch == "seed-dcgan" and m.upsample != "transposed":
            raise ValueError("model.upsample applies to arch 'dcgan' only; remove it or use arch 'dcgan'")
        if m.arch == "seed-dcgan" and m.width is not None:
            raise ValueError("model.width does not apply to arch 'seed-dcgan' (fixed 128 filters); remove it or use arch 'dcgan'")
        if t.ada and not (t.diffaug or t.augment):
            raise ValueError("train.ada needs augmentations to adapt: set train.diffaug and/or train.augment")
        if t.ssl_rotation_g > 0 and t.ssl_rotation_d == 0:
            raise ValueError("train.ssl_rotation_g > 0 needs train.ssl_rotation_d > 0: D's rotation head is only trained by the D loss")
        if m.spectral_norm and m.d_norm == "batch":
            raise ValueError("model.d_norm 'batch' does not combine with model.spectral_norm (spectral norm replaces BatchNorm in D); use 'none' or 'group'")
        if m.arch == "seed-dcgan" and m.d_norm is not None:
            raise ValueError("model.d_norm applies to arch 'dcgan' only (seed-dcgan's D has no normalisation); remove it")
        if t.privacy is not None:
            self._check_private(m, t)
        return self

    @staticmethod
    def _check_private(m: ModelConfig, t: TrainConfig) -> None:
        why = "train.privacy clips and noises each real image's gradient on D"
        if m.arch == "dcgan" and m.d_norm_effective == "batch":
            raise ValueError(
                f"{why}, but BatchNorm in D mixes the images of a batch, so one image's influence cannot be bounded: "
                "set model.d_norm: group (or none), or use arch seed-dcgan"
            )
        if m.spectral_norm:
            raise ValueError(f"{why}; spectral_norm's power iteration has no per-image gradient: set model.spectral_norm: false (and model.d_norm: group)")
        if t.ada:
            raise ValueError(f"{why}; train.ada steers by D's outputs on the real images, a statistic of the private data outside the guarantee: set train.ada: false")
        if t.r1_gamma > 0:
            raise ValueError(f"{why}; the R1 penalty on real images is not clipped: set train.r1_gamma: 0")
        if t.ssl_rotation_d > 0 or t.ssl_rotation_g > 0:
            raise ValueError(f"{why}; the rotation loss on real images is not clipped: set train.ssl_rotation_d and ssl_rotation_g to 0")

    @property
    def uses_ema(self) -> bool:
        return self.train.ema_half_life_images > 0

    @property
    def d_augment_ops(self) -> list[dict[str, Any]]:
        """Every op on D's input, in order: the ``diffaug`` policy, then ``augment``."""
        from .diffaug import policy_ops

        return policy_ops(self.train.diffaug) + [op.model_dump() for op in self.train.augment]

    @property
    def uses_rotation(self) -> bool:
        return self.train.ssl_rotation_d > 0

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid GAN configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            allowed = _allowed_keys(parent)
            msg = f"unknown key; allowed keys here: {allowed}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = GANConfig
    for p in parent:
        field = model.model_fields.get(str(p))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def load_config(data: dict[str, Any] | None = None, *, source: str = "<dict>") -> GANConfig:
    """Build a :class:`GANConfig` from a plain dict (e.g. a scenario's ``gan:`` block).

    Raises :class:`ConfigError` naming ``source``, each bad key, and what is allowed.
    """
    try:
        return GANConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def config_from_json(text: str) -> GANConfig:
    return load_config(json.loads(text), source="checkpoint metadata")
