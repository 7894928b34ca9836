import torch

from gan_core.diffaug import POLICIES, diff_augment
from gan_core.losses import d_loss, g_loss, r1_penalty, rotate_batch


def test_nonsaturating_matches_formula_and_is_stable():
    d_real, d_fake = torch.tensor([0.3, -1.2]), torch.tensor([0.5, 2.0])
    sig = torch.sigmoid
    expected_d = -(torch.log(sig(d_real)).mean() + torch.log(1 - sig(d_fake)).mean())
    assert torch.allclose(d_loss("nonsaturating", d_real, d_fake), expected_d, atol=1e-6)
    assert torch.allclose(g_loss("nonsaturating", d_fake), -torch.log(sig(d_fake)).mean(), atol=1e-6)
    huge = torch.tensor([1e4, -1e4])
    assert torch.isfinite(d_loss("nonsaturating", huge, huge)) and torch.isfinite(g_loss("nonsaturating", huge))


def test_hinge():
    assert d_loss("hinge", torch.tensor([2.0]), torch.tensor([-2.0])) == 0
    assert d_loss("hinge", torch.tensor([0.0]), torch.tensor([0.0])) == 2
    assert g_loss("hinge", torch.tensor([1.0, 3.0])) == -2


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(4, 3, requires_grad=True)
    assert torch.allclose(r1_penalty(x @ w, x), w.square().sum())


def test_rotate_batch_labels():
    x = torch.arange(8.0).view(2, 1, 2, 2)
    xr, y = rotate_batch(x)
    assert xr.shape == (8, 1, 2, 2) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(xr[2], torch.rot90(x[0], 1, dims=(1, 2)))


def test_diffaugment_is_deterministic_and_differentiable():
    x = torch.randn(6, 3, 16, 16, requires_grad=True)
    policy = ",".join(POLICIES)
    a = diff_augment(x, policy, torch.Generator().manual_seed(1))
    b = diff_augment(x, policy, torch.Generator().manual_seed(1))
    c = diff_augment(x, policy, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_zeroes_a_quarter_and_translation_keeps_content():
    x = torch.ones(4, 1, 16, 16)
    out = diff_augment(x, "cutout", torch.Generator().manual_seed(0))
    zero_share = (out == 0).float().mean().item()
    assert 0.05 < zero_share <= 0.25 + 1e-6
    moved = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    assert 0.5 < moved.mean().item() <= 1.0
