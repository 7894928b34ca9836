"""Scenario files: one YAML per application scenario, validated by a typed schema.

A scenario says where its images come from, what they must look like (size,
channels, expectations), how they are augmented, which GAN trains on them with which
budget, and what a model must reach to be promoted. Everything not given takes the
documented default below; unknown keys, wrong types, bad values and paths that leave
the data root are errors naming the file, the key and the fix.

    from pipelines.scenario import load_scenario, load_all, load_each
    sc = load_scenario("scenarios/faces.yaml")
    sc.gan_config()          # gan_core.GANConfig with resolution/channels from `image`
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gan_core.config import ConfigError, GANConfig, load_config

if TYPE_CHECKING:
    from pipelines.paths import ScenarioPaths

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
BUILTIN_SOURCES = ("faces", "nonfaces", "digits", "textures", "histology")
# Transforms that change hue/saturation/colour balance: not allowed on medical stains,
# whose colours carry diagnostic meaning.
COLOUR_TRANSFORMS = frozenset(
    {"ColorJitter", "HueSaturationValue", "RGBShift", "ChannelShuffle", "ToGray", "ToSepia", "FancyPCA", "ChannelDropout", "PlanckianJitter", "RandomToneCurve", "HEStain", "ChromaticAberration"}
)


# gan.train keys that the augmentation block sets (refused in a scenario's gan:/gpu:),
# and gan.model keys that come from image: (refused too).
ROUTED_GAN_KEYS = ("diffaug", "augment", "ada")
FROM_IMAGE_GAN_KEYS = ("resolution", "channels")


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable, or invalid."""


class _Strict(BaseModel):
    # attribute docstrings become field descriptions: docs/SCENARIO_KEYS.md is made of them
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _relative_path(v: str | None) -> str | None:
    if v is None:
        return v
    p = PurePosixPath(v)
    if p.is_absolute() or ".." in p.parts or "\\" in v:
        raise ValueError(f"{v!r} must be a relative path inside the data root, without '..'")
    return v


class DataSpec(_Strict):
    source: Literal["builtin", "folder", "npz"]
    """``builtin`` (images shipped with installed packages), ``folder`` (PNG/JPEG/...
    files) or ``npz`` (MedMNIST layout)."""
    builtin: Literal["faces", "nonfaces", "digits", "textures", "histology"] | None = None
    """For ``source: builtin``: which of the images scikit-image and scikit-learn ship."""
    path: str | None = None
    """For folder/npz: relative to the data root. Default for folder: ``<name>/raw``."""
    npz_key: str = "train_images"
    """For ``source: npz``: the array of uint8 images (N, H, W) or (N, H, W, C)."""
    limit: int | None = Field(None, ge=1)
    """Use at most this many images (the first ones, in a stable order)."""

    _path = field_validator("path")(classmethod(lambda cls, v: _relative_path(v)))

    @model_validator(mode="after")
    def _source_fields(self) -> "DataSpec":
        if self.source == "builtin" and self.builtin is None:
            raise ValueError(f"data.builtin is required when data.source is 'builtin'; allowed: {list(BUILTIN_SOURCES)}")
        if self.source != "builtin" and self.builtin is not None:
            raise ValueError("data.builtin only applies to data.source 'builtin'; remove it or change the source")
        if self.source == "npz" and self.path is None:
            raise ValueError("data.path (the .npz file, relative to the data root) is required when data.source is 'npz'")
        return self


class ImageSpec(_Strict):
    size: Literal[16, 28, 32, 64, 128] = 32
    """Side in pixels of the square images everything after ingestion works on (and the GAN's resolution)."""
    channels: Literal[1, 3] = 3
    """1 (grey) or 3 (RGB); images are converted on ingestion."""
    fit: Literal["center_crop", "pad", "stretch"] = "center_crop"
    """How non-square images become square: crop the centre, pad, or stretch."""


