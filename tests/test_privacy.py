"""Privacy: the membership-inference audit tells a memorizing generator from one that
never saw the images, and differentially private training clips and noises each real
image's gradient, accounts for it, refuses what it cannot protect, and resumes exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from gan_core.checkpoint import load_generator, load_tensors
from gan_core.config import ConfigError, load_config
from gan_core.losses import d_loss_fake, d_loss_real
from gan_core.privacy import DPAccounting, PrivacyBudgetError, membership_inference_audit, roc_auc
from gan_core.sampling import generate, latents
from gan_core.trainer import Trainer, train

from .conftest import tiny_config

PRIVATE_MODEL = {"arch": "dcgan", "resolution": 16, "channels": 1, "width": 8, "z_dim": 16, "d_norm": "group"}


def private_config(**train):
    cfg = tiny_config(**{"privacy": {"epsilon": 8.0, "delta": 1e-4}, **train})
    cfg["model"] = dict(PRIVATE_MODEL)
    return cfg


# --------------------------------------------------------------------------- audit
def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 6, (40,), generator=g).double()
    neg = torch.randint(0, 5, (30,), generator=g).double()
    expected = roc_auc_score([1] * 40 + [0] * 30, torch.cat([pos, neg]).numpy())
    assert roc_auc(pos, neg) == pytest.approx(expected)
    assert roc_auc(torch.ones(3) * 2, torch.ones(4)) == 1.0 and roc_auc(torch.ones(3), torch.ones(4)) == 0.5


@pytest.fixture(scope="module")
def digits_generators(one_torch_thread, tmp_path_factory):
    """Two generators with the same recipe, many steps on 20 digits each: one on the
    audit's members, one on 20 other digits."""
    from gan_core.cli import dry_run_data

    x = torch.as_tensor(dry_run_data()[:120]).float().unsqueeze(1) / 127.5 - 1
    members, non_members, other = x[:20], x[20:60], x[60:80]
    cfg = load_config({"model": {"arch": "dcgan", "resolution": 16, "channels": 1, "width": 16},
                       "train": {"steps": 1000, "batch_size": 20, "lr_d": 5e-4, "lr_g": 5e-4, "checkpoint_every": 1000, "num_threads": 1}})
    out = {}
    for name, data in (("memorizer", members), ("other", other)):
        g, _, _ = load_generator(train(cfg, data, tmp_path_factory.mktemp(name), progress=False).generator_path)
        out[name] = generate(g, latents(2000, g.z_dim, seed=1))
    return members, non_members, out


def test_a_generator_trained_on_other_data_gives_nothing_away(digits_generators):
    members, non_members, samples = digits_generators
    a = membership_inference_audit(members, non_members, samples["other"])
    assert a["auc_ci_low"] < 0.5 < a["auc_ci_high"]
    assert abs(a["membership_auc"] - 0.5) < 0.15
    assert (a["n_members"], a["n_non_members"], a["n_samples"]) == (20, 40, 2000)


def test_a_memorizing_generator_is_caught(digits_generators):
    members, non_members, samples = digits_generators
    a = membership_inference_audit(members, non_members, samples["memorizer"])
    other = membership_inference_audit(members, non_members, samples["other"])
    assert a["auc_ci_low"] > 0.6, a
    assert a["membership_auc"] > other["auc_ci_high"]
    assert a["median_member_distance"] < a["median_non_member_distance"]


def test_the_gate_refuses_leaky_medical_models_only():
    from gan_core.verdict import judge
    from pipelines.scenario import PromoteSpec

    good = {"fid_over_floor": 1.2, "precision": 0.8, "recall": 0.8, "near_copy_share": 0.0, "c2st_ci_low": 0.5, "sharpness_ratio": 1.0}
    leaky = {**good, "privacy": {"membership_auc": 0.7}}
    assert not judge(leaky, _bar(PromoteSpec(), "medical")).passed
    assert judge(leaky, _bar(PromoteSpec(), "medical")).failed_criteria == ["privacy"]
    assert judge(leaky, _bar(PromoteSpec(), "art")).passed  # reported, not gated
    assert judge({**good, "privacy": {"membership_auc": 0.55}}, _bar(PromoteSpec(), "medical")).passed
    # the bound is the scenario's to set, for any domain
    assert not judge({**good, "membership_auc": 0.55}, _bar(PromoteSpec(max_membership_auc=0.52), "art")).passed
    with pytest.raises(KeyError, match="membership_auc"):
        judge(good, _bar(PromoteSpec(), "medical"))


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "model, train, key",
    [
        ({"d_norm": None}, {}, "model.d_norm: group"),  # dcgan's default D has BatchNorm
        ({"d_norm": "none", "spectral_norm": True}, {}, "spectral_norm"),
        ({}, {"ada": True, "diffaug": "translation"}, "train.ada"),
        ({}, {"r1_gamma": 1.0}, "r1_gamma"),
        ({}, {"ssl_rotation_d": 1.0}, "ssl_rotation_d"),
    ],
)
def test_what_dp_cannot_protect_is_refused_by_name(model, train, key):
    cfg = private_config(**train)
    cfg["model"].update(model)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(cfg)


