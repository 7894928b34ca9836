"""Typed configuration for models and training.

One documented set of defaults; every field can be overridden from a scenario file.
Unknown keys, wrong types and incompatible combinations are rejected with a message
that names the key and the allowed values (pydantic with ``extra="forbid"``, plus
one cross-field validator that holds every rule involving several settings).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ARCHITECTURES = ("seed-dcgan", "dcgan")
RESOLUTIONS = (16, 28, 32, 64, 128)
DIFFAUG_OPS = ("color", "translation", "cutout")


class ConfigError(ValueError):
    """A configuration value is unknown, has the wrong type, or conflicts with another."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Strict):
    """Architecture of G and D."""

    arch: Literal["seed-dcgan", "dcgan"] = "dcgan"
    """``seed-dcgan``: the founding baseline (Linear stem, 5x5 transposed convs, two
    stride-2 convs in D). ``dcgan``: pytorch/examples DCGAN with BatchNorm."""
    resolution: int = 32
    """Output side in pixels: 16, 28, 32, 64 or 128."""
    channels: Literal[1, 3] = 3
    z_dim: int = Field(100, ge=1, le=1024)
    width: int | None = Field(None, ge=8, le=512)
    """``dcgan`` base filters (ngf = ndf), default 64. ``seed-dcgan`` has a fixed 128
    and rejects this key."""
    spectral_norm: bool = False
    """Spectral normalisation on every D layer (``dcgan`` then drops BatchNorm in D)."""

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        if v not in RESOLUTIONS:
            raise ValueError(f"resolution {v} is not supported; allowed: {list(RESOLUTIONS)}")
        return v


class TrainConfig(_Strict):
    """The training loop: budget, optimiser, loss and the small-data recipe."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    r1_gamma: float = Field(0.0, ge=0)
    """R1 penalty weight on real images (0 = off)."""
    diffaug: str = ""
    """DiffAugment policy, comma separated from color, translation, cutout ('' = off)."""
    ema_half_life_images: int = Field(0, ge=0)
    """Half-life of the EMA of G in images (0 = no EMA). StyleGAN2-ADA uses 10k-20k."""
    ema_rampup: float = Field(0.05, ge=0)
    """Half-life is capped at ``images_seen * ema_rampup`` early on (0 = no ramp-up)."""
    ssl_rotation_d: float = Field(0.0, ge=0)
    """Weight of D's rotation-prediction loss on real images (Chen et al. 2019 use 1.0)."""
    ssl_rotation_g: float = Field(0.0, ge=0)
    """Weight of G's rotation loss on fakes (Chen et al. 2019 use 0.2)."""
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    on_divergence: Literal["rollback", "stop"] = "rollback"
    divergence_lr_factor: float = Field(0.5, gt=0, lt=1)
    max_rollbacks: int = Field(3, ge=0)
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    num_threads: int | None = Field(None, ge=1)
    amp: Literal["auto", "off", "bf16"] = "auto"
    """Mixed precision: ``auto`` = bf16 autocast on CUDA, off on CPU."""

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
        if m.arch == "seed-dcgan" and m.width is not None:
            raise ValueError("model.width does not apply to arch 'seed-dcgan' (fixed 128 filters); remove it or use arch 'dcgan'")
        if t.ssl_rotation_g > 0 and t.ssl_rotation_d == 0:
            raise ValueError("train.ssl_rotation_g > 0 needs train.ssl_rotation_d > 0: D's rotation head is only trained by the D loss")
        return self

    @property
    def uses_ema(self) -> bool:
        return self.train.ema_half_life_images > 0

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
