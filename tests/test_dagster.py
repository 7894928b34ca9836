"""The Dagster definitions with the real Dagster, great-expectations, albumentations
and gan_core: definitions load, assets run directly and as a chain, a failing
expectation blocks training, the sensor and the schedule ask for the right runs, and
the CLI materializes the chain."""

from __future__ import annotations

import inspect

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.common import ScenarioGanResource
from assets.definitions import build_definitions, defs
from pipelines.dvcio import dvc_hash

from .dagster_support import TINY_DIGITS, tiny_scenario

ASSETS = ["ingested_images", "validated_images", "augmented_images", "ruler", "generator", "evaluation"]


def project(tmp_path: Path) -> ScenarioGanResource:
    return ScenarioGanResource(base_dir=str(tmp_path / "base"), scenarios_dir=str(tmp_path / "scenarios"))


def asset(name: str) -> dg.AssetsDefinition:
    """The asset as the definitions declare it (resources given per call)."""
    return next(a for a in defs.assets if a.key.to_user_string() == name)


def test_definitions_load_with_one_partition_per_scenario():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(ASSETS)
    assert set(defs.resolve_job_def("scenario_chain").partitions_def.get_partition_keys()) >= {"faces", "digits", "textures", "histology"}
    assert defs.resolve_schedule_def("weekly_retrain").cron_schedule == "0 3 * * 1"
    assert defs.resolve_sensor_def("raw_data_sensor") is not None
    checks = {k.name for k in graph.asset_check_keys}
    assert {"check_blocking_expectations", "check_promotable", "expect_column_values_to_be_unique__sha256"} <= checks


def test_partitions_and_checks_are_built_from_the_scenario_files(tmp_path):
    """The definitions are a function of the scenario folder: a new file is a new
    partition the next time they are built (Reload definitions in the UI), and its
    expectations are checks; the code versions are the registry's."""
    scen = tmp_path / "scenarios"
    tiny_scenario(scen, "digits")
    first = build_definitions(tmp_path / "base", scen)
    assert first.resolve_job_def("scenario_chain").partitions_def.get_partition_keys() == ["digits"]
    raw = yaml.safe_load((scen / "digits.yaml").read_text())
    raw["name"] = "sprites"
    raw["validation"]["expectations"] = [{"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "max", "min_value": 0.01}}]
    (scen / "sprites.yaml").write_text(yaml.safe_dump(raw))
    second = build_definitions(tmp_path / "base", scen)
    assert second.resolve_job_def("scenario_chain").partitions_def.get_partition_keys() == ["digits", "sprites"]
    new_check = "expect_column_values_to_be_between__max"
    assert new_check in {k.name for k in second.resolve_asset_graph().asset_check_keys}
    assert new_check not in {k.name for k in first.resolve_asset_graph().asset_check_keys}
    from pipelines.registry import STEPS

    assert second.resolve_asset_graph().get(dg.AssetKey("generator")).code_version == STEPS["train"].code_version()


def test_ingested_images_called_directly(tmp_path):
    tiny_scenario(tmp_path / "scenarios")
    with dg.build_asset_context(partition_key="digits", resources={"project": project(tmp_path)}) as ctx:
        result = asset("ingested_images")(ctx)
    assert getattr(result.metadata["n_images"], "value", result.metadata["n_images"]) == TINY_DIGITS
    # The data version is the hash DVC records for the step's output.
    assert result.data_version.value == dvc_hash(tmp_path / "base/data/digits/ingested")
    assert result.data_version.value.endswith(".dir")
    assert "not a DVC project" in result.metadata["dvc"].value  # tmp base: nothing to record, not a failure


@pytest.mark.slow
def test_each_asset_called_directly_in_order(tmp_path):
    tiny_scenario(tmp_path / "scenarios")
    results = {}
    for name in ASSETS:
        with dg.build_asset_context(partition_key="digits", resources={"project": project(tmp_path)}) as ctx:
            out = asset(name)(ctx)
            results[name] = next(iter(out)) if inspect.isgenerator(out) else out

    def meta(asset: str, key: str):
        v = results[asset].metadata[key]
        return getattr(v, "value", v)

    assert meta("validated_images", "passed") is True
    assert all(c.passed for c in results["validated_images"].check_results)
    assert meta("augmented_images", "n_images") == meta("ruler", "n_train") + meta("ruler", "n_heldout")  # the validated images
    assert meta("generator", "steps") == 6
    assert meta("ruler", "n_heldout") == round(0.2 * (meta("ruler", "n_train") + meta("ruler", "n_heldout"))) and meta("ruler", "fid_floor") > 0
    assert results["evaluation"].check_results[0].check_name == "check_promotable"
    assert 0 <= meta("evaluation", "precision") <= 1


@pytest.mark.slow
def test_checks_are_evaluated_per_scenario_and_only_where_they_run(tmp_path):
    """An expectation check belongs to the scenarios whose files list it: a digits run
    evaluates digits' own expectations, each for the digits partition, and leaves the
    others (declared for other scenarios) unevaluated instead of reporting a pass."""
    from assets.validation import SUMMARY_CHECK, expectation_checks
    from pipelines.scenario import load_scenario
    from pipelines.steps.validate import check_names

    path = tiny_scenario(tmp_path / "scenarios")
    own = set(check_names(load_scenario(path)))
    _CHECKS = expectation_checks()  # every scenario file of the project declares its own
    foreign = set(_CHECKS) - own
    assert foreign, "the shipped scenarios declare checks digits does not have"
    selection = [a for a in defs.assets if a.key.to_user_string() in ("ingested_images", "validated_images")]
    with dg.DagsterInstance.ephemeral() as instance:
        res = dg.materialize(selection, partition_key="digits", resources={"project": project(tmp_path)}, instance=instance)
        evaluations = res.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == (own & set(_CHECKS)) | {SUMMARY_CHECK}
        assert {e.partition for e in evaluations} == {"digits"}
        for name in foreign:
            (record,) = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey("validated_images"), name), limit=1)
            assert record.status.value == "PLANNED" and record.partition == "digits"  # never evaluated, so never "passed"