def test_seed_dcgan_and_a_groupnorm_dcgan_train_privately(digits16, tmp_path, one_torch_thread):
    seed = private_config(steps=3)
    seed["model"] = {"arch": "seed-dcgan", "resolution": 16, "channels": 1, "z_dim": 16}
    assert train(load_config(seed), digits16, tmp_path / "seed", progress=False).privacy["steps"] == 3
    with pytest.raises(PrivacyBudgetError, match="delta"):
        train(load_config(private_config(steps=3, privacy={"epsilon": 8, "delta": 0.01})), digits16, tmp_path / "d", progress=False)


# --------------------------------------------------------------------------- DP-SGD
def _d_step(cfg: dict, data, tmp_path, *, noise: float, clip: float):
    """One private D update by hand, against the plain gradient of the same batch."""
    tr = Trainer(load_config(cfg), data, tmp_path, progress=False)
    tr._start()
    tr._dp_opt.noise_multiplier, tr._dp_opt.max_grad_norm = noise, clip
    step = 1
    real = tr.data[tr._batch_indices(step)].float() / 127.5 - 1
    z = torch.randn(tr.cfg.train.batch_size, tr.cfg.model.z_dim, generator=torch.Generator().manual_seed(1))
    D0, G0 = copy.deepcopy(tr.D), copy.deepcopy(tr.G)
    tr._private_d_update(step, real, z, lambda x: x)
    private = torch.cat([p.grad.flatten() for p in tr.D.parameters()])
    # the reference: the sum of every image's loss (real and generated) over the expected batch size
    fake = G0(z).detach()
    D0.zero_grad()
    expected = tr._dp_opt.expected_batch_size
    ((d_loss_real(tr.cfg.train.loss, D0(real)) * len(real) + d_loss_fake(tr.cfg.train.loss, D0(fake)) * len(fake)) / expected).backward()
    plain = torch.cat([p.grad.flatten() for p in D0.parameters()])
    return tr, real, private, plain


def test_without_noise_or_clipping_the_private_gradient_is_the_plain_one(digits16, tmp_path, one_torch_thread):
    tr, real, private, plain = _d_step(private_config(), digits16, tmp_path, noise=0.0, clip=1e9)
    assert len(real) > 0 and tr._dp_opt.expected_batch_size == 16 + 16  # q * N real + the generated batch
    torch.testing.assert_close(private, plain, rtol=1e-4, atol=1e-6)


def test_each_image_moves_d_by_at_most_the_clip_norm_and_noise_is_added(digits16, tmp_path, one_torch_thread):
    clip = 1e-3
    tr, real, clipped, plain = _d_step(private_config(), digits16, tmp_path, noise=0.0, clip=clip)
    n = len(real) + tr.cfg.train.batch_size
    bound = clip * n / tr._dp_opt.expected_batch_size
    assert clipped.norm() <= bound * 1.001
    assert plain.norm() > 10 * bound  # clipping did bite
    _, _, noisy, _ = _d_step(private_config(), digits16, tmp_path / "n", noise=1.0, clip=clip)
    # Gaussian noise of std sigma * clip on the sum, per coordinate, over the expected batch size
    expected_norm = 1.0 * clip / tr._dp_opt.expected_batch_size * noisy.numel() ** 0.5
    assert 0.8 < (noisy - clipped).norm() / expected_norm < 1.2


def test_private_training_spends_its_budget_records_it_and_resumes_exactly(digits16, tmp_path, one_torch_thread):
    cfg = load_config(private_config(steps=12, checkpoint_every=4))
    ref = train(cfg, digits16, tmp_path / "ref", progress=False)
    dp = ref.privacy
    assert dp["steps"] == 12 and dp["epsilon_spent"] <= 8.0 and dp["epsilon_spent"] > 7.5  # the noise is set to spend it
    assert dp["history"] == [[dp["noise_multiplier"], dp["sample_rate"], 12]] and dp["sample_rate"] == pytest.approx(16 / 200)
    _, _, meta = load_generator(ref.generator_path)
    assert meta["privacy"]["epsilon_spent"] == dp["epsilon_spent"]
    assert json.loads((tmp_path / "ref" / "summary.json").read_text())["privacy"]["epsilon_spent"] == dp["epsilon_spent"]
    # a run interrupted after its step-8 checkpoint resumes with the accountant's state
    class Interrupted(Exception):
        pass

    def stop_at_8(e):
        if e.kind == "checkpoint" and e.step == 8:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, digits16, tmp_path / "resumed", progress=False, callbacks=[stop_at_8])
    _, ck_meta = load_tensors(sorted((tmp_path / "resumed" / "checkpoints").glob("*.safetensors"))[-1])
    assert ck_meta["privacy"]["history"][0][2] == 8
    resumed = train(cfg, digits16, tmp_path / "resumed", progress=False)
    assert resumed.resumed_from == 8
    assert resumed.generator_path.read_bytes() == ref.generator_path.read_bytes()
    assert resumed.privacy == dp
    # the noise was set for 12 steps: going on to 40 would overspend, refused before a step is taken
    more = load_config(private_config(steps=40, checkpoint_every=4))
    with pytest.raises(PrivacyBudgetError, match="train.steps 40"):
        train(more, digits16, tmp_path / "resumed", progress=False)


