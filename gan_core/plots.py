"""A loss-curve PNG from ``metrics.jsonl`` with Pillow only (no plotting stack): the
losses on their own scale and, when ADA ran, its augmentation strength ``ada_p`` on a
fixed 0..1 scale."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .atomic import atomic_write_bytes

COLOURS = {"loss_d": (214, 39, 40), "loss_g": (31, 119, 180), "ada_p": (44, 160, 44)}
LOSSES = ("loss_d", "loss_g")


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
    values = [v for k in LOSSES for _, v in series[k]]
    steps = [st for s in series.values() for st, _ in s]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1
        s0, s1 = min(steps), max(max(steps), min(steps) + 1)
        to_xy = lambda st, v: (pad + (st - s0) / (s1 - s0) * (w - 2 * pad), h - pad - (v - lo) / (hi - lo) * (h - 2 * pad))  # noqa: E731
        for name in LOSSES:
            if len(series[name]) > 1:
                draw.line([to_xy(st, v) for st, v in series[name]], fill=COLOURS[name], width=1)
        title = f"loss_d (red), loss_g (blue): {lo:.2f}..{hi:.2f}; steps {s0}..{s1}"
        if len(series["ada_p"]) > 1:
            to_p = lambda st, v: (to_xy(st, lo)[0], h - pad - v * (h - 2 * pad))  # noqa: E731 - fixed 0..1 scale
            draw.line([to_p(st, v) for st, v in series["ada_p"]], fill=COLOURS["ada_p"], width=1)
            title += f"; ada_p (green) 0..1, last {series['ada_p'][-1][1]:.2f}"
        draw.text((pad, 4), title, fill=(0, 0, 0))
    draw.rectangle([pad, pad, w - pad, h - pad], outline=(160, 160, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(out, buf.getvalue())
