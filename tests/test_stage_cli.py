"""The same steps outside Dagster: the two commands of a DVC stage (`python -m
pipelines.stage <step> <scenario>`, then the record of `python -m assets.record`)
write what the assets write and record what a Dagster run records; the code a step
imports while it runs is code its DVC stage depends on; a failed blocking expectation is
a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gan_core.shards import open_images

from .dagster_support import TINY_DIGITS, tiny_scenario

ROOT = Path(__file__).parents[1]


ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def stage(step: str, tmp_path: Path, name: str = "digits", *importtime: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *importtime, "-m", "pipelines.stage", step, name, "--base-dir", str(tmp_path / "base"), "--scenarios-dir", str(tmp_path / "scenarios")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)


def project_files_imported(stderr: str) -> set[str]:
    """The project's files a process imported, from its ``-X importtime`` report (every
    import, also those inside functions, when it happens)."""
    from pipelines.registry import _module_file

    out = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            f = _module_file(module, ROOT)
            if f is not None:
                out.add(f.relative_to(ROOT).as_posix())
    return out


@pytest.mark.slow
def test_steps_run_in_order_and_match_the_asset_layout(tmp_path, monkeypatch):
    tiny_scenario(tmp_path / "scenarios")
    out = {}
    from pipelines.registry import STEPS, code_closure

    for step, st in STEPS.items():
        proc = stage(step, tmp_path, "digits", "-X", "importtime")
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[step] = json.loads(proc.stdout.splitlines()[-1])
        # everything of the project the step ran is a dependency of its DVC stage (and in
        # its Dagster code version); the stage command imports no Dagster
        imported = project_files_imported(proc.stderr)
        runner = set(code_closure("pipelines.stage"))  # the command itself (dispatch, lock): it writes no output
        assert imported and imported <= {*st.code_files(), *st.not_code, *runner}, (step, imported - set(st.code_files()) - runner)
        assert not any(line.rsplit("|", 1)[1].strip().startswith(("dagster", "assets")) for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line), step
        if st.asset:
            # the stage's second command, `python -m assets.record` (run by DVC in tests/test_dvc.py), here in-process
            from assets.record import record

            with monkeypatch.context() as mp:
                mp.setenv("DAGSTER_HOME", str(tmp_path / "base/.dagster"))
                assert record(step, "digits", tmp_path / "base", entry_point="cli")
    assert out["ingest"]["n_images"] == TINY_DIGITS and out["validate"]["passed"] is True
    assert out["train"]["steps"] == 6
    n_validated = len(open_images(tmp_path / "base/data/digits/validated/images"))
    assert out["ruler"]["n_train"] + out["ruler"]["n_heldout"] == n_validated and out["ruler"]["n_heldout"] == round(0.2 * n_validated)
    base = tmp_path / "base"
    metrics = json.loads((base / "metrics/digits.json").read_text())
    assert metrics["model_sha256"] == out["train"]["model_sha256"]
    assert (base / "models/digits/eval/samples.png").is_file()
    # A finished run keeps its generator and loss table, not its resume checkpoints.
    model = base / "models/digits"
    assert not (model / "checkpoints").exists()
    loss = (model / "loss.csv").read_text().splitlines()
    logged = [json.loads(x) for x in (model / "metrics.jsonl").read_text().splitlines()]
    assert len(loss) == len(logged) + 1 and loss[0].split(",")[:1] == ["step"]
    assert [int(r.split(",")[0]) for r in loss[1:]] == [r["step"] for r in logged]
    # Training again from scratch gives the same bytes (CPU determinism).
    again = stage("train", tmp_path)
    assert json.loads(again.stdout.splitlines()[-1])["model_sha256"] == out["train"]["model_sha256"]
    # The budget is the project's profile, never the hardware's: `gpu` lays the scenario's gpu: block over gan:.
    tiny_scenario(tmp_path / "scenarios", gpu={"train": {"steps": 8}})
    (tmp_path / "scenarios/_project.yaml").write_text("profile: gpu\n")
    gpu = stage("train", tmp_path)
    assert json.loads(gpu.stdout.splitlines()[-1])["steps"] == 8 and json.loads(gpu.stdout.splitlines()[-1])["profile"] == "gpu"
    assert json.loads((model / "summary.json").read_text())["profile"] == "gpu"
    (tmp_path / "scenarios/_project.yaml").write_text("profile: tpu\n")
    bad = stage("train", tmp_path)
    assert bad.returncode == 2 and "_project.yaml" in bad.stderr and "profile" in bad.stderr
    (tmp_path / "scenarios/_project.yaml").unlink()
    assert stage("train", tmp_path).returncode == 0  # the default profile: cpu
    # Every step is in the Dagster instance of the base directory, with DVC's hash as data version.
    from pipelines.dvcio import data_version

    with monkeypatch.context() as env:  # DAGSTER_HOME for this block only
        env.setenv("DAGSTER_HOME", str(base / ".dagster"))
        import dagster as dg

        from pipelines.registry import ASSET_STEPS

        with dg.DagsterInstance.get() as instance:
            for step, asset in ((s, st.asset) for s, st in ASSET_STEPS.items()):
                rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=["digits"]), limit=1).records[0]
                mat = rec.event_log_entry.asset_materialization
                assert mat.tags["dagster/data_version"] == data_version(step, "digits", base)
                assert mat.metadata["entry_point"].value == "cli" and mat.metadata["dvc_stage"].value == f"{step}@digits"
                if asset in ("augmented_images", "generator", "evaluation"):  # what a Dagster run shows, grids and curves included
                    shown = {"augmented_images": "preview", "generator": "loss_curve", "evaluation": "samples"}[asset]
                    assert "data:image/png;base64," in mat.metadata[shown].value, asset
            # the checks a Dagster run evaluates, for the same partition, from the step's own files
            for asset, check in (("validated_images", "check_blocking_expectations"), ("validated_images", "expect_column_values_to_be_unique__sha256"), ("evaluation", "check_promotable")):
                (record,) = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey(asset), check), limit=1)
                assert record.status.value == "SUCCEEDED" and record.partition == "digits", (check, record.status)
                assert record.event.dagster_event.event_specific_data.passed


def stage_in_process(step: str, tmp_path: Path, capsys, name: str = "digits") -> tuple[int, str]:
    """The stage command's ``main`` in this process (its exit code and stderr): for the
    exit codes, a subprocess proves nothing more."""
    from pipelines.stage import main

    code = main([step, name, "--base-dir", str(tmp_path / "base"), "--scenarios-dir", str(tmp_path / "scenarios")])
    return code, capsys.readouterr().err


def test_failed_validation_exits_non_zero_and_names_the_expectation(tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "scenarios/digits.yaml").read_text())
    bad = [{"expectation": "expect_column_values_to_be_between", "kwargs": {"column": "mean", "min_value": 0.0, "max_value": 0.05}}]
    tiny_scenario(tmp_path / "scenarios", validation={**raw["validation"], "min_images": 50, "expectations": bad}, data={"source": "builtin", "builtin": "digits", "limit": 200})
    assert stage_in_process("ingest", tmp_path, capsys)[0] == 0
    code, err = stage_in_process("validate", tmp_path, capsys)
    assert code == 1
    assert "expect_column_values_to_be_between" in err and "mean" in err
    assert stage_in_process("augment", tmp_path, capsys)[0] == 1  # nothing validated to augment


def test_bad_scenario_is_exit_2_with_the_file_named(tmp_path, capsys):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios/digits.yaml").write_text("name: digits\ndata: {source: web}\n")
    code, err = stage_in_process("ingest", tmp_path, capsys)
    assert code == 2 and "digits.yaml" in err and "data.source" in err
