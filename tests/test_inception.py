"""Tests for gan_core.inception (FID Inception-v3 port). CPU-only, no downloads.

Real weights are not available offline, so these tests use randomly initialised
state dicts with the same key names / shapes as the standard weights file.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gan_core.inception import (
    FEATURE_DIM,
    FID_WEIGHTS_FILENAME,
    InceptionV3Features,
    load_inception,
    resize_bilinear_tf1,
)

# Learnable parameters of the FID Inception-v3 with the 1008-class fc:
# torchvision inception_v3 (27,161,264 with AuxLogits and a 1000-class fc)
# - AuxLogits (3,326,696) + 16,392 for the 1008- instead of 1000-class fc.
EXPECTED_PARAMS = 23_850_960
# BatchNorm running_mean + running_var of the 94 BN layers (17,216 channels).
EXPECTED_BN_RUNNING_STATS = 34_432
# Often quoted figure: floats in the weights file = params + BN running stats.
EXPECTED_STATE_DICT_FLOATS = 23_885_392


def _randomise_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> InceptionV3Features:
    torch.manual_seed(0)
    m = InceptionV3Features()
    _randomise_bn_stats(m)
    return m


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 24, 24, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def ref_features(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(images)


# --------------------------------------------------------------------------- #
# Architecture
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("size", [16, 28, 64])
def test_feature_shape_1_and_3_channels(model, size):
    x1 = torch.rand(1, 1, size, size) * 2 - 1
    x3 = torch.rand(1, 3, size, size) * 2 - 1
    if size == 16:  # one batch of 2 (random RGB + grey version of x1); keeps it fast
        x3 = torch.cat([x3, x1.repeat(1, 3, 1, 1)])
    n = x3.shape[0]
    model.train()  # must stay in eval: BatchNorm statistics are not updated
    stats_before = model.Mixed_7c.branch_pool.bn.running_mean.clone()
    with torch.no_grad():
        f3 = model(x3)
        f1 = model(x1)
    assert torch.equal(stats_before, model.Mixed_7c.branch_pool.bn.running_mean)
    assert model.num_features == FEATURE_DIM == 2048
    assert f3.shape == (n, FEATURE_DIM) and f3.dtype == torch.float32
    assert f1.shape == (1, FEATURE_DIM) and f1.dtype == torch.float32
    assert torch.isfinite(f3).all() and torch.isfinite(f1).all()
    if n == 2:
        assert not torch.equal(f3[0], f3[1])
        # a 1-channel image gives the features of its grey RGB version
        torch.testing.assert_close(f1[0], f3[1], rtol=1e-4, atol=1e-5)


def test_rejects_bad_input(model):
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_parameter_count(model):
    n_params = sum(p.numel() for p in model.parameters())
    n_bn_stats = sum(
        b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))
    )
    assert n_params == EXPECTED_PARAMS
    assert n_bn_stats == EXPECTED_BN_RUNNING_STATS
    assert n_params + n_bn_stats == EXPECTED_STATE_DICT_FLOATS
    assert model.fc.weight.shape == (1008, 2048)


def test_state_dict_key_names(model):
    keys = set(model.state_dict())
    for key in [
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_1a_3x3.bn.running_mean",
        "Conv2d_4a_3x3.bn.running_var",
        "Mixed_5b.branch1x1.conv.weight",
        "Mixed_5b.branch5x5_2.conv.weight",
        "Mixed_5b.branch_pool.bn.bias",
        "Mixed_6a.branch3x3.conv.weight",
        "Mixed_6e.branch7x7dbl_5.conv.weight",
        "Mixed_7a.branch7x7x3_4.conv.weight",
        "Mixed_7c.branch3x3dbl_3b.bn.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in keys, key
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert model.Mixed_7a.branch7x7x3_4.conv.weight.shape == (192, 192, 3, 3)
    assert model.Mixed_5b.branch_pool.conv.weight.shape == (32, 192, 1, 1)


def test_eval_mode_sticks(model):
    assert not model.training
    assert model.train() is model
    assert not model.training
    assert not any(m.training for m in model.modules())
    model.train(True)
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def _tf1_resize_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Straight transcription of TF1 ResizeBilinear (align_corners=False)."""
    in_h, in_w = img.shape
    sy, sx = np.float32(in_h / out_h), np.float32(in_w / out_w)
    out = np.zeros((out_h, out_w), dtype=np.float64)
    for y in range(out_h):
        fy = np.float32(y) * sy
        y0 = int(np.floor(fy))
        y1 = min(y0 + 1, in_h - 1)
        dy = float(fy - y0)
        for x in range(out_w):
            fx = np.float32(x) * sx
            x0 = int(np.floor(fx))
            x1 = min(x0 + 1, in_w - 1)
            dx = float(fx - x0)
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * dx
            bot = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * dx
            out[y, x] = top + (bot - top) * dy
    return out


