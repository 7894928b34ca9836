"""A tiny copy of a default scenario for fast end-to-end runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.scenario import SCENARIO_DIR


TINY_DIGITS = 600
"""Images of the tiny digits scenario (``data.limit``)."""

# A bar every model of a seconds-long training meets: these runs test the machinery.
LENIENT_BAR = {
    "max_fid_over_floor": 1e9, "min_precision": 0.0, "min_recall": 0.0, "max_c2st_accuracy": 1.0,
    "min_sharpness_ratio": 1e-9, "max_sharpness_ratio": 1e9, "max_near_copy_share": 1.0, "max_membership_auc": 1.0,
}


def tiny_scenario(directory: Path, name: str = "digits", **overrides) -> Path:
    """Write ``<directory>/<name>.yaml``: the shipped scenario with a seconds-long
    budget and a lenient promotion bar (digits: its first :data:`TINY_DIGITS` images);
    ``overrides`` replace top-level keys."""
    raw = yaml.safe_load((SCENARIO_DIR / f"{name}.yaml").read_text())
    raw["gan"] = {"model": {"arch": "dcgan", "width": 8, "z_dim": 16}, "train": {"steps": 6, "batch_size": 16, "checkpoint_every": 3, "num_threads": 1, "ema_half_life_images": 100}}
    raw["evaluation"] = {"heldout_fraction": 0.2, "seed": 0, "n_audit": 50, "feature_steps": 20, "promote": LENIENT_BAR}
    if raw["data"] == {"source": "builtin", "builtin": "digits"}:
        raw["data"] = {**raw["data"], "limit": TINY_DIGITS}  # the first 600 of 1,797: enough for every check, a third of the work
    raw.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
