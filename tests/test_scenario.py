"""Scenario files: the defaults load, and every kind of bad input is an error that
names the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.paths import Roots
from pipelines.scenario import ScenarioError, load_all, load_scenario, parse_scenario

GOOD = """
name: x
domain: other
data: {source: builtin, builtin: faces}
image: {size: 32, channels: 1}
"""


def write(tmp_path: Path, text: str, name: str = "x") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_default_scenarios_load_with_cpu_and_gpu_budgets():
    scenarios = load_all()
    assert {"faces", "digits", "textures", "histology"} <= set(scenarios)
    for sc in scenarios.values():
        cpu, gpu = sc.gan_config(), sc.gan_config(gpu=True)
        assert (cpu.model.resolution, cpu.model.channels) == (sc.image.size, sc.image.channels)
        assert gpu.train.steps > cpu.train.steps
    assert scenarios["histology"].domain == "medical" and scenarios["histology"].image.channels == 3


@pytest.mark.parametrize(
    "patch, needles",
    [
        ("name: x\ndata: {source: builtin, builtin: faces}\nimgae: {size: 32}\n", ["imgae", "unknown key"]),
        ("name: x\ndata: {source: builtin, builtin: faces}\nimage: {size: 48}\n", ["image.size", "16", "128"]),
        ("name: x\ndata: {source: builtin, builtin: faces}\nimage: {channels: two}\n", ["image.channels"]),
        ("name: x\ndata: {source: web}\n", ["data.source", "builtin", "folder", "npz"]),
        ("name: x\ndata: {source: builtin}\n", ["data.builtin", "faces", "digits"]),
        ("name: x\ndata: {source: npz}\n", ["data.path", "npz"]),
        ("name: x\ndata: {source: folder, path: ../../etc}\n", ["data.path", "inside the data root"]),
        ("name: x\ndata: {source: folder, path: /etc}\n", ["data.path", "relative"]),
        ("name: x\ndata: {source: builtin, builtin: faces}\ngan: {model: {arch: stylegan}}\n", ["model.arch", "seed-dcgan"]),
        ("name: x\ndata: {source: builtin, builtin: faces}\ngan: {model: {resolution: 64}}\n", ["gan.model.resolution", "image.size"]),
        ("name: x\ndomain: medical\ndata: {source: builtin, builtin: histology}\naugmentation: {transforms: [{name: ColorJitter}]}\n", ["ColorJitter", "medical"]),
        ("name: x\ndata: {source: builtin, builtin: faces}\nvalidation: {expectations: [{expectation: be_nice}]}\n", ["validation.expectations.0.expectation", "be_nice"]),
        ("data: {source: builtin, builtin: faces}\n", ["name", "required"]),
    ],
)
def test_bad_scenarios_name_file_and_key(tmp_path, patch, needles):
    p = write(tmp_path, patch)
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert str(p) in msg or "scenario 'x'" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    p = write(tmp_path, GOOD + "description: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ScenarioError, match="tags such as"):
        load_scenario(p)


def test_name_must_match_file(tmp_path):
    with pytest.raises(ScenarioError, match="must match the file name"):
        load_scenario(write(tmp_path, GOOD, name="y"))


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(write(tmp_path, "- a\n- b\n"))


def test_data_path_stays_inside_the_data_root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "outside")
    sc = parse_scenario({"name": "x", "data": {"source": "folder", "path": "link"}})
    with pytest.raises(ScenarioError, match="outside the data root"):
        sc.data_path(Roots.under(tmp_path).data)
    ok = parse_scenario({"name": "x", "data": {"source": "folder"}})
    assert ok.data_path(Roots.under(tmp_path).data) == (tmp_path / "data" / "x" / "raw").resolve()


@pytest.mark.parametrize(
    "invariances,turns",
    [(["horizontal_flip", "vertical_flip"], "[180]"), (["rotate90"], "[90, 180, 270]"), (["transpose", "vertical_flip"], "[90, 180, 270]")],
)
def test_rotation_loss_is_refused_when_the_data_is_invariant_to_a_turn(invariances, turns):
    raw = {
        "name": "t", "data": {"source": "folder"},
        "augmentation": {"invariances": invariances},
        "gan": {"train": {"ssl_rotation_d": 1.0, "ssl_rotation_g": 0.2}},
    }
    with pytest.raises(ScenarioError, match=rf"gan.train.ssl_rotation_d: .*turned by {re.escape(turns)} degrees"):
        parse_scenario(raw, "scenarios/t.yaml")
    raw["augmentation"]["invariances"] = ["horizontal_flip"]  # a mirror alone leaves every turn tellable
    parse_scenario(raw, "scenarios/t.yaml")


def test_project_settings_default_and_refuse_bad_values_by_file_and_key(tmp_path):
    from pipelines.scenario import SCENARIO_DIR, ProjectSettings, load_project

    assert load_project(tmp_path) == ProjectSettings() and ProjectSettings().profile == "cpu"
    assert load_project(SCENARIO_DIR).profile == "cpu"  # the shipped project trains the CPU budgets
    (tmp_path / "_project.yaml").write_text("profile: gpu\n")
    assert load_project(tmp_path).profile == "gpu"
    for text, key in (("profile: tpu\n", "profile"), ("retrain_cron: daily\n", "retrain_cron"), ("profiel: gpu\n", r"profiel: unknown key; check the spelling \(allowed here: retrain_cron, profile\)")):
        (tmp_path / "_project.yaml").write_text(text)
        with pytest.raises(ScenarioError, match=rf"_project\.yaml.*\n.*{key}"):
            load_project(tmp_path)


# --------------------------------------------------------------------------- #
# scenarios/_defaults.yaml: a scenario file says only what differs
# --------------------------------------------------------------------------- #
DEFAULTS = """
gan:
  model: {arch: dcgan, width: 32}
  train: {batch_size: 32, ema_half_life_images: 2000}