class Expectation(_Strict):
    expectation: str
    """A great-expectations 1.x expectation in snake case, e.g.
    ``expect_column_values_to_be_between``."""
    kwargs: dict[str, Any] = {}
    """The expectation's arguments, e.g. ``{column: std, min_value: 0.05}``; columns are
    those of ``ingested/table.csv``."""
    on_failure: Literal["block", "set_aside", "warn"] | None = None
    """What a failure does (default ``block``): ``block`` stops training for the scenario;
    ``set_aside`` removes the failing images from the validated dataset and lists each of
    them, with the expectation and its value, in ``validated/set_aside.json`` (only for
    expectations that name failing rows, e.g. ``expect_column_values_to_be_between``);
    ``warn`` reports the failure and keeps every image."""
    blocking: bool | None = None
    """The older spelling: ``true`` = ``on_failure: block``, ``false`` = ``on_failure: warn``.
    Give one of ``on_failure`` and ``blocking``, not both."""

    @field_validator("expectation")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"expect_[a-z0-9_]+", v):
            raise ValueError(f"{v!r} is not an expectation name like 'expect_column_values_to_be_between'")
        return v

    @model_validator(mode="after")
    def _one_spelling(self) -> "Expectation":
        if self.on_failure is not None and self.blocking is not None:
            alias = "block" if self.blocking else "warn"
            raise ValueError(
                f"on_failure: {self.on_failure} and blocking: {str(self.blocking).lower()} are both given; keep on_failure "
                f"(blocking: {str(self.blocking).lower()} means on_failure: {alias}) and remove blocking"
            )
        return self

    @property
    def action(self) -> str:
        """``block``, ``set_aside`` or ``warn``: ``on_failure``, else what ``blocking`` says."""
        if self.on_failure is not None:
            return self.on_failure
        return "warn" if self.blocking is False else "block"


class ValidationSpec(_Strict):
    min_images: int = Field(16, ge=2)
    """Blocking: fewer usable images than this stops the scenario."""
    max_quarantined_share: float = Field(0.2, ge=0, le=1)
    """Blocking: more than this share of quarantined files means the source is broken."""
    expectations: list[Expectation] = []
    """great-expectations checks over the per-image table (README, "Add a scenario")."""


class Transform(_Strict):
    name: str
    """An albumentations transform class, e.g. ``HorizontalFlip``."""
    params: dict[str, Any] = {}
    """The transform's arguments, e.g. ``{p: 0.5}``."""


class AugmentationSpec(_Strict):
    transforms: list[Transform] = []
    """albumentations transforms, each routed by the augment step: a symmetry the data
    has (see ``invariances``) is applied to the real images per batch; one that changes
    the images (Affine, RandomResizedCrop, RandomBrightnessContrast, CoarseDropout) is
    applied to real and generated images alike on D's input, as its differentiable
    counterpart; anything else is refused (G would learn it)."""
    invariances: list[Literal["horizontal_flip", "vertical_flip", "rotate90", "transpose"]] = []
    """Symmetries of the data: a flipped or turned image is still an image of this
    scenario (a face flipped left-right is a face; upside down it is not)."""
    ada: bool = False
    """Adapt the probability of the transforms on D's input to D's overfitting (ADA,
    target ``gan.train.ada_target``)."""
    offline_copies: int = Field(0, ge=0, le=20)
    """Augmented copies of every image written beside the originals, read by training
    instead of augmenting per batch (0 = per batch)."""

    def rotations(self) -> list[int]:
        """Turns (degrees) that the declared invariances make part of the data: a
        rotate90 invariance, or flips in two directions (which compose to 180)."""
        inv = set(self.invariances)
        if "rotate90" in inv or ("transpose" in inv and inv & {"horizontal_flip", "vertical_flip"}):
            return [90, 180, 270]
        return [180] if {"horizontal_flip", "vertical_flip"} <= inv else []
    preview: int = Field(8, ge=1, le=64)
    """Images in ``augmented/preview.png`` (what D sees, each beside its original)."""
    seed: int = 0
    """Seed of the augmentation pipeline (per batch it is combined with the step)."""


MEDICAL_MAX_MEMBERSHIP_AUC = 0.6
"""The promotion bar on the membership-inference AUC for domain ``medical``."""


