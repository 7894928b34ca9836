"""Tests for the metrics (gan_core.images, .fid, .manifold, .quality, .swd) and
gan_core.features on real data (sklearn digits).

Digits: 8x8 -> 16x16 (bilinear), 1 channel, [-1, 1]; 600 train / 400 held-out.
One feature net (150 steps, a few seconds) is trained per module and shared.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_core.features import (
    FeatureAdapter,
    PixelFeatures,
    SSLFeatureNet,
    extract_features,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from gan_core.fid import fid, fid_from_features, kid, kid_from_features
from gan_core.images import as_float_images
from gan_core.manifold import memorization_audit, precision_recall
from gan_core.quality import evaluate_samples
from gan_core.swd import swd


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = torch.from_numpy(load_digits().images.astype("float32"))[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    x = F.interpolate(d, size=(16, 16), mode="bilinear", align_corners=False).clamp(-1, 1)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    return {
        "train": x[perm[:600]].contiguous(),
        "held": x[perm[600:1000]].contiguous(),
        "noise": torch.rand(400, 1, 16, 16, generator=g) * 2 - 1,
        "gauss": torch.randn(400, 1, 16, 16, generator=g),
    }


@pytest.fixture(scope="module")
def net(digits) -> SSLFeatureNet:
    return train_feature_net(digits["train"], seed=0, steps=150)


# --------------------------------------------------------------------------- #
# FID / KID / precision-recall
# --------------------------------------------------------------------------- #
def test_identical_sets_score_perfectly(digits, net):
    train = digits["train"]
    assert fid(train, train, extractor=net) == pytest.approx(0.0, abs=1e-6)
    f = extract_features(train, net)
    pr = precision_recall(f, f, k=3)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0
    kid_same, _ = kid(train, train, extractor=net, subsets=20)
    kid_noise, _ = kid(train, digits["noise"], extractor=net, subsets=20)
    assert abs(kid_same) < kid_noise / 100


def test_heldout_real_much_better_than_noise(digits, net):
    train, held, noise = digits["train"], digits["held"], digits["noise"]
    fid_held = fid(train, held, extractor=net)
    fid_noise = fid(train, noise, extractor=net)
    assert 0 < fid_held and fid_noise > 50 * fid_held, (fid_held, fid_noise)
    kid_held, _ = kid(train, held, extractor=net, subsets=20)
    kid_noise, _ = kid(train, noise, extractor=net, subsets=20)
    assert kid_noise > 20 * abs(kid_held)
    f_train, f_held, f_noise = (extract_features(x, net) for x in (train, held, noise))
    pr_held = precision_recall(f_train, f_held)
    pr_noise = precision_recall(f_train, f_noise)
    assert pr_held["precision"] > 0.7 and pr_held["recall"] > 0.7, pr_held
    assert pr_noise["precision"] < 0.1 and pr_noise["recall"] < 0.1, pr_noise


@pytest.mark.parametrize("kind", ["brightness", "noise", "translation"])
def test_fid_is_monotone_in_corruption(digits, net, kind):
    train, held = digits["train"], digits["held"]
    gen = torch.Generator().manual_seed(2)
    eps = torch.randn(held.shape, generator=gen)

    def corrupt(level: int) -> torch.Tensor:
        if kind == "brightness":
            return (held + 0.15 * level).clamp(-1, 1)
        if kind == "noise":
            return (held + 0.15 * level * eps).clamp(-1, 1)
        return torch.roll(held, shifts=level, dims=3)

    scores = [fid(train, corrupt(level), extractor=net) for level in range(4)]
    assert scores == sorted(scores) and len(set(scores)) == 4, scores
    assert scores[1] > 1.2 * scores[0], scores


def test_fid_kid_via_images_equal_via_features_and_accept_uint8(digits, net):
    train, held = digits["train"], digits["held"]
    f_train, f_held = extract_features(train, net), extract_features(held, net)
    assert fid(train, held, extractor=net) == pytest.approx(fid_from_features(f_train, f_held), rel=1e-6)
    assert kid(train, held, extractor=net, subsets=10, seed=3) == pytest.approx(
        kid_from_features(f_train, f_held, subsets=10, seed=3), rel=1e-6
    )
    to_u8 = lambda x: ((x + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
    u8 = as_float_images(to_u8(held))
    assert u8.dtype == torch.float32 and u8.min() >= -1 and u8.max() <= 1
    assert (u8 - held).abs().max() <= 1 / 127.5
    assert fid(to_u8(train), to_u8(held), extractor=net) == pytest.approx(
        fid(train, held, extractor=net), rel=0.05
    )


def test_torchmetrics_object_with_adapter(digits, net):
    from torchmetrics.image.fid import FrechetInceptionDistance

    adapter = FeatureAdapter(net)
    assert adapter.num_features == 128
    metric = FrechetInceptionDistance(feature=adapter, normalize=True)
    metric.update(digits["train"], real=True)
    metric.update(digits["held"], real=False)
    assert float(metric.compute()) == pytest.approx(fid(digits["train"], digits["held"], extractor=net), rel=1e-6)


def test_extractor_without_num_features_is_probed(digits):
    px = PixelFeatures()
    assert not hasattr(px, "num_features")
    assert fid(digits["train"][:300], digits["train"][:300], extractor=px) == pytest.approx(0.0, abs=1e-6)
    assert fid(digits["train"], digits["noise"], extractor=px) > fid(digits["train"], digits["held"], extractor=px)


def test_kid_deterministic_small_sets_and_global_rng_untouched(digits, net):
    train, held = digits["train"], digits["held"]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = kid(train, held, extractor=net, subsets=10, subset_size=50, seed=7)
    assert torch.equal(torch.rand(3), expected)  # caller's RNG stream unchanged
    b = kid(train, held, extractor=net, subsets=10, subset_size=50, seed=7)
    assert a == b and all(isinstance(v, float) for v in a)
    # subset size adapts to tiny sets: min(n_real, n_fake, 1000)
    mean, std = kid(train[:10], held[:7], extractor=net, subsets=5)
    assert np.isfinite(mean) and np.isfinite(std)
    with pytest.raises(ValueError, match="subset_size"):
        kid(train[:10], held[:7], extractor=net, subset_size=8)


def test_evaluate_samples_reports_floor_and_counts(digits, net):
    train, held = digits["train"], digits["held"]
    memorized = train[torch.arange(300) % 50]  # a "generator" that replays 50 training images
    r = evaluate_samples(train, held, memorized, extractor=net, kid_subsets=20)
    assert r["n_real_train"] == 600 and r["n_heldout"] == r["n_fake"] == 300
    assert r["kid_subset_size"] == 300 and r["k"] == 3
    assert r["extractor"] == "SSLFeatureNet(channels=1, resolution=16, dim=128, symmetries=[])" and r["feature_dim"] == 128
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "fid_floor", "kid_floor_mean",
                "precision_floor", "recall_floor", "fid_over_floor"):
        assert isinstance(r[key], float), key
    json.dumps(r)
    assert r["fid"] > r["fid_floor"] > 0
    assert r["precision"] == 1.0  # every replayed image sits on a real image
    assert r["recall"] < 0.5 * r["recall_floor"]  # 50 distinct images cover little of the data
    # deterministic, and n fixes the counts
    assert evaluate_samples(train, held, memorized, extractor=net, kid_subsets=20) == r
    r_noise = evaluate_samples(train, held, digits["noise"], extractor=net, n=100, kid_subsets=5)
    assert r_noise["n_fake"] == r_noise["n_heldout"] == 100
    assert r_noise["fid"] > 50 * r_noise["fid_floor"]
    with pytest.raises(ValueError, match="n must be"):
        evaluate_samples(train, held, memorized, extractor=net, n=301)


# --------------------------------------------------------------------------- #
# Memorization audit
# --------------------------------------------------------------------------- #
def test_memorization_audit_flags_copies_not_fresh_images(digits):
    train, held, noise = digits["train"], digits["held"], digits["noise"]
    idx = torch.randperm(600, generator=torch.Generator().manual_seed(5))[:200]
    copies = train[idx]
    a = memorization_audit(train, copies)
    json.dumps(a)
    assert a["near_copy_share"] == 1.0 and a["exact_copy_count"] == 200
    assert a["median_sample_nn"] == 0.0 and a["nn_ratio"] == 0.0
    assert len(a["closest"]) == 8
    for c in a["closest"]:
        assert c["train_index"] == int(idx[c["sample_index"]]) and c["distance"] == 0.0

    h = memorization_audit(train, held)
    assert h["near_copy_share"] < 0.2 and h["exact_copy_count"] == 0
    assert 0.7 < h["nn_ratio"] < 1.5, h["nn_ratio"]
    n = memorization_audit(train, noise)
    assert n["near_copy_share"] == 0.0 and n["nn_ratio"] > 2

    # slightly perturbed copies are still near-copies
    jitter = (copies + 0.01 * torch.randn(copies.shape, generator=torch.Generator().manual_seed(6))).clamp(-1, 1)
    assert memorization_audit(train, jitter)["near_copy_share"] > 0.95
    # the quantile is a parameter
    h2 = memorization_audit(train, held, quantile=0.5, n_closest=3)
    assert h2["threshold"] > h["threshold"] and h2["near_copy_share"] > h["near_copy_share"]
    assert len(h2["closest"]) == 3


def test_memorization_audit_does_not_call_blurry_averages_copies(digits):
    """Each training image averaged with its 3 nearest neighbours sits closer to the
    training set than its images sit to each other (small d1), but copies none of
    them: a quality problem (blur, mode collapse), not a privacy one."""
    train = digits["train"]
    f = train.flatten(1)
    d = torch.cdist(f, f)
    d.fill_diagonal_(float("inf"))
    hood = (train + train[d.topk(3, largest=False).indices].sum(1)) / 4
    a = memorization_audit(train, hood[:200])
    assert a["median_sample_nn"] < a["threshold"]  # the nearest-distance rule alone flags most of them
    assert a["near_copy_share"] < 0.1
    assert a["median_sample_relative"] > a["relative_threshold"]


def test_pixel_features_distance_is_rms():
    a = torch.zeros(1, 3, 64, 64)
    b = torch.full((1, 3, 64, 64), 0.5)
    px = PixelFeatures(size=32)
    fa, fb = px(a), px(b)
    assert fa.shape == (1, 3 * 32 * 32)
    assert float((fa - fb).norm()) == pytest.approx(0.5, rel=1e-5)


# --------------------------------------------------------------------------- #
# Sliced Wasserstein distance
# --------------------------------------------------------------------------- #
def test_swd(digits):
    train, held, noise = digits["train"], digits["held"], digits["noise"]
    assert swd(train, train) == 0.0
    s_held, s_noise = swd(train, held), swd(train, noise)
    assert s_noise > 5 * s_held > 0
    assert swd(train, held, seed=1) == swd(train, held, seed=1)
    big = F.interpolate(train[:64], size=(64, 64), mode="bilinear", align_corners=False)
    assert swd(big, big) == 0.0 and swd(big, torch.rand_like(big) * 2 - 1) > 0  # multi-level pyramid


# --------------------------------------------------------------------------- #
# Feature net: determinism, persistence, input handling
# --------------------------------------------------------------------------- #
def test_feature_net_training_is_deterministic(digits):
    x = digits["train"][:100]
    a = train_feature_net(x, seed=3, steps=8, batch_size=32)
    b = train_feature_net(x, seed=3, steps=8, batch_size=32)
    c = train_feature_net(x, seed=4, steps=8, batch_size=32)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    # another thread count: same result up to float round-off (bit-identical here), setting restored
    d = train_feature_net(x, seed=3, steps=8, batch_size=32, num_threads=2)
    assert torch.get_num_threads() == 1
    torch.testing.assert_close(d(x), a(x), rtol=1e-4, atol=1e-4)
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_feature_net_learns_rotation(net):
    assert net.train_info["final_rotation_accuracy"] > 0.5  # chance is 0.25


def test_save_load_roundtrip(tmp_path, digits, net):
    path = tmp_path / "sub" / "features.safetensors"
    assert save_feature_net(net, path) == path
    assert os.listdir(path.parent) == ["features.safetensors"]  # no temp file left behind
    loaded = load_feature_net(path)
    assert loaded.config() == net.config()
    assert torch.equal(loaded(digits["held"]), net(digits["held"]))
    assert loaded.train_info == pytest.approx(net.train_info)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    save_feature_net(net, path)  # overwrite in place
    assert torch.equal(load_feature_net(path)(digits["held"][:4]), net(digits["held"][:4]))


def test_load_refuses_non_safetensors(tmp_path):
    pkl = tmp_path / "net.pt"
    torch.save({"body.0.weight": torch.zeros(3)}, pkl)
    with pytest.raises(ValueError, match="net.pt.*not a safetensors file"):
        load_feature_net(pkl)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="raw.safetensors"):
        load_feature_net(raw)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.safetensors"):
        load_feature_net(empty)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a feature net"):
        load_feature_net(other)
    with pytest.raises(FileNotFoundError):
        load_feature_net(tmp_path / "missing.safetensors")


def test_feature_net_resizes_other_sizes(net, digits):
    big = F.interpolate(digits["held"][:8], size=(32, 32), mode="bilinear", align_corners=False)
    assert net(big).shape == (8, 128)
    for res, ch in ((25, 3), (64, 1), (128, 3)):
        m = SSLFeatureNet(ch, res, dim=32)
        assert m(torch.zeros(2, ch, res, res)).shape == (2, 32)


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_clear_errors(digits, net):
    train = digits["train"]
    with pytest.raises(ValueError, match=r"real.*4-D.*\(16, 16\)"):
        fid(train[0, 0], train, extractor=net)
    with pytest.raises(ValueError, match=r"fake has image shape.*\(3, 16, 16\).*real has.*\(1, 16, 16\)"):
        fid(train, train.repeat(1, 3, 1, 1), extractor=net)
    with pytest.raises(ValueError, match=r"samples has image shape"):
        memorization_audit(train, F.interpolate(train, size=(8, 8)))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        as_float_images(torch.zeros(2, 2, 16, 16))
    with pytest.raises(ValueError, match="channels-last"):
        as_float_images(torch.zeros(2, 16, 16, 3))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*\[0, 255\]"):
        as_float_images(torch.full((2, 1, 16, 16), 200.0))
    with pytest.raises(ValueError, match="NaN"):
        as_float_images(torch.full((2, 1, 16, 16), float("nan")))
    with pytest.raises(TypeError, match="int64"):
        as_float_images(torch.zeros(2, 1, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="expected 1 channel"):
        net(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="feature sizes differ"):
        precision_recall(torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="k=3 needs at least 4"):
        precision_recall(torch.randn(3, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2 images"):
        fid(train[:1], train, extractor=net)
    with pytest.raises(ValueError, match="quantile"):
        memorization_audit(train, train, quantile=1.5)
    with pytest.raises(ValueError, match="num_features"):
        FeatureAdapter(PixelFeatures())
    assert as_float_images(np.zeros((2, 1, 16, 16), dtype=np.uint8)).min() == -1.0


def test_feature_net_training_leaves_the_global_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_feature_net(digits["train"][:64], seed=0, steps=2, batch_size=16)
    assert torch.equal(torch.rand(3), expected)
