"""Writing a benchmark's result: one JSON file, written atomically (a benchmark killed
half-way never leaves a truncated result that ``run_all`` or the docs would read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gan_core.checkpoint import atomic_write_bytes


def write_result(path: str | Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as indented JSON to ``path`` (parents created); no-op for None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())