@pytest.mark.parametrize("in_hw,out_hw", [((4, 5), (7, 9)), ((9, 6), (4, 13)), ((16, 16), (37, 37))])
def test_tf1_resize_matches_reference(in_hw, out_hw):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, *in_hw, generator=g, dtype=torch.float64)
    got = resize_bilinear_tf1(x, out_hw)[0, 0].numpy()
    np.testing.assert_allclose(got, _tf1_resize_reference(x[0, 0].numpy(), *out_hw), atol=1e-12)


def test_resize_modes(model, images):
    m_pt = InceptionV3Features(resize_mode="torch")
    m_pt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert m_pt(images).shape == (1, FEATURE_DIM)
    # the two modes sample different grids (TF1 has no half-pixel centres) ...
    assert not torch.allclose(model._prepare(images), m_pt._prepare(images))
    # ... and neither resizes an input that is already 299x299
    x299 = torch.rand(1, 3, 299, 299) * 2 - 1
    assert torch.equal(model._prepare(x299), x299)
    assert torch.equal(m_pt._prepare(x299), x299)
    assert model._prepare(images).shape == (1, 3, 299, 299)
    with pytest.raises(ValueError, match="resize_mode"):
        InceptionV3Features(resize_mode="nearest")


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def test_torch_save_round_trip(model, images, ref_features, tmp_path):
    path = tmp_path / FID_WEIGHTS_FILENAME
    torch.save(model.state_dict(), path)
    loaded = load_inception(path)
    assert isinstance(loaded, InceptionV3Features)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), ref_features)


def test_safetensors_round_trip(model, images, ref_features, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_inception(path)
    with torch.no_grad():
        assert torch.equal(loaded(images), ref_features)


def test_missing_num_batches_tracked_is_tolerated(model, images, ref_features, tmp_path):
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_nbt.pth"
    torch.save(sd, path)
    with torch.no_grad():
        assert torch.equal(load_inception(path)(images), ref_features)


def test_missing_file_raises(tmp_path):
    path = tmp_path / "nowhere" / FID_WEIGHTS_FILENAME
    with pytest.raises(FileNotFoundError) as info:
        load_inception(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "Nothing is downloaded" in msg
    assert FID_WEIGHTS_FILENAME in msg
    assert "load_inception" in msg


def test_key_mismatch_lists_keys(model, tmp_path):
    sd = dict(model.state_dict())
    del sd["Mixed_5b.branch1x1.conv.weight"]
    sd["AuxLogits.fc.weight"] = torch.zeros(3)
    path = tmp_path / "bad_keys.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as info:
        load_inception(path)
    msg = str(info.value)
    assert "Mixed_5b.branch1x1.conv.weight" in msg and "AuxLogits.fc.weight" in msg
    assert str(path) in msg


def test_shape_mismatch_is_reported(model, tmp_path):
    sd = dict(model.state_dict())
    sd["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "bad_shape.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="fc.weight"):
        load_inception(path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="extension"):
        load_inception(path)


def _record_payload_ran(marker_path: str) -> None:  # must never be called
    with open(marker_path, "w") as fh:
        fh.write("payload ran")


class _Payload:
    """Unpickling this would call _record_payload_ran (harmless marker file)."""

    def __init__(self, marker_path: str):
        self.marker_path = marker_path

    def __reduce__(self):
        return (_record_payload_ran, (self.marker_path,))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw_pickle"])
def test_pickle_payload_is_refused(model, tmp_path, fmt):
    marker = tmp_path / "payload_ran.txt"
    path = tmp_path / "evil.pth"
    obj = {"fc.bias": model.fc.bias.detach().clone(), "payload": _Payload(str(marker))}
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    assert not marker.exists()
    with pytest.raises(ValueError) as info:
        load_inception(path)
    assert str(path) in str(info.value)
    assert "weights_only" in str(info.value)
    assert not marker.exists(), "pickle payload was executed"