class PromoteSpec(_Strict):
    """The promotion bar (``gan_core.verdict.Bar``): a key left out takes the default
    measured on good and bad reference models (docs/BENCHMARKS.md, "Ruler and verdict").
    Every threshold is widened, never tightened, by what held-out real images score."""

    max_fid_over_floor: float | None = Field(None, gt=0)
    """Fidelity: FID over its floor (default 4)."""
    min_precision: float | None = Field(None, ge=0, le=1)
    """Fidelity: share of samples inside the real images' manifold (default 0.5)."""
    min_recall: float | None = Field(None, ge=0, le=1)
    """Diversity: share of real images covered by the samples (default 0.3)."""
    floor_fraction: float | None = Field(None, ge=0, le=1)
    """Precision/recall bars drop to this share of the held-out reals' own (default 0.6)."""
    max_c2st_accuracy: float | None = Field(None, ge=0.5, le=1)
    """Realism: the classifier two-sample test's accuracy, lower end of its 95 % interval (default 0.7)."""
    min_sharpness_ratio: float | None = Field(None, gt=0, le=1)
    """Realism: fine detail of the samples over the reals' (default 0.75; blur is below)."""
    max_sharpness_ratio: float | None = Field(None, ge=1)
    """Realism: the same, upper end (default 2.0; grain and noise are above)."""
    max_near_copy_share: float | None = Field(None, ge=0, le=1)
    """Memorization: share of samples that are near-copies of a training image (default 0.05)."""
    max_membership_auc: float | None = Field(None, ge=0.5, le=1)
    """Privacy: ROC AUC of the membership-inference attack (training vs held-out images;
    0.5 = no leakage). Default 0.6 for domain ``medical``; other domains report it without
    a bar unless this is set."""

    def bar_values(self, domain: str = "other") -> dict[str, float]:
        """The keys of ``gan_core.verdict.Bar`` this scenario sets (``Bar(**values)``;
        domain ``medical`` gates the membership-inference AUC at 0.6 unless set here)."""
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        if domain == "medical":
            values.setdefault("max_membership_auc", MEDICAL_MAX_MEMBERSHIP_AUC)
        return values


class EvaluationSpec(_Strict):
    heldout_fraction: float = Field(0.2, gt=0, lt=0.9)
    """Share of the validated images kept out of training, to measure the model against."""
    n_audit: int = Field(500, ge=10)
    """Generated samples scored by the metrics and the memorization audit."""
    feature_steps: int = Field(300, ge=10)
    """Training steps of the ruler's feature network (on the scenario's own images)."""
    seed: int = 0
    """Seed of the held-out split, the ruler and the samples."""
    promote: PromoteSpec = PromoteSpec()
    """The promotion bar; every key optional."""


