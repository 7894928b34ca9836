import pytest

from gan_core.config import ConfigError, load_config


def test_defaults_are_valid():
    cfg = load_config({})
    assert cfg.model.arch == "dcgan" and cfg.train.loss == "nonsaturating"


@pytest.mark.parametrize(
    "raw, needles",
    [
        ({"model": {"archh": "dcgan"}}, ["model.archh", "unknown key", "arch", "resolution"]),
        ({"model": {"arch": "stylegan"}}, ["model.arch", "seed-dcgan", "dcgan"]),
        ({"model": {"resolution": 48}}, ["model.resolution", "48", "16, 28, 32, 64, 128"]),
        ({"model": {"channels": 4}}, ["model.channels", "1", "3"]),
        ({"train": {"steps": "many"}}, ["train.steps", "integer"]),
        ({"train": {"diffaug": "color,zoom"}}, ["train.diffaug", "zoom", "translation"]),
        ({"train": {"loss": "wgan"}}, ["train.loss", "hinge"]),
        ({"train": {"device": "tpu"}}, ["train.device", "auto"]),
        ({"train": {"ssl_rotation_g": 0.2}}, ["ssl_rotation_g", "ssl_rotation_d"]),
        ({"model": {"arch": "seed-dcgan", "width": 32}}, ["model.width", "seed-dcgan"]),
        ({"trian": {}}, ["trian", "model", "train"]),
    ],
)
def test_bad_config_names_key_and_allowed_values(raw, needles):
    with pytest.raises(ConfigError) as e:
        load_config(raw, source="scenarios/x.yaml")
    msg = str(e.value)
    assert "scenarios/x.yaml" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_policy_is_normalised():
    assert load_config({"train": {"diffaug": " color , cutout"}}).train.diffaug == "color,cutout"


def test_config_is_immutable():
    cfg = load_config({})
    with pytest.raises(Exception):
        cfg.train.steps = 5
