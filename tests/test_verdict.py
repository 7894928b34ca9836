"""Tests for gan_core.verdict: the two-sample measures and the promotion verdict.

Data: 16x16 grey digits (the conftest ``digits16`` fixture, 200 images) split into
two disjoint halves of real images; "models" are made from them by construction
(held-out reals, uniform noise, blur, one image repeated, training copies). The ruler
is :class:`~gan_core.features.PixelFeatures` (no training), so every measure runs in
well under a second on one thread.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from gan_core.features import PixelFeatures
from gan_core.swd import binomial_blur as _blur
from gan_core.verdict import (
    Bar,
    Check,
    Verdict,
    classifier_two_sample_test,
    high_frequency_share,
    judge,
    one_nn_accuracy,
    sharpness,
    verdict_metrics,
    wilson_interval,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(digits16) -> dict[str, torch.Tensor]:
    x = torch.as_tensor(digits16)[:, None].float() / 127.5 - 1  # (200, 1, 16, 16) in [-1, 1]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, held = x[perm[:100]], x[perm[100:]]
    g = torch.Generator().manual_seed(1)
    return {
        "train": train,
        "held": held,
        "noise": torch.rand(100, 1, 16, 16, generator=g) * 2 - 1,
        "blurred": _blur(_blur(held)),
        "collapsed": held[:1].repeat(100, 1, 1, 1),
        "copies": train[torch.randint(0, 100, (100,), generator=g)],
    }


@pytest.fixture(scope="module")
def verdicts(sets) -> dict[str, tuple[dict, Verdict]]:
    out = {}
    for name in ("held", "noise", "blurred", "collapsed", "copies"):
        m = verdict_metrics(sets["train"], sets["held"][:40], sets[name], extractor=PixelFeatures(), seed=0)
        out[name] = (m, judge(m))
    return out


# --------------------------------------------------------------------------- measures
def test_identical_distributions_are_indistinguishable(sets):
    c = classifier_two_sample_test(sets["train"], sets["held"], seed=0)
    assert c["n_real"] == c["n_fake"] == 100
    assert abs(c["accuracy"] - 0.5) < 0.12
    assert c["ci_low"] < 0.5 < c["ci_high"]
    assert c["p_value"] > 0.01
    s = sharpness(sets["train"], sets["held"])
    assert 0.85 < s["ratio"] < 1.15
    assert s["floor_low"] < 1 < s["floor_high"]
    nn1 = one_nn_accuracy(sets["train"], sets["held"])
    assert 0.35 < nn1["accuracy"] < 0.65


def test_classifier_separates_noise_and_blur(sets):
    for name in ("noise", "blurred"):
        c = classifier_two_sample_test(sets["train"], sets[name], seed=0)
        assert c["accuracy"] >= 0.9 and c["ci_low"] > 0.75 and c["p_value"] < 1e-6, (name, c)


def test_sharpness_sees_blur_and_noise(sets):
    assert sharpness(sets["train"], sets["blurred"])["ratio"] < 0.6
    assert sharpness(sets["train"], sets["noise"])["ratio"] > 3
    s = high_frequency_share(sets["train"])
    assert 0 < s < high_frequency_share(sets["noise"])
    assert high_frequency_share(torch.zeros(3, 1, 8, 8)) == 0.0  # flat: no detail at all


def test_sharpness_floor_widens_with_fewer_samples(sets):
    wide = sharpness(sets["train"], sets["held"][:10])
    narrow = sharpness(sets["train"], sets["held"])
    assert wide["floor_high"] - wide["floor_low"] > narrow["floor_high"] - narrow["floor_low"]


def test_one_nn_flags_copies_and_collapse(sets):
    assert one_nn_accuracy(sets["train"], sets["copies"])["accuracy"] < 0.35
    assert one_nn_accuracy(sets["train"], sets["collapsed"])["accuracy_fake"] == 1.0


def test_measures_are_deterministic_and_leave_the_global_rng_alone(sets):
    state = torch.get_rng_state()
    a = classifier_two_sample_test(sets["train"], sets["blurred"], seed=3)
    b = classifier_two_sample_test(sets["train"], sets["blurred"], seed=3)
    assert a == b
    assert sharpness(sets["train"], sets["held"], seed=3) == sharpness(sets["train"], sets["held"], seed=3)
    assert one_nn_accuracy(sets["train"], sets["held"], seed=3) == one_nn_accuracy(sets["train"], sets["held"], seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    # uint8 input gives the same answer as its float form
    u8 = ((sets["train"] + 1) * 127.5).round().to(torch.uint8)
    assert classifier_two_sample_test(u8, sets["blurred"], seed=3)["accuracy"] == pytest.approx(a["accuracy"], abs=0.03)


def test_max_per_class_caps_the_sample(sets):
    c = classifier_two_sample_test(sets["train"], sets["noise"], max_per_class=20)
    assert c["n_real"] == 20 and len(c["fold_accuracies"]) == 4


# --------------------------------------------------------------------------- verdict
def test_heldout_reals_pass(verdicts):
    m, v = verdicts["held"]
    assert v.passed, v.reasons
    assert v.failed == [] and v.failed_criteria == []


def test_noise_is_refused_for_realism_and_fidelity(verdicts):
    m, v = verdicts["noise"]
    assert not v.passed
    assert {"realism", "fidelity"} <= set(v.failed_criteria)
    sharp = [c for c in v.failed if c.measure == "sharpness_ratio"]
    assert sharp and sharp[0].op == "<=" and sharp[0].value > sharp[0].bar
    assert any("sharpness_ratio" in r and "fails <=" in r for r in v.reasons)


def test_blur_is_refused_by_sharpness(verdicts):
    m, v = verdicts["blurred"]
    assert not v.passed and "realism" in v.failed_criteria
    (low,) = [c for c in v.failed if c.measure == "sharpness_ratio"]
    assert low.op == ">=" and low.value < low.bar and low.margin < 0


def test_collapse_fails_diversity(verdicts):
    m, v = verdicts["collapsed"]
    assert not v.passed and "diversity" in v.failed_criteria
    (recall,) = [c for c in v.failed if c.measure == "recall"]
    assert recall.value < recall.bar


def test_copies_fail_memorization_only(verdicts):
    m, v = verdicts["copies"]
    assert v.failed_criteria == ["memorization"]
    assert m["near_copy_share"] > 0.5


def test_metrics_are_json_ready(verdicts):
    m, v = verdicts["held"]
    json.dumps(m)
    json.dumps(v.to_dict())
    assert set(m["seconds"]) == {"evaluate_samples", "memorization_audit", "c2st", "sharpness", "nn1"}


GOOD = {
    "fid_over_floor": 1.2,
    "precision": 0.8,
    "precision_floor": 0.85,
    "recall": 0.7,
    "recall_floor": 0.8,
    "c2st_ci_low": 0.55,
    "sharpness_ratio": 1.0,
    "sharpness_floor_low": 0.95,
    "sharpness_floor_high": 1.05,
    "near_copy_share": 0.0,
}


@pytest.mark.parametrize(
    "key, value, criterion",
    [
        ("fid_over_floor", 9.0, "fidelity"),
        ("precision", 0.1, "fidelity"),
        ("recall", 0.05, "diversity"),
        ("c2st_ci_low", 0.9, "realism"),
        ("sharpness_ratio", 0.3, "realism"),
        ("sharpness_ratio", 5.0, "realism"),
        ("near_copy_share", 0.5, "memorization"),
        ("precision", math.nan, "fidelity"),
    ],
)
def test_judge_names_the_failed_criterion(key, value, criterion):
    assert judge(GOOD).passed
    v = judge({**GOOD, key: value})
    assert not v.passed and v.failed_criteria == [criterion]
    (c,) = v.failed
    assert c.measure == key and (c.value == value or math.isnan(value))
    assert str(c).startswith(f"{criterion}: {key}")


def test_floors_widen_the_bar_but_never_tighten_it():
    bar = Bar()
    # a 10-image floor band of [0.7, 1.4] lets 0.72 pass although 0.72 < min_sharpness_ratio
    assert judge({**GOOD, "sharpness_ratio": 0.72, "sharpness_floor_low": 0.7, "sharpness_floor_high": 1.4}).passed
    assert not judge({**GOOD, "sharpness_ratio": 0.72}).passed
    # a narrow floor band does not tighten the fixed one
    assert judge({**GOOD, "sharpness_ratio": bar.min_sharpness_ratio + 0.01, "sharpness_floor_low": 0.99}).passed
    # precision bar drops to floor_fraction * precision_floor when the reals themselves score low
    low = bar.floor_fraction * 0.4 + 0.01
    assert judge({**GOOD, "precision": low, "precision_floor": 0.4}).passed
    assert not judge({**GOOD, "precision": low, "precision_floor": 0.9}).passed
    # without floors the fixed thresholds apply
    plain = {k: v for k, v in GOOD.items() if "floor" not in k or k == "fid_over_floor"}
    assert judge(plain).passed


def test_judge_reads_nested_results():
    nested = {
        "quality": {k: GOOD[k] for k in ("fid_over_floor", "precision", "recall")},
        "memorization": {"near_copy_share": 0.2},
        "realism": {k: GOOD[k] for k in ("c2st_ci_low", "sharpness_ratio")},
    }
    v = judge(nested)
    assert v.failed_criteria == ["memorization"]


def test_custom_bar():
    v = judge({**GOOD, "c2st_ci_low": 0.75}, Bar(max_c2st_accuracy=0.8))
    assert v.passed and v.bar.max_c2st_accuracy == 0.8
    assert isinstance(v.checks[0], Check)


# --------------------------------------------------------------------------- bad inputs
def test_bad_images_are_refused_with_clear_errors(sets):
    x = sets["train"]
    with pytest.raises(ValueError, match="image shape"):
        classifier_two_sample_test(x, torch.zeros(10, 3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        sharpness(x, torch.full((10, 1, 16, 16), math.nan))
    with pytest.raises(ValueError, match="channels-last"):
        one_nn_accuracy(x, torch.zeros(10, 16, 16, 1))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        classifier_two_sample_test(x, x * 3)
    with pytest.raises(ValueError, match="at least 4 real and 4 fake"):
        classifier_two_sample_test(x, x[:3])
    with pytest.raises(ValueError, match="square images"):
        classifier_two_sample_test(torch.zeros(8, 1, 16, 12), torch.zeros(8, 1, 16, 12))
    with pytest.raises(ValueError, match="folds"):
        classifier_two_sample_test(x, x, folds=1)
    with pytest.raises(ValueError, match="l2"):
        classifier_two_sample_test(x, x, l2=-1.0)
    with pytest.raises(ValueError, match="max_per_class"):
        one_nn_accuracy(x, x, max_per_class=1)
    with pytest.raises(ValueError, match="flat"):
        sharpness(torch.zeros(4, 1, 8, 8), x[:4, :, :8, :8])
    with pytest.raises(ValueError, match="n_boot"):
        sharpness(x, x, n_boot=3)
    with pytest.raises(ValueError, match="3x3"):
        high_frequency_share(torch.zeros(2, 1, 2, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        sharpness([[0.0]], x)


def test_bad_metrics_and_bars_are_refused():
    with pytest.raises(KeyError, match="c2st_ci_low"):
        judge({k: v for k, v in GOOD.items() if k != "c2st_ci_low"})
    with pytest.raises(TypeError, match="mapping"):
        judge([1, 2, 3])
    with pytest.raises(TypeError, match="precision"):
        judge({**GOOD, "precision": "high"})
    with pytest.raises(TypeError, match="Bar"):
        judge(GOOD, {"max_fid_over_floor": 3})
    for kwargs in ({"min_sharpness_ratio": 1.5}, {"max_c2st_accuracy": 0.3}, {"max_fid_over_floor": math.nan}, {"min_recall": 2.0}):
        with pytest.raises(ValueError, match="Bar"):
            Bar(**kwargs)
    with pytest.raises(ValueError, match="trials"):
        wilson_interval(1, 0)
    with pytest.raises(ValueError, match="n_audit"):
        verdict_metrics(torch.zeros(8, 1, 8, 8), torch.zeros(8, 1, 8, 8), torch.zeros(8, 1, 8, 8), extractor=PixelFeatures(), n_audit=0)


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] > 0.8


def test_bench_verdict_quick(tmp_path):
    from benchmarks import bench_verdict

    out = tmp_path / "verdict.json"
    assert bench_verdict.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (case,) = result["cases"]
    models = [r["model"] for r in case["rows"]]
    assert models[:2] == ["ideal", "jitter"] and {"good", "early", "collapsed", "uniform", "blurred", "copies"} <= set(models)
    rows = {r["model"]: r for r in case["rows"]}
    assert rows["ideal"]["verdict"]["passed"]
    assert "realism" in rows["uniform"]["verdict"]["failed_criteria"]
    assert rows["copies"]["verdict"]["failed_criteria"] == ["memorization"]
    assert result["machine"]["cpu_count"] >= 1 and result["bar"]["max_c2st_accuracy"] == 0.7
