"""Scenarios are isolated: a scenario file that cannot be used, an empty data folder or a
failed validation stops its own scenario only — through the stage command, `dvc repro`,
the Dagster definitions, runs, the schedule and the sensor."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.scenario import load_each, scenario_names

from .dagster_support import tiny_scenario
from .dvc_support import dvc, make_project

# What a user gets wrong in a scenario file, and a word each error must contain besides
# the file's name (the key, or what is refused).
BROKEN = {
    "tagged": ("description: !!python/object/apply:os.system ['true']\n", "tag"),
    "typo": ({"augmentaton": {"transforms": []}}, "augmentaton"),
    "wrongtype": ({"image": {"size": "large"}}, "image.size"),
    "outside": ({"data": {"source": "folder", "path": "../../etc"}}, "data.path"),
}


def scenario_file(directory: Path, name: str, base: str = "digits", **overrides) -> Path:
    """``<directory>/<name>.yaml``: the tiny copy of the shipped scenario ``base``."""
    raw = yaml.safe_load(tiny_scenario(directory / ".base", base, **overrides).read_text())
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": name}, sort_keys=False))
    return path


def write_broken(directory: Path, name: str, fault: str | None = None) -> Path:
    """``<directory>/<name>.yaml``: the tiny digits scenario with the fault of
    :data:`BROKEN` ``[fault or name]``."""
    change, _ = BROKEN[fault or name]
    path = scenario_file(directory, name)
    raw = yaml.safe_load(path.read_text())
    if isinstance(change, str):  # not valid YAML for safe_load: written as text
        path.write_text(change + yaml.safe_dump(raw, sort_keys=False))
    else:
        for key, value in change.items():
            raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_load_each_keeps_the_good_files_and_names_the_fault_of_each_bad_one(tmp_path):
    tiny_scenario(tmp_path, "digits")
    for name in BROKEN:
        write_broken(tmp_path, name)
    (tmp_path / "Bad Name.yaml").write_text("name: x\n")
    good, broken = load_each(tmp_path)
    assert sorted(good) == ["digits"]
    assert sorted(broken) == sorted([*BROKEN, "Bad Name"])
    for name, (_, word) in BROKEN.items():
        assert f"{name}.yaml" in broken[name] and word in broken[name], broken[name]
    assert "rename the file" in broken["Bad Name"]
    # partitions come from the file names alone: the bad files' scenarios stay visible
    assert scenario_names(tmp_path) == sorted(["digits", *BROKEN])


def _project(tmp_path: Path):
    from assets.common import ScenarioGanResource

    return ScenarioGanResource(base_dir=str(tmp_path / "base"), scenarios_dir=str(tmp_path / "scenarios"))


def test_schedule_and_sensor_run_the_good_scenarios_and_log_the_broken_one(tmp_path, capfd):
    """Partition names of the project (digits, faces, histology, textures): faces is a
    broken file, textures a folder scenario with new data, histology missing."""
    from assets.definitions import build_definitions

    scen = tmp_path / "scenarios"
    tiny_scenario(scen, "digits")
    write_broken(scen, "faces", "tagged")
    scenario_file(scen, "textures", "textures", data={"source": "folder"})
    raw = tmp_path / "base/data/textures/raw"
    raw.mkdir(parents=True)
    (raw / "a.png").write_bytes(b"not read by the sensor")
    project = _project(tmp_path)
    defs = build_definitions(tmp_path / "base", scen)
    weekly_retrain, raw_data_sensor = defs.resolve_schedule_def("weekly_retrain"), defs.resolve_sensor_def("raw_data_sensor")

    with dg.build_schedule_context(resources={"project": project}, scheduled_execution_time=datetime(2026, 11, 30, 3, tzinfo=timezone.utc)) as ctx:
        requests = weekly_retrain(ctx)
    assert sorted(r.partition_key for r in requests) == ["digits", "textures"]
    log = capfd.readouterr().err  # the tick's log (Dagster's logger writes to stderr)
    assert "scenario 'faces' skipped" in log and "faces.yaml" in log and "tag" in log

    with dg.build_sensor_context(resources={"project": project}) as ctx:
        result = raw_data_sensor(ctx)
    assert [r.partition_key for r in result.run_requests] == ["textures"]
    assert set(json.loads(result.cursor)) == {"textures"}  # the broken one keeps no cursor: it runs once fixed
    assert "scenario 'faces' skipped" in capfd.readouterr().err


def test_a_broken_empty_or_failing_scenario_fails_its_own_run_and_the_next_one_runs(tmp_path):
    """Real Dagster runs, one per scenario as the UI, the schedule and `assets.run`
    start them: a broken file, an empty data folder and a failed validation each fail
    their own run with a message that says what to fix; a good scenario's run after them
    materializes everything."""
    from assets.run import failure_messages, materialize_scenario

    scen = tmp_path / "scenarios"
    base = tmp_path / "base"
    tiny_scenario(scen, "digits")
    write_broken(scen, "faces", "typo")
    scenario_file(scen, "textures", "textures", data={"source": "folder"})
    (base / "data/textures/raw").mkdir(parents=True)  # empty
    scenario_file(scen, "histology", "histology", validation={"min_images": 100000, "expectations": []})

    def failure(result) -> str:
        return "\n".join(failure_messages(result))

    with dg.DagsterInstance.ephemeral() as instance:
        outcomes = {n: materialize_scenario(n, base_dir=base, scenarios_dir=scen, instance=instance) for n in ("faces", "textures", "histology", "digits")}
    assert not outcomes["faces"].success and "faces.yaml" in failure(outcomes["faces"]) and "augmentaton" in failure(outcomes["faces"])
    assert not outcomes["textures"].success and "data/textures/raw" in failure(outcomes["textures"])
    assert not outcomes["histology"].success
    assert outcomes["digits"].success
    assert (base / "metrics/digits.json").is_file()
    assert not (base / "models/histology/generator.safetensors").exists()  # a failed validation trains nothing


@pytest.mark.slow
def test_dvc_repro_and_the_dagster_definitions_with_broken_scenarios(tmp_path):
    """In a copy of the project whose dvc.yaml lists a good scenario and four bad ones:
    `dvc repro --keep-going` runs the good chain to the end and fails each bad one with
    its file named; the definitions load with every scenario as a partition."""
    p = make_project(tmp_path / "project", {"digits": {}})
    for name in ("tagged", "typo"):
        write_broken(p / "scenarios", name)
    scenario_file(p / "scenarios", "empty", data={"source": "folder"})
    (p / "data/empty/raw").mkdir(parents=True)  # there, and empty
    scenario_file(p / "scenarios", "failing", validation={"min_images": 100000, "expectations": []})
    gen = subprocess.run([str(p / ".venv/bin/python"), "-m", "pipelines.registry"], cwd=p, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0 and "tagged.yaml" in gen.stderr and "typo.yaml" in gen.stderr, gen.stderr  # listed, and named as broken
    spec = yaml.safe_load((p / "dvc.yaml").read_text())
    assert next(v["scenarios"] for v in spec["vars"] if "scenarios" in v)["empty"] == {"source": "data/empty/raw"}

    run = dvc(p, "repro", "--keep-going", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0  # the failures are reported, not hidden
    for step in ("ingest", "validate", "augment", "ruler", "train", "evaluate"):
        assert f"Running stage '{step}@digits'" in out, out[-3000:]
    assert (p / "metrics/digits.json").is_file()
    assert "scenarios/tagged.yaml" in out and "augmentaton" in out and "typo.yaml" in out
    assert "data/empty/raw" in out and "min_images" in out, out[-3000:]
    # the good scenario is done: a second repro of it has nothing to do
    again = dvc(p, "repro", "evaluate@digits")
    assert "Running stage" not in again.stdout

    probe = (
        "import json, dagster as dg\n"
        "from assets.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "print(json.dumps(sorted(defs.resolve_job_def('scenario_chain').partitions_def.get_partition_keys())))\n"
    )
    keys = subprocess.run([str(p / ".venv/bin/python"), "-c", probe], cwd=p, capture_output=True, text=True, timeout=300)
    assert keys.returncode == 0, keys.stderr[-3000:]
    assert json.loads(keys.stdout.strip().splitlines()[-1]) == ["digits", "empty", "failing", "tagged", "typo"]