def test_scenario_lock_serializes_writers(tmp_path):
    """A second writer of the same scenario waits for the first; another scenario does not."""
    import multiprocessing as mp

    from pipelines.locks import scenario_lock
    from pipelines.paths import Roots, ScenarioPaths

    paths = ScenarioPaths("digits", Roots.under(tmp_path))
    ctx = mp.get_context("spawn")
    with scenario_lock(paths):
        same = ctx.Process(target=_hold_lock, args=(str(tmp_path), "digits"))
        other = ctx.Process(target=_hold_lock, args=(str(tmp_path), "faces"))
        same.start()
        other.start()
        other.join(60)
        assert other.exitcode == 0  # a different scenario is not blocked
        same.join(2)
        assert same.is_alive()  # the same scenario waits
    same.join(60)
    assert same.exitcode == 0


def _hold_lock(base: str, name: str) -> None:
    from pipelines.locks import scenario_lock
    from pipelines.paths import Roots, ScenarioPaths

    with scenario_lock(ScenarioPaths(name, Roots.under(base))):
        pass


@pytest.mark.slow
def test_whole_chain_materializes_and_reports(tmp_path):
    tiny_scenario(tmp_path / "scenarios")
    res = dg.materialize(list(defs.assets), partition_key="digits", resources={"project": project(tmp_path)}, raise_on_error=False)
    assert res.success
    mats = {e.materialization.asset_key.to_user_string(): e.materialization for e in res.get_asset_materialization_events()}
    assert sorted(mats) == sorted(ASSETS)
    ev = mats["evaluation"].metadata
    base = tmp_path / "base"
    fid = json.loads((base / "metrics/digits.json").read_text())["fid"]
    assert ev["fid"].value == round(fid, 4) and fid > 0  # the metrics file's FID, shown in Dagster
    assert 0.0 <= ev["membership_auc"].value <= 1.0 and "0.5 = the attack cannot tell" in ev["membership_auc_95ci"].value
    assert ev["differential_privacy"].value == "not trained with differential privacy"
    assert mats["generator"].metadata["differential_privacy"].value == "off"
    assert mats["generator"].metadata["profile"].value.startswith("cpu ")  # no _project.yaml: the default budget
    assert "data:image/png;base64," in ev["samples"].value
    assert "data:image/png;base64," in mats["augmented_images"].metadata["preview"].value
    assert "data:image/png;base64," in mats["generator"].metadata["loss_curve"].value
    assert mats["generator"].tags.get("dagster/data_version") == mats["generator"].metadata["dvc_md5"].value
    checks = {c.check_name: c.passed for c in res.get_asset_check_evaluations()}
    assert checks["check_blocking_expectations"] and checks["check_promotable"]
    # a step run by DVC is recorded with the same metadata, built from the same files
    from assets.record import step_check_evaluations, step_metadata
    from pipelines.registry import ASSET_STEPS

    lineage_keys = {"dvc_md5", "dvc_stage", "dvc", "git_commit"}
    for step, st in ASSET_STEPS.items():
        assert set(step_metadata(step, "digits", base)) == set(mats[st.asset].metadata) - lineage_keys, step
    by_dvc = {c["check_name"]: c["passed"] for step in ASSET_STEPS for c in step_check_evaluations(step, "digits", base)}
    assert by_dvc == checks
    for p in ("data/digits/ingested/table.csv", "data/digits/validated/report.json", "data/digits/augmented/pipeline.json", "models/digits/generator.safetensors", "models/digits/eval/samples.png", "metrics/digits.json"):
        assert (base / p).is_file(), p


