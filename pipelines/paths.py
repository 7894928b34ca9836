"""Where each step of a scenario reads and writes. One layout for every entry point
(Dagster asset, DVC stage, command line), so both always see the same files:

    <data_root>/<scenario>/raw/                 images dropped by users (folder source)
    <data_root>/<scenario>/params.yaml          the scenario's resolved parameters (_defaults.yaml under its file)
    <data_root>/<scenario>/ingested/            images/ (shards, gan_core.shards), table.csv, quarantine.json, manifest.json
    <data_root>/<scenario>/validated/           images/, table.csv (the kept images and their rows), set_aside.json, summary.json, report.json
    <data_root>/<scenario>/augmented/           images/ (offline copies only), pipeline.json, policy.json, preview.png, manifest.json
    <model_root>/<scenario>/                    generator.safetensors, split.json, loss.csv, MODEL_CARD.md, ... (checkpoints/ only while a run is unfinished)
    <model_root>/<scenario>/ruler/              feature_net.safetensors, ruler.json (the scenario's measuring stick)
    <model_root>/<scenario>/eval/               samples.png, interpolation.png, metrics.json
    <metrics_root>/<scenario>.json              the scenario's headline metrics
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Roots:
    data: Path
    models: Path
    metrics: Path

    @classmethod
    def under(cls, base: str | os.PathLike[str]) -> "Roots":
        base = Path(base)
        return cls(base / "data", base / "models", base / "metrics")


@dataclass(frozen=True)
class ScenarioPaths:
    name: str
    roots: Roots

    @property
    def raw(self) -> Path:
        return self.roots.data / self.name / "raw"

    @property
    def params(self) -> Path:
        """The scenario's resolved parameters (the params file of its DVC stages)."""
        return self.roots.data / self.name / "params.yaml"

    @property
    def ingested(self) -> Path:
        return self.roots.data / self.name / "ingested"

    @property
    def validated(self) -> Path:
        return self.roots.data / self.name / "validated"

    @property
    def augmented(self) -> Path:
        return self.roots.data / self.name / "augmented"

    @property
    def model(self) -> Path:
        return self.roots.models / self.name

    @property
    def ruler(self) -> Path:
        return self.roots.models / self.name / "ruler"

    @property
    def evaluation(self) -> Path:
        return self.roots.models / self.name / "eval"

    @property
    def metrics(self) -> Path:
        return self.roots.metrics / f"{self.name}.json"