class Scenario(_Strict):
    name: str
    """The file's name without ``.yaml``: lowercase letters, digits, ``_`` and ``-``."""
    description: str = ""
    """Free text, shown in the model card."""
    domain: Literal["medical", "game", "art", "faces", "handwriting", "other"] = "other"
    """``medical`` refuses colour-changing transforms (colour carries diagnostic meaning)."""
    data: DataSpec
    """Where the images come from."""
    image: ImageSpec = ImageSpec()
    """The images' shape after ingestion."""
    validation: ValidationSpec = ValidationSpec()
    """The quality gate before training."""
    augmentation: AugmentationSpec = AugmentationSpec()
    """What training sees besides the images themselves."""
    gan: dict[str, Any] = {}
    """gan_core config (``model:`` and ``train:``): the CPU demo budget. ``model.resolution``
    and ``model.channels`` come from ``image`` and may not be repeated here."""
    gpu: dict[str, Any] = {}
    """The GPU budget: overrides laid over ``gan:`` when ``scenarios/_project.yaml`` sets
    ``profile: gpu``, e.g. ``{train: {steps: 20000, batch_size: 128}}``."""
    evaluation: EvaluationSpec = EvaluationSpec()

    @field_validator("gan", "gpu")
    @classmethod
    def _sections(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Each section (model:, train:) must itself be a mapping; anything else would
        # fail later with a TypeError that names neither the file nor the key.
        for section, values in v.items():
            if not isinstance(values, dict):
                raise ValueError(f"{info.field_name}.{section} must be a mapping (key: value), got {type(values).__name__} {values!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r}: use lowercase letters, digits, '-' or '_', starting with a letter (max 40)")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "Scenario":
        model = self.gan.get("model", {}) if isinstance(self.gan, dict) else {}
        for key in FROM_IMAGE_GAN_KEYS:
            if key in model:
                raise ValueError(f"gan.model.{key} comes from image.{'size' if key == 'resolution' else 'channels'}; remove it from gan.model")
        for block, values in (("gan", self.gan), ("gpu", self.gpu)):
            for key in ROUTED_GAN_KEYS:
                if key in (values.get("train") or {}):
                    raise ValueError(
                        f"{block}.train.{key}: what D sees is set in the augmentation block (transforms, ada), so that the "
                        "augment stage and the model card say exactly what training saw; move it there"
                    )
        if self.domain == "medical":
            bad = [t.name for t in self.augmentation.transforms if t.name in COLOUR_TRANSFORMS]
            if bad:
                raise ValueError(f"augmentation.transforms {bad} change colours, which carry diagnostic meaning in medical images; remove them for domain 'medical'")
        turns = self.augmentation.rotations()
        for gpu in (False, True):
            cfg = self.gan_config(gpu=gpu)
            if turns and cfg.train.ssl_rotation_d > 0:
                raise ValueError(
                    f"{'gpu' if gpu else 'gan'}.train.ssl_rotation_d: D's rotation-prediction loss needs images whose rotation can be "
                    f"told, but augmentation.invariances {list(self.augmentation.invariances)} put images turned by {turns} degrees "
                    "into the data; set gan.train.ssl_rotation_d and ssl_rotation_g to 0, or declare fewer invariances"
                )
        return self

    def _gan_dict(self, gpu: bool) -> dict[str, Any]:
        raw = {k: dict(v) for k, v in self.gan.items()} if self.gan else {}
        raw.setdefault("model", {}).update(resolution=self.image.size, channels=self.image.channels)
        if gpu:
            for section, values in self.gpu.items():
                raw.setdefault(section, {}).update(values)
        return raw

    def gan_config(self, *, gpu: bool = False, augment: list[dict[str, Any]] | None = None) -> GANConfig:
        """The gan_core config of this scenario (CPU demo budget, or GPU budget), with
        ``augment`` (the ops on D's input that the augment step routed there) and
        ``augmentation.ada`` in ``train``."""
        raw = self._gan_dict(gpu)
        if augment:
            raw.setdefault("train", {}).update(augment=augment, ada=self.augmentation.ada)
        return load_config(raw, source=f"scenario {self.name!r}, key gan{' + gpu' if gpu else ''}")

    def data_path(self, data_root: Path) -> Path:
        """Where a folder/npz source lives, checked to stay inside ``data_root``."""
        rel = self.data.path or f"{self.name}/raw"
        root = data_root.resolve()
        p = (root / rel).resolve()
        if root not in p.parents and p != root:
            raise ScenarioError(f"scenario {self.name}: data.path {rel!r} resolves to {p}, outside the data root {root}")
        return p


def _allowed_keys(loc: tuple[Any, ...], model: type[BaseModel] | None = None) -> list[str] | None:
    """The keys the schema (default: a scenario's) allows beside the last element of
    ``loc``, if it knows them."""
    model = model or Scenario
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list: same model as the list's items
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        nested = [a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return list(model.model_fields)


def _format(err: ValidationError, source: Path, what: str = "scenario", model: type[BaseModel] | None = None) -> str:
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(tuple(e["loc"]), model)
            msg = "unknown key; check the spelling" + (f" (allowed here: {', '.join(allowed)})" if allowed else "") + "; every key is documented in pipelines/scenario.py"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_scenario(raw: Any, source: Path | str = "<dict>") -> Scenario:
    source = Path(source)
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario file must be a YAML mapping (key: value), got {type(raw).__name__}")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as e:
        raise ScenarioError(_format(e, source)) from None
    except ConfigError as e:
        raise ScenarioError(f"{source}: {e}") from None


DEFAULTS_FILE_NAME = "_defaults.yaml"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML (only plain YAML is accepted; tags such as !!python/object are refused): {e}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not UTF-8 text ({e})") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings are merged key by key, anything else (values,
    lists) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_defaults(directory: str | Path = SCENARIO_DIR) -> dict[str, Any]:
    """``<directory>/_defaults.yaml``: the values every scenario file of the folder starts
    from ({} when there is none). It may not name a scenario or its data."""
    path = Path(directory) / DEFAULTS_FILE_NAME
    if not path.is_file():
        return {}
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: defaults must be a YAML mapping (key: value), got {type(raw).__name__}")
    bad = [k for k in ("name", "data") if k in raw]
    if bad:
        raise ScenarioError(f"{path}: {bad} belong in each scenario file, not in the defaults; remove them")
    unknown = sorted(set(raw) - set(Scenario.model_fields))
    if unknown:
        raise ScenarioError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(set(Scenario.model_fields) - {'name', 'data'})}")
    return raw


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file, laid over ``_defaults.yaml`` of its folder
    (the file says only what differs). YAML is read with ``safe_load``: tags that would
    construct Python objects are refused."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: scenario file not found; scenarios live in {SCENARIO_DIR}/<name>.yaml")
    raw = _read_yaml(path)
    if isinstance(raw, dict):
        raw = merge(load_defaults(path.parent), raw)
    sc = parse_scenario(raw, path)
    if sc.name != path.stem:
        raise ScenarioError(f"{path}: name {sc.name!r} must match the file name {path.stem!r}; rename one of them")
    return sc


