"""docs/SCENARIO_KEYS.md is the schema's own account of every key, and it is current."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipelines.reference import reference
from pipelines.scenario import SCENARIO_DIR, scenario_files

DOC = Path(__file__).resolve().parents[1] / "docs" / "SCENARIO_KEYS.md"


def test_the_reference_in_docs_is_what_the_schema_says():
    assert DOC.read_text() == reference(), "regenerate it: python -m pipelines.reference > docs/SCENARIO_KEYS.md"


def _keys(value, prefix=""):
    """Dotted key paths of a scenario file (``[]`` for the items of a list of mappings);
    free-form argument mappings (``kwargs``, ``params``) are the libraries' business."""
    if isinstance(value, dict):
        for k, v in value.items():
            key = f"{prefix}{k}"
            yield key
            if k not in ("kwargs", "params"):
                yield from _keys(v, key + ".")
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item, prefix[:-1] + "[].")


def test_every_key_of_the_shipped_scenarios_is_in_the_reference():
    listed = set(re.findall(r"^\| `([^`]+)` \|", reference(), flags=re.M))
    used = set()
    for path in scenario_files(SCENARIO_DIR):
        raw = yaml.safe_load(path.read_text())
        used |= {k.replace("gpu.", "gan.", 1) if k.startswith("gpu.") else k for k in _keys(raw)}
    assert used and used <= listed, sorted(used - listed)
