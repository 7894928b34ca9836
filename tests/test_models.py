import pytest
import torch
from torch import nn

from gan_core.config import load_config
from gan_core.models import build_models


@pytest.mark.parametrize("arch", ["seed-dcgan", "dcgan"])
@pytest.mark.parametrize("resolution", [16, 28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(arch, resolution, channels):
    model = {"arch": arch, "resolution": resolution, "channels": channels}
    if arch == "dcgan":
        model["width"] = 8
    cfg = load_config({"model": model, "train": {"ssl_rotation_d": 1.0}})
    g, d = build_models(cfg)
    x = g(torch.randn(3, cfg.model.z_dim))
    assert x.shape == (3, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (3,)
    assert d.rot(d.features(x)).shape == (3, 4)


@pytest.mark.parametrize("resolution", [16, 28, 32, 64])
def test_resize_upsampling_has_no_transposed_convolution(resolution):
    cfg = load_config({"model": {"arch": "dcgan", "resolution": resolution, "channels": 3, "width": 8, "upsample": "resize"}})
    g, _ = build_models(cfg)
    assert g(torch.randn(2, cfg.model.z_dim)).shape == (2, 3, resolution, resolution)
    transposed = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 1 and transposed[0].stride == (1, 1)  # only the stem (z -> 4x4 or 7x7)
    doublings = {16: 2, 28: 2, 32: 3, 64: 4}[resolution]  # 4 -> 16, 7 -> 28, 4 -> 32, 4 -> 64
    assert sum(isinstance(m, nn.Upsample) for m in g.modules()) == doublings


def test_seed_dcgan_is_the_founding_architecture():
    cfg = load_config({"model": {"arch": "seed-dcgan", "resolution": 28, "channels": 1}})
    g, d = build_models(cfg)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (128, 128, (5, 5), (2, 2)),
        (128, 128, (5, 5), (2, 2)),
        (128, 1, (5, 5), (2, 2)),
    ]
    assert isinstance(g.stem[0], nn.Linear) and g.stem[0].out_features == 128 * 4 * 4  # 4 -> 7 -> 14 -> 28
    dconvs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in dconvs] == [(1, 128, (3, 3), (2, 2)), (128, 128, (3, 3), (2, 2))]
    assert [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)] == [0.01, 0.01]
    assert d.adv.out_features == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in list(g.modules()) + list(d.modules()))


def test_spectral_norm_wraps_every_d_layer_and_drops_batchnorm():
    cfg = load_config({"model": {"arch": "dcgan", "resolution": 32, "channels": 3, "width": 8, "spectral_norm": True}})
    _, d = build_models(cfg)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())


def test_build_is_seeded_and_leaves_global_rng_alone():
    cfg = load_config({"model": {"width": 8, "resolution": 16}})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    g1, _ = build_models(cfg, seed=5)
    assert torch.equal(before, torch.get_rng_state())
    g2, _ = build_models(cfg, seed=5)
    g3, _ = build_models(cfg, seed=6)
    p1, p2, p3 = (next(g.parameters()) for g in (g1, g2, g3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