validation:
  expectations:
    - {expectation: expect_column_values_to_be_unique, kwargs: {column: sha256}}
evaluation: {feature_steps: 123}
"""


def test_a_scenario_file_is_laid_over_the_defaults(tmp_path):
    (tmp_path / "_defaults.yaml").write_text(DEFAULTS)
    sc = load_scenario(write(tmp_path, GOOD + "gan: {train: {steps: 7}}\nvalidation: {expectations: []}\n"))
    cfg = sc.gan_config()
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.ema_half_life_images, cfg.model.width) == (7, 32, 2000, 32)  # mappings merge key by key
    assert sc.validation.expectations == []  # a list is replaced, not appended to
    assert sc.evaluation.feature_steps == 123 and sc.evaluation.seed == 0  # the schema's default where neither says
    assert load_scenario(write(tmp_path, GOOD)).validation.expectations[0].expectation == "expect_column_values_to_be_unique"


@pytest.mark.parametrize(
    "text,words",
    [("name: z\n", ["_defaults.yaml", "name", "each scenario file"]), ("data: {source: folder}\n", ["_defaults.yaml", "data"]), ("ganz: {}\n", ["_defaults.yaml", "ganz", "allowed"]), ("- 1\n", ["_defaults.yaml", "mapping"])],
)
def test_a_bad_defaults_file_names_itself(tmp_path, text, words):
    (tmp_path / "_defaults.yaml").write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(write(tmp_path, GOOD))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_resolved_params_are_written_once_per_change(tmp_path):
    import yaml

    from pipelines.paths import ScenarioPaths
    from pipelines.scenario import write_params

    (tmp_path / "_defaults.yaml").write_text(DEFAULTS)
    paths = ScenarioPaths("x", Roots.under(tmp_path / "base"))
    first = write_params(load_scenario(write(tmp_path, GOOD)), paths)
    resolved = yaml.safe_load(first.path.read_text())
    assert first.changed and first.path == tmp_path / "base/data/x/params.yaml"
    assert resolved["gan"]["train"]["ema_half_life_images"] == 2000 and resolved["evaluation"]["heldout_fraction"] == 0.2  # every key, whichever layer set it
    mtime = first.path.stat().st_mtime_ns
    assert not write_params(load_scenario(tmp_path / "x.yaml"), paths).changed and first.path.stat().st_mtime_ns == mtime
    write(tmp_path, GOOD + "gan: {train: {steps: 9}}\n")
    assert write_params(load_scenario(tmp_path / "x.yaml"), paths).changed
    assert yaml.safe_load(first.path.read_text())["gan"]["train"] == {"batch_size": 32, "ema_half_life_images": 2000, "steps": 9}


def test_the_shipped_scenarios_say_only_what_differs_from_the_defaults():
    import yaml

    from pipelines.scenario import SCENARIO_DIR, load_defaults, scenario_files

    defaults = load_defaults(SCENARIO_DIR)
    assert defaults, "scenarios/_defaults.yaml holds the shared values"

    def leaves(d, prefix=()):
        for k, v in d.items():
            yield from leaves(v, prefix + (k,)) if isinstance(v, dict) else [(prefix + (k,), v)]

    shared = dict(leaves(defaults))
    for f in scenario_files(SCENARIO_DIR):
        repeated = [".".join(k) for k, v in leaves(yaml.safe_load(f.read_text())) if shared.get(k, object()) == v]
        assert repeated == [], f"{f.name} repeats _defaults.yaml: {repeated}"