@pytest.mark.slow
def test_failing_blocking_expectation_stops_training_and_names_the_reason(tmp_path):
    raw = yaml.safe_load((Path("scenarios/digits.yaml")).read_text())
    expectations = [{"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "mean", "min_value": 0.0, "max_value": 0.05}}]
    tiny_scenario(tmp_path / "scenarios", validation={**raw["validation"], "expectations": expectations})
    res = dg.materialize(list(defs.assets), partition_key="digits", resources={"project": project(tmp_path)}, raise_on_error=False)
    assert not res.success
    done = {e.materialization.asset_key.to_user_string() for e in res.get_asset_materialization_events()}
    assert "generator" not in done and "augmented_images" not in done
    checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
    assert not checks["expect_column_values_to_be_between__mean"].passed
    failed = checks["check_blocking_expectations"]
    assert not failed.passed
    assert "expect_column_values_to_be_between__mean" in failed.metadata["failed"].value
    assert "builtin:digits#" in failed.metadata["failed"].value  # names the offending rows
    assert not (tmp_path / "base/data/digits/validated/images/index.json").exists()
    assert not (tmp_path / "base/models/digits/generator.safetensors").exists()


def test_sensor_fires_once_per_change_of_the_raw_folder(tmp_path):
    tiny_scenario(tmp_path / "scenarios", data={"source": "folder"})
    raw = tmp_path / "base/data/digits/raw"
    res = project(tmp_path)

    def tick(cursor):
        with dg.build_sensor_context(cursor=cursor, resources={"project": res}) as ctx:
            out = defs.resolve_sensor_def("raw_data_sensor")(ctx)
        return [r.partition_key for r in out.run_requests], out.cursor

    reqs, cursor = tick(None)
    assert reqs == []  # no folder yet: nothing to do
    raw.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "__init__.py", raw / "a.png")
    reqs, cursor = tick(cursor)
    assert reqs == ["digits"]
    assert tick(cursor)[0] == []  # unchanged folder: no run
    (raw / "b.png").write_bytes(b"new")
    reqs, cursor = tick(cursor)
    assert reqs == ["digits"]
    (raw / "b.png").unlink()
    reqs, cursor = tick(cursor)
    assert reqs == ["digits"]
    assert tick(cursor)[0] == []


def test_schedule_asks_for_one_run_per_scenario():
    with dg.build_schedule_context(resources={"project": ScenarioGanResource()}, scheduled_execution_time=datetime.datetime(2026, 11, 30, 3, 0)) as ctx:
        requests = defs.resolve_schedule_def("weekly_retrain")(ctx)
    keys = sorted(r.partition_key for r in requests)
    assert keys == sorted(defs.resolve_job_def("scenario_chain").partitions_def.get_partition_keys())
    assert len(set(r.run_key for r in requests)) == len(keys)


@pytest.mark.slow
def test_cli_materializes_the_chain_for_the_smallest_scenario(tmp_path):
    tiny_scenario(tmp_path / "scenarios")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"resources": {"project": {"config": {"base_dir": str(tmp_path / "base"), "scenarios_dir": str(tmp_path / "scenarios")}}}}))
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "NO_ALBUMENTATIONS_UPDATE": "1"}
    (tmp_path / "home").mkdir()
    cmd = [str(dagster), "asset", "materialize", "-m", "assets.definitions", "--select", "*", "--partition", "digits", "-c", str(config)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    assert (tmp_path / "base/metrics/digits.json").is_file()
    print(f"dagster asset materialize: {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_main_job_command_runs_a_scenario_and_records_it(tmp_path):
    """`python -m assets.run` (the README's main job) on a tiny scenario."""
    tiny_scenario(tmp_path / "scenarios")
    cmd = [sys.executable, "-m", "assets.run", "digits", "--scenarios-dir", str(tmp_path / "scenarios"), "--base-dir", str(tmp_path / "base"), "--home", str(tmp_path / "home")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== digits: done in" in proc.stdout and "promote: True" in proc.stdout
    assert (tmp_path / "base/models/digits/eval/samples.png").is_file()
    runs = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    try:
        assert [r.status for r in runs.get_runs()] == [dg.DagsterRunStatus.SUCCESS]  # the UI will show it
    finally:
        runs.dispose()
    unknown = subprocess.run(cmd[:3] + ["nope", "--scenarios-dir", str(tmp_path / "scenarios")], capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 2 and "nope" in unknown.stderr
