"""A loss-curve PNG from ``metrics.jsonl`` with Pillow only (no plotting stack)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .checkpoint import atomic_write_bytes

COLOURS = {"loss_d": (214, 39, 40), "loss_g": (31, 119, 180)}


def read_losses(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Per-step series from a trainer's metrics.jsonl; the last value of a step wins
    (a rollback replays steps)."""
    series: dict[str, dict[int, float]] = {k: {} for k in COLOURS}
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "event" in rec:
            continue
        for k in COLOURS:
            if k in rec:
                series[k][int(rec["step"])] = float(rec[k])
    return {k: sorted(v.items()) for k, v in series.items()}


def loss_curve_png(metrics_jsonl: str | os.PathLike[str], out: str | os.PathLike[str], size: tuple[int, int] = (480, 240)) -> Path:
    from PIL import Image, ImageDraw

    series = read_losses(metrics_jsonl)
    w, h = size
    pad = 30
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    values = [v for s in series.values() for _, v in s]
    steps = [st for s in series.values() for st, _ in s]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        to_xy = lambda st, v: (pad + (st - s0) / (s1 - s0) * (w - 2 * pad), h - pad - (v - lo) / (hi - lo) * (h - 2 * pad))  # noqa: E731
        for name, pts in series.items():
            if len(pts) > 1:
                draw.line([to_xy(st, v) for st, v in pts], fill=COLOURS[name], width=1)
        draw.text((pad, 4), f"loss_d (red), loss_g (blue); {lo:.2f}..{hi:.2f}; steps {s0}..{s1}", fill=(0, 0, 0))
    draw.rectangle([pad, pad, w - pad, h - pad], outline=(160, 160, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(out, buf.getvalue())
