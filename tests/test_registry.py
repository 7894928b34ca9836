"""The step registry is the one place the pipeline's steps are described: dvc.yaml is
generated from it, Dagster's assets take their keys, dependencies and code versions
from it, and a step's code version changes exactly when a file its DVC stage watches
changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.registry import ASSET_STEPS, PARAMS_FILE, PROJECT_ROOT, STEPS, code_closure, dvc_yaml, main, project_dvc_yaml
from pipelines.scenario import SCENARIO_DIR, load_scenario, resolved_params, scenario_names


def test_committed_dvc_yaml_is_what_the_registry_generates():
    assert (PROJECT_ROOT / "dvc.yaml").read_text() == project_dvc_yaml(), "dvc.yaml is stale: run `scenario-gan dvc-yaml`"
    assert main(["--check"]) == 0


def test_check_fails_on_a_hand_edited_dvc_yaml(tmp_path, capsys):
    for d in ("pipelines", "gan_core", "scenarios"):
        shutil.copytree(PROJECT_ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dvc.yaml").write_text(project_dvc_yaml(PROJECT_ROOT).replace("- pipelines/steps/train.py\n", "", 1))
    assert main(["--check", "--base-dir", str(tmp_path)]) == 1
    assert "scenario-gan dvc-yaml" in capsys.readouterr().err
    assert main(["--base-dir", str(tmp_path)]) == 0
    assert main(["--check", "--base-dir", str(tmp_path)]) == 0


def test_every_stage_depends_on_its_steps_code_params_and_inputs():
    spec = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    scenarios = next(v["scenarios"] for v in spec["vars"] if "scenarios" in v)
    assert sorted(scenarios) == scenario_names(SCENARIO_DIR), "every scenario file has its chain"
    assert list(spec["stages"]) == list(STEPS)
    for name, st in STEPS.items():
        do = spec["stages"][name]["do"]
        assert set(st.code_files()) <= set(do["deps"])
        assert st.module.replace(".", "/") + ".py" in do["deps"]
        for f in (d for d in do["deps"] if "${" not in d):
            assert (PROJECT_ROOT / f).exists(), f
        if st.params:  # key by key from the scenario's resolved parameters, which have every key
            (params_file,) = [p for p in do["params"] if PARAMS_FILE.replace("{s}", "${key}") in p]
            for scenario in scenarios:
                resolved = resolved_params(load_scenario(SCENARIO_DIR / f"{scenario}.yaml"))
                for key in params_file[PARAMS_FILE.replace("{s}", "${key}")]:
                    node = resolved
                    for part in key.split("."):
                        node = node[part]  # KeyError: DVC would refuse the stage
        declared = [next(iter(o)) if isinstance(o, dict) else o for sec in ("outs", "metrics", "plots") for o in do.get(sec, [])]
        assert sorted(declared) == sorted(o.path.replace("{s}", "${key}") for o in st.outputs)
    # a stage's inputs are its upstream steps' outputs: dvc.yaml's graph is the registry's
    for name, st in STEPS.items():
        for u in st.upstream:
            assert STEPS[u].outputs[0].path.replace("{s}", "${key}") in spec["stages"][name]["do"]["deps"], (name, u)


def test_the_closure_follows_lazy_imports_and_lazy_package_exports():
    train = code_closure("pipelines.steps.train")
    assert "gan_core/trainer.py" in train  # imported inside train(), not at module level
    assert "pipelines/training_data.py" in train
    assert "gan_core/fid.py" not in train  # training never measures FID
    ingest = code_closure("pipelines.steps.ingest")
    assert not any(f.startswith("gan_core/") and f not in ("gan_core/__init__.py", "gan_core/atomic.py", "gan_core/config.py", "gan_core/diffaug.py", "gan_core/shards.py") for f in ingest), ingest
    assert "pipelines/builtin_data.py" in ingest and "pipelines/builtin_data.py" not in STEPS["ingest"].code_files()  # listed per scenario instead
    assert "pipelines/_native.c" in ingest  # a compiled module's source is its code


def _copy_code(dst: Path) -> Path:
    for d in ("pipelines", "gan_core"):
        shutil.copytree(PROJECT_ROOT / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize("edited", ["gan_core/ema.py", "gan_core/fid.py", "pipelines/steps/augment.py", "pipelines/scenario.py", "pipelines/_native.c"])
def test_a_code_version_changes_exactly_for_the_steps_whose_stage_watches_the_file(tmp_path, edited):
    root = _copy_code(tmp_path)
    before = {n: st.code_version(root) for n, st in STEPS.items()}
    assert before == {n: st.code_version() for n, st in STEPS.items()}  # a function of the files' content only
    with open(root / edited, "a") as f:
        f.write("\n# edited\n")
    after = {n: st.code_version(root) for n, st in STEPS.items()}
    changed = {n for n in STEPS if before[n] != after[n]}
    assert changed == {n for n, st in STEPS.items() if edited in code_closure(st.module, root)}
    assert changed  # every one of these files is some step's code
    if edited == "gan_core/ema.py":
        assert changed == {"train"}
    if edited == "pipelines/scenario.py":
        assert changed == set(STEPS)
    if edited == "pipelines/_native.c":
        assert "ingest" in changed and "train" not in changed


def test_dvc_yaml_lists_a_new_scenario_once_its_file_exists(tmp_path):
    text = dvc_yaml({"digits": "pipelines/builtin_data.py", "sprites": "data/sprites/raw"})
    spec = yaml.safe_load(text)
    assert next(v["scenarios"] for v in spec["vars"] if "scenarios" in v) == {
        "digits": {"source": "pipelines/builtin_data.py"},
        "sprites": {"source": "data/sprites/raw"},
    }
    assert "${item.source}" in spec["stages"]["ingest"]["do"]["deps"]


def test_assets_take_key_dependencies_and_code_version_from_the_registry():
    from assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {st.asset for st in ASSET_STEPS.values()}
    for st in ASSET_STEPS.values():
        node = graph.get(__import__("dagster").AssetKey(st.asset))
        assert node.code_version == st.code_version()
        assert {p.to_user_string() for p in node.parent_keys} == {STEPS[u].asset for u in st.upstream}


def test_the_scenario_gan_command_checks_dvc_yaml_and_refuses_unknown_commands(capsys):
    from assets.cli import COMMANDS, main

    assert set(COMMANDS) == {"run", "stage", "lineage", "ui", "dvc-yaml"}
    assert main(["dvc-yaml", "--check"]) == 0 and "is current" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "dvc-yaml" in capsys.readouterr().err  # the usage, naming every command
