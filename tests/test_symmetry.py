"""Declared symmetries: the group they generate, and measures that do not tell an image
from its declared mirror."""

import pytest
import torch

from gan_core.symmetry import group, symmetrized


@pytest.mark.parametrize(
    "names,size",
    [([], 1), (["horizontal_flip"], 2), (["horizontal_flip", "vertical_flip"], 4), (["rotate90"], 4), (["rotate90", "horizontal_flip"], 8), (["horizontal_flip", "vertical_flip", "rotate90", "transpose"], 8)],
)
def test_group_is_closed_and_has_the_right_size(names, size):
    ops = group(names)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    images = {tuple(g(x).flatten().tolist()) for g in ops}
    assert len(ops) == size and len(images) == size
    assert tuple(ops[0](x).flatten().tolist()) == tuple(x.flatten().tolist())  # identity first
    for g in ops:  # closed: composing two elements gives an element
        for h in ops:
            assert tuple(h(g(x)).flatten().tolist()) in images


def test_unknown_symmetry_is_an_error():
    with pytest.raises(ValueError, match="unknown symmetry 'mirror'"):
        group(["mirror"])


def test_symmetrized_features_do_not_tell_an_image_from_its_mirror():
    x = torch.rand(5, 1, 8, 8)
    f = lambda t: t[..., :4].mean(dim=(1, 2, 3))  # noqa: E731 - looks at the left half only
    assert not torch.allclose(f(x), f(x.flip(-1)))
    fs = symmetrized(f, ["horizontal_flip"])
    assert torch.allclose(fs(x), fs(x.flip(-1)))


def test_ruler_and_classifier_treat_declared_mirrors_as_the_data(digits16, tmp_path):
    """Rotation prediction learns handedness: without the declared symmetry a ruler
    puts mirrored real images far from the real ones; with it, they are the same."""
    from gan_core.features import load_feature_net, save_feature_net, train_feature_net
    from gan_core.fid import fid
    from gan_core.manifold import memorization_audit
    from gan_core.verdict import classifier_two_sample_test

    x = torch.as_tensor(digits16[:160]).unsqueeze(1)
    plain = train_feature_net(x, seed=0, steps=60)
    mirror = train_feature_net(x, seed=0, steps=60, symmetries=("horizontal_flip",))
    assert torch.allclose(mirror(x[:8]), mirror(x[:8].flip(-1)), atol=1e-5)
    assert not torch.allclose(plain(x[:8]), plain(x[:8].flip(-1)), atol=1e-3)
    assert fid(x[:80], x[80:].flip(-1), extractor=mirror) < fid(x[:80], x[80:].flip(-1), extractor=plain)
    c2st = classifier_two_sample_test(x[:80], x[80:].flip(-1), symmetries=("horizontal_flip",))
    assert c2st["accuracy"] == classifier_two_sample_test(x[:80], x[80:], symmetries=("horizontal_flip",))["accuracy"]
    # mirrored copies of training images are copies
    assert memorization_audit(x[:80], x[:40].flip(-1), symmetries=("horizontal_flip",))["near_copy_share"] > 0.9
    assert memorization_audit(x[:80], x[:40].flip(-1))["near_copy_share"] < 0.5
    # the symmetries travel with the saved ruler
    assert load_feature_net(save_feature_net(mirror, tmp_path / "ruler.safetensors")).symmetries == ("horizontal_flip",)