def test_accounting_matches_opacus_for_the_same_mechanism():
    from opacus.accountants import RDPAccountant

    acct = DPAccounting.calibrate(epsilon=3.0, delta=1e-5, max_grad_norm=1.0, n_images=1000, batch_size=50, steps=300)
    ref = RDPAccountant()
    for _ in range(300):
        acct.record_step()
        ref.step(noise_multiplier=acct.noise_multiplier, sample_rate=0.05)
    assert acct.spent() == pytest.approx(ref.get_epsilon(delta=1e-5)) and acct.spent() <= 3.0
    assert acct.max_steps() >= 300 and DPAccounting.from_dict(acct.to_dict()) == acct


def test_the_command_line_sets_a_privacy_budget(tmp_path, capsys):
    from gan_core.cli import main

    code = main(["--dry-run", "--no-progress", "--out", str(tmp_path), "--set", "model.d_norm=group", "--set", "train.privacy.epsilon=8"])
    assert code == 0
    assert json.loads((tmp_path / "summary.json").read_text())["privacy"]["epsilon_budget"] == 8.0
    _, _, meta = load_generator(tmp_path / "generator.safetensors")
    assert meta["config"]["train"]["privacy"] == {"epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}
    assert np.isfinite(meta["privacy"]["epsilon_spent"])


def test_rollbacks_spend_budget_and_training_stops_when_it_is_gone(digits16, tmp_path, one_torch_thread):
    cfg = load_config(private_config(steps=12, checkpoint_every=4))
    tr = Trainer(cfg, digits16, tmp_path, progress=False)
    poisoned = []

    def poison_once(e):  # a non-finite loss at step 7: rollback to the step-4 checkpoint
        if e.kind == "step" and e.step == 6 and not poisoned:
            poisoned.append(e.step)
            with torch.no_grad():
                next(tr.G.parameters()).fill_(float("nan"))

    tr.callbacks.append(poison_once)
    with pytest.raises(PrivacyBudgetError, match=r"spent after 12 noisy steps \(1 rollback\(s\).*stopped at step 9 of 12"):
        tr.fit()
    assert tr._dp_max_steps == 12  # the noise was set for exactly the planned steps
    assert not (tmp_path / "generator.safetensors").exists()


def test_offline_copies_are_refused_under_privacy(tmp_path):
    from pipelines.paths import Roots, ScenarioPaths
    from pipelines.scenario import parse_scenario
    from pipelines.steps.augment import augment
    from pipelines.steps.train import TrainingInputError, train

    flips = [{"name": "HorizontalFlip", "params": {"p": 0.5}}]
    sc = parse_scenario(
        {
            "name": "t", "data": {"source": "folder"}, "image": {"size": 16, "channels": 1},
            "augmentation": {"transforms": flips, "invariances": ["horizontal_flip"], "offline_copies": 2},
            "gan": {"model": {"arch": "dcgan", "width": 8, "d_norm": "group"}, "train": {"steps": 2, "batch_size": 8, "privacy": {"epsilon": 8, "delta": 1e-4}}},
        },
        "scenarios/t.yaml",
    )
    paths = ScenarioPaths("t", Roots.under(tmp_path))
    paths.validated.mkdir(parents=True)
    from gan_core.cli import dry_run_data

    from gan_core.shards import write_images

    write_images(paths.validated / "images", dry_run_data()[:40, :, :, None])
    (paths.validated / "report.json").write_text(json.dumps({"passed": True}))
    augment(sc, paths)
    with pytest.raises(TrainingInputError, match="offline copies.*offline_copies: 0"):
        train(sc, paths, progress=False, profile="cpu")
    assert not (paths.model / "generator.safetensors").exists()


def _bar(spec, domain):
    from gan_core.verdict import Bar

    return Bar(**spec.bar_values(domain))
