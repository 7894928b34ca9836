import io

import numpy as np
import torch
from PIL import Image

from gan_core.config import load_config
from gan_core.models import build_models
from gan_core.sampling import interpolation_grid, make_grid, sample, save_grid


def _g(channels=3):
    g, _ = build_models(load_config({"model": {"resolution": 16, "channels": channels, "width": 8, "z_dim": 8}}))
    return g


def test_sample_is_uint8_deterministic_and_seeded():
    g = _g()
    a, b, c = sample(g, 5, seed=1), sample(g, 5, seed=1), sample(g, 5, seed=2)
    assert a.dtype == torch.uint8 and a.shape == (5, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert g.training  # sampling restores the mode it found


def test_grid_png_round_trip(tmp_path):
    imgs = sample(_g(1), 6, seed=0)
    grid = make_grid(imgs, nrow=3, padding=2)
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 1)
    path = save_grid(imgs, tmp_path / "grid.png", nrow=3, scale=2)
    png = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
    assert png.shape == (2 * grid.shape[0], 2 * grid.shape[1])
    assert np.array_equal(png[4:36:2, 4:36:2], imgs[0, 0].numpy())


def test_interpolation_rows_start_and_end_at_their_latents():
    g = _g()
    grid = interpolation_grid(g, rows=2, steps=5, seed=3)
    assert grid.shape == (10, 3, 16, 16)
    row0 = grid[:5].float()
    # neighbours along a row differ less than the two ends do
    step_diff = (row0[1:] - row0[:-1]).abs().mean()
    end_diff = (row0[-1] - row0[0]).abs().mean()
    assert step_diff < end_diff
