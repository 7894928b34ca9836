"""Real beside generated, one PNG per scenario, for the documentation.

Reads what the main job wrote (``data/<scenario>/validated/images/`` and
``models/<scenario>/generator.safetensors``) and draws, side by side, 32 held-out real
images (never trained on; fewer where the scenario holds out fewer) and the first 32 samples of the generator's sample grid
(the same latents as ``models/<scenario>/eval/samples.png``), with the scenario's
headline numbers underneath.

    python -m benchmarks.grids --out docs/grids                 # every scenario with a model
    python -m benchmarks.grids --scenarios faces --out /tmp/g
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_vs_generated(name: str, base: Path, n: int = 32, nrow: int = 8) -> bytes:
    """PNG bytes: held-out real images (left), samples (right), numbers below."""
    import io

    import torch
    from PIL import Image, ImageDraw

    from gan_core.checkpoint import load_generator
    from gan_core.sampling import generate, latents, make_grid, to_uint8
    from pipelines.io import load_images
    from pipelines.scenario import SCENARIO_DIR, load_scenario

    ev = load_scenario(SCENARIO_DIR / f"{name}.yaml").evaluation
    images = load_images(base / f"data/{name}/validated/images")
    held = json.loads((base / f"models/{name}/split.json").read_text())["heldout_originals"]
    real = torch.as_tensor(images[held[:n]]).permute(0, 3, 1, 2)
    g, _, _ = load_generator(base / f"models/{name}/generator.safetensors")
    # the latents of the evaluation step, so these are the first samples of its samples.png
    fake = to_uint8(generate(g, latents(max(len(held), ev.n_audit), g.z_dim, seed=ev.seed + 1)))[:n]
    scale = max(1, 96 // images.shape[1])
    panels = []
    for t in (real, fake):
        arr = make_grid(t.contiguous(), nrow=nrow, padding=2)  # (H, W, C) uint8
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        panels.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    m = json.loads((base / f"metrics/{name}.json").read_text())
    caption = (
        f"{name}: held-out real (left) | generated (right). FID/floor {m['fid_over_floor']:.2f}, precision {m['precision']:.2f}, "
        f"recall {m['recall']:.2f}, classifier {m['c2st_accuracy']:.2f}, sharpness {m['sharpness_ratio']:.2f}, "
        f"{'promoted' if m['promote'] else 'not promoted: ' + ', '.join(m['failed_criteria'])}"
    )
    gap, text_h = 16, 24
    # a small scenario holds out fewer than n images: the panels then differ in height
    top = max(p.height for p in panels)
    out = Image.new("RGB", (panels[0].width + gap + panels[1].width, top + text_h), "white")
    out.paste(panels[0], (0, 0))
    out.paste(panels[1], (panels[0].width + gap, 0))
    ImageDraw.Draw(out).text((4, top + 6), caption, fill=(0, 0, 0))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grids", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", help="default: every scenario with a trained model")
    p.add_argument("--base-dir", type=Path, default=REPO, help="holds data/, models/, metrics/ (default: the project)")
    p.add_argument("--out", type=Path, required=True, help="directory for <scenario>.png")
    a = p.parse_args(argv)
    names = a.scenarios or sorted(d.name for d in (a.base_dir / "models").iterdir() if (d / "generator.safetensors").is_file())
    a.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = a.out / f"{name}.png"
        path.write_bytes(real_vs_generated(name, a.base_dir))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