def scenario_files(directory: str | Path = SCENARIO_DIR) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.yaml") if not p.name.startswith("_"))


def load_all(directory: str | Path = SCENARIO_DIR) -> dict[str, Scenario]:
    """Every scenario in ``directory``, by name; raises on the first file that does not
    load (for the project's own checks; the pipeline uses :func:`load_each`)."""
    return {sc.name: sc for sc in (load_scenario(p) for p in scenario_files(directory))}


def scenario_names(directory: str | Path = SCENARIO_DIR) -> list[str]:
    """The scenarios of ``directory`` by file name, without reading the files: one file
    that cannot be used must not hide or stop the others. A file whose name is not a
    valid scenario name is left out (:func:`load_each` reports it)."""
    return [p.stem for p in scenario_files(directory) if NAME_RE.match(p.stem)]


def load_each(directory: str | Path = SCENARIO_DIR) -> tuple[dict[str, Scenario], dict[str, str]]:
    """Every scenario of ``directory`` that loads, by name, and for every file that does
    not, its error (which names the file and the key): scenarios are isolated, so the
    caller goes on with the good ones and reports the others."""
    good: dict[str, Scenario] = {}
    broken: dict[str, str] = {}
    for p in scenario_files(directory):
        if not NAME_RE.match(p.stem):
            broken[p.stem] = f"{p}: {p.stem!r} is not a scenario name (lowercase letters, digits, '_' and '-', starting with a letter, at most 40); rename the file"
            continue
        try:
            good[p.stem] = load_scenario(p)
        except ScenarioError as e:
            broken[p.stem] = str(e)
    return good, broken


# --------------------------------------------------------------------------- #
# Project-wide settings: scenarios/_project.yaml
# --------------------------------------------------------------------------- #
PROJECT_FILE_NAME = "_project.yaml"
DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00: weekly retraining


class ProjectSettings(_Strict):
    """``scenarios/_project.yaml``: settings of every scenario (a file starting with '_'
    is not a scenario)."""

    retrain_cron: str = DEFAULT_CRON
    """When the ``weekly_retrain`` schedule runs (5-field cron)."""
    profile: Literal["cpu", "gpu"] = "cpu"
    """Training budget of every scenario: ``cpu`` = its ``gan:`` block, ``gpu`` = ``gan:``
    with its ``gpu:`` block on top. A parameter of every train stage (in ``dvc.lock``),
    written in each model card; the hardware never chooses it (``gpu`` on a machine
    without CUDA trains the GPU budget on the CPU)."""

    @field_validator("retrain_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"retrain_cron must be a 5-field cron string such as {DEFAULT_CRON!r}, got {v!r}")
        return v


def load_project(directory: str | Path = SCENARIO_DIR) -> ProjectSettings:
    """``<directory>/_project.yaml`` (every key optional; a missing file means the defaults)."""
    path = Path(directory) / PROJECT_FILE_NAME
    if not path.is_file():
        return ProjectSettings()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: project settings must be a YAML mapping (key: value), got {type(raw).__name__}")
    try:
        return ProjectSettings.model_validate(raw)
    except ValidationError as e:
        raise ScenarioError(_format(e, path, "project settings", ProjectSettings)) from None


def resolved_params(scenario: Scenario) -> dict[str, Any]:
    """Every parameter of ``scenario`` with the defaults filled in (``_defaults.yaml``, then
    the schema's): what ``data/<scenario>/params.yaml`` holds."""
    return scenario.model_dump(mode="json")


@dataclass
class ParamsResult:
    path: Path
    changed: bool


def write_params(scenario: Scenario, paths: "ScenarioPaths") -> ParamsResult:
    """Write ``data/<scenario>/params.yaml`` (atomically; untouched when it already says the
    same): the parameters file whose keys every DVC stage of the scenario depends on."""
    from pipelines.io import atomic_write

    text = ("# scenarios/_defaults.yaml under scenarios/" + scenario.name + ".yaml, every default filled in (params@"
            + scenario.name + "); do not edit, edit those.\n" + yaml.safe_dump(resolved_params(scenario), sort_keys=False, width=1000)).encode("utf-8")
    target = paths.params
    if target.is_file() and target.read_bytes() == text:
        return ParamsResult(target, False)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text)
    return ParamsResult(target, True)
