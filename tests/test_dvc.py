"""DVC's entry point, with the real DVC of the project's tool environment: dvc.yaml over
the scenarios, reruns of only what changed, experiments, reproducible models, one
lineage with Dagster, push/clone/pull restore, and waiting on DVC's lock."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.dvcio import dvc_busy, dvc_hash, record_stage
from pipelines.locks import step_lock
from pipelines.paths import Roots, ScenarioPaths
from pipelines.registry import ASSET_STEPS, STEPS
from pipelines.scenario import SCENARIO_DIR, load_all

from .dvc_support import DVC, PROJECT_ROOT, dvc, git, lock_md5, make_project, require_dvc

def test_dvc_reads_the_pipeline():
    require_dvc()
    p = subprocess.run([str(DVC), "stage", "list", "--all"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    listed = {line.split()[0] for line in p.stdout.splitlines() if line.strip()}
    assert {f"{s}@{n}" for s in STEPS for n in load_all(SCENARIO_DIR)} <= listed


def _write_pngs(folder: Path, start: int, n: int) -> None:
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    images = load_digits().images
    for i in range(start, start + n):
        Image.fromarray((images[i] * 16).clip(0, 255).astype(np.uint8)).resize((16, 16)).save(folder / f"sprite_{i:04d}.png")


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two tiny scenarios: `digits` (built-in source) and `sprites` (a folder of PNGs
    tracked with `dvc add`), reproduced once and committed. Built once for the module:
    every test leaves it committed and `dvc status` up to date (a test may commit a new
    state, as the new-images test does), and relies on nothing else an earlier test did;
    the records in its Dagster instance are not restored, so a test reading them first
    brings them in sync (see the restore test)."""
    root = tmp_path_factory.mktemp("dvc")
    folder = {"_from": "digits", "data": {"source": "folder"}, "validation": {"min_images": 20, "expectations": []}}
    p = make_project(root / "project", {"digits": {}, "sprites": folder})
    _write_pngs(p / "data/sprites/raw", 0, 60)
    dvc(p, "add", "-q", "data/sprites/raw")
    first = dvc(p, "repro")
    assert _ran(first.stdout) == {f"{s}@{n}" for s in STEPS for n in ("digits", "sprites")}
    git(p, "add", "-A")
    git(p, "commit", "-q", "-m", "first repro")
    return p


@pytest.mark.slow
def test_noop_repro_does_nothing_and_says_so(project):
    out = dvc(project, "repro").stdout
    assert _ran(out) == set() and "Data and pipelines are up to date" in out
    assert "up to date" in dvc(project, "status").stdout
    # what dvc.yaml declares is what DVC's reports read
    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    assert "metrics/digits.json" in json.dumps(shown) and "metrics/sprites.json" in json.dumps(shown)
    plots = json.loads(dvc(project, "plots", "show", "--json").stdout)
    assert {"models/digits/loss.csv", "models/sprites/eval/samples.png"} <= set(plots["data"])


@pytest.mark.slow
def test_forced_repro_gives_the_same_model_on_cpu(project):
    before = lock_md5(project, "train@digits", "models/digits/generator.safetensors")
    out = dvc(project, "repro", "--force", "evaluate@digits").stdout
    assert _ran(out) == {f"{s}@digits" for s in STEPS}  # really retrained, only this scenario
    assert lock_md5(project, "train@digits", "models/digits/generator.safetensors") == before
    assert dvc_hash(project / "models/digits/generator.safetensors") == before


@pytest.mark.slow
def test_new_images_rerun_only_that_scenario(project):
    model_digits = dvc_hash(project / "models/digits/generator.safetensors")
    _write_pngs(project / "data/sprites/raw", 60, 10)
    dvc(project, "add", "-q", "data/sprites/raw")
    status = dvc(project, "status", "--json").stdout
    assert set(json.loads(status)) == {"ingest@sprites"}
    out = dvc(project, "repro").stdout
    assert _ran(out) == {f"{s}@sprites" for s in STEPS if s != "params"}  # the parameters did not change
    assert json.loads((project / "data/sprites/ingested/manifest.json").read_text())["n_images"] == 70
    assert dvc_hash(project / "models/digits/generator.safetensors") == model_digits
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ten more sprites")


@pytest.mark.slow
def test_experiment_on_one_scenarios_parameter(project):
    out = dvc(project, "exp", "run", "-S", "scenarios/digits.yaml:gan.train.steps=4").stdout
    assert _ran(out) == {"params@digits", "train@digits", "evaluate@digits"}  # only training and evaluation, only digits
    assert json.loads((project / "metrics/digits.json").read_text())["steps"] == 4
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    assert len([e for rev in shown for e in (rev.get("experiments") or [])]) >= 1
    diff = json.loads(dvc(project, "params", "diff", "--json").stdout)
    change = diff["data/digits/params.yaml"]["gan.train.steps"]  # the resolved parameters the stages depend on
    assert (change["old"], change["new"]) == (6, 4)
    assert "metrics/digits.json" in dvc(project, "metrics", "diff", "--json").stdout
    # back to the committed state
    git(project, "checkout", "--", "scenarios/digits.yaml", "dvc.lock")
    dvc(project, "checkout", "-q")
    assert "up to date" in dvc(project, "status").stdout


@pytest.mark.slow
def test_an_experiment_with_differential_privacy(project):
    out = dvc(project, "exp", "run", "-S", "scenarios/digits.yaml:+gan.model.d_norm=group", "-S", "scenarios/digits.yaml:+gan.train.privacy.epsilon=8").stdout
    assert _ran(out) == {"params@digits", "train@digits", "evaluate@digits"}
    spent = json.loads((project / "models/digits/summary.json").read_text())["privacy"]
    assert spent["epsilon_budget"] == 8.0 and 0 < spent["epsilon_spent"] <= 8.0
    metrics = json.loads((project / "metrics/digits.json").read_text())
    assert metrics["differential_privacy"]["epsilon_spent"] == spent["epsilon_spent"]
    assert 0.0 <= metrics["membership_auc_ci_low"] <= metrics["membership_auc"] <= metrics["membership_auc_ci_high"] <= 1.0
    card = (project / "models/digits/MODEL_CARD.md").read_text()
    assert "## Privacy" in card and f"ε = {spent['epsilon_spent']:.3g}" in card
    lock = (project / "dvc.lock").read_text()
    assert "privacy:" in lock and "epsilon: 8" in lock  # the budget is a parameter of the model's lineage
    assert "scenarios/_project.yaml:\n        profile: cpu" in lock  # and so is the training profile
    git(project, "checkout", "--", "scenarios/digits.yaml", "dvc.lock")
    dvc(project, "checkout", "-q")
    assert "up to date" in dvc(project, "status").stdout


@pytest.mark.slow
def test_dagster_materialization_is_recorded_in_dvc_and_repro_shows_in_dagster(project, monkeypatch):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DAGSTER_HOME": str(project / ".dagster")}
    run = subprocess.run([str(project / ".venv/bin/python"), "-m", "assets.run", "digits"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    # every step of the Dagster run is in dvc.lock: nothing for DVC to do
    assert "up to date" in dvc(project, "status").stdout
    for step, st in STEPS.items():
        out = st.outputs[0].at("digits")
        assert lock_md5(project, f"{step}@digits", out) == dvc_hash(project / out)

    import dagster as dg

    from assets.definitions import defs

    with monkeypatch.context() as mp:  # DAGSTER_HOME for this block only
        mp.setenv("DAGSTER_HOME", str(project / ".dagster"))
        with dg.DagsterInstance.get() as instance:
            for step, st in ASSET_STEPS.items():
                rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(st.asset), asset_partitions=["digits"]), limit=1).records[0]
                assert rec.event_log_entry.run_id  # a Dagster run, with DVC's hash as its data version
                assert rec.event_log_entry.asset_materialization.tags["dagster/data_version"] == dvc_hash(project / st.outputs[0].at("digits"))
            # what dvc repro ran for sprites (the module fixture's repro, whatever ran since) is
            # in its history as runless events
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("generator"), asset_partitions=["sprites"]), limit=100).records
            seen = [(r.event_log_entry.run_id, getattr(r.event_log_entry.asset_materialization.metadata.get("entry_point"), "value", None)) for r in recs]
            assert ("", "dvc") in seen and all(run_id == "" for run_id, ep in seen if ep == "dvc"), seen

            # new data for digits through DVC only: Dagster marks the next asset stale
            raw = yaml.safe_load((project / "scenarios/digits.yaml").read_text())
            raw["data"]["limit"] = 900
            (project / "scenarios/digits.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            out = dvc(project, "repro", "ingest@digits").stdout
            assert _ran(out) == {"params@digits", "ingest@digits"}
            from dagster._core.definitions.data_version import StaleStatus
            from dagster._utils.test.data_versions import get_stale_status_resolver

            resolver = get_stale_status_resolver(instance, list(defs.assets))
            assert resolver.get_status(dg.AssetKey("ingested_images"), "digits") == StaleStatus.FRESH
            assert resolver.get_status(dg.AssetKey("validated_images"), "digits") == StaleStatus.STALE
    lineage = subprocess.run([str(project / ".venv/bin/python"), "-m", "assets.cli", "lineage", "digits", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert lineage.returncode == 0, lineage.stderr
    steps = {s["step"]: s for s in json.loads(lineage.stdout)["steps"]}
    assert steps["ingest"]["in_sync_with_dvc"] and steps["ingest"]["dagster"]["entry_point"] == "dvc"
    assert steps["ingest"]["params"]["data"]["limit"] == 900
    assert steps["train"]["dagster"]["run_id"] and steps["train"]["dagster_in_sync"]
    text = subprocess.run([str(Path(sys.executable).parent / "scenario-gan"), "lineage", "digits", "--base-dir", str(project)], env=env, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert steps["train"]["hash"][:12] in text.stdout and "train@digits" in text.stdout and "dvc (no Dagster run)" in text.stdout
    git(project, "checkout", "--", "scenarios/digits.yaml", "dvc.lock")
    dvc(project, "checkout", "-q")


@pytest.mark.slow
def test_sensor_skips_what_dvc_processed_and_its_run_leaves_dvc_status_clean(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DAGSTER_HOME": str(project / ".dagster")}
    # the sensor as the project's code location sees it (its partitions are the project's scenarios)
    code = (
        "import json, sys, dagster as dg\n"
        "from assets.common import ScenarioGanResource\n"
        "from assets.definitions import defs\n"
        "raw_data_sensor = defs.get_sensor_def('raw_data_sensor')\n"
        "res = ScenarioGanResource(base_dir='.', scenarios_dir='scenarios')\n"
        "cursor = sys.argv[1] or None\n"
        "with dg.build_sensor_context(cursor=cursor, resources={'project': res}) as ctx:\n"
        "    out = raw_data_sensor(ctx)\n"
        "print(json.dumps([[r.partition_key for r in out.run_requests], out.cursor]))\n"
    )

    def tick(cursor):
        p = subprocess.run([str(project / ".venv/bin/python"), "-c", code, cursor or ""], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.splitlines()[-1])

    assert "up to date" in dvc(project, "status").stdout
    reqs, cursor = tick(None)
    assert reqs == []  # switched on after `dvc repro` processed the folder: nothing to start
    before = json.loads((project / "data/sprites/ingested/manifest.json").read_text())["n_images"]
    _write_pngs(project / "data/sprites/raw", 500, 5)  # new files, no `dvc add`
    reqs, cursor = tick(cursor)
    assert reqs == ["sprites"]
    run = subprocess.run([str(project / ".venv/bin/python"), "-m", "assets.run", "sprites"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    status = dvc(project, "status").stdout
    assert "up to date" in status, status  # the raw folder's .dvc file was committed with the ingestion
    assert json.loads((project / "data/sprites/ingested/manifest.json").read_text())["n_images"] == before + 5
    assert tick(cursor)[0] == [] and tick(None)[0] == []  # processed: neither the cursor nor a fresh sensor starts it again
    lineage = subprocess.run([str(project / ".venv/bin/python"), "-m", "pipelines.lineage", "sprites", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    raw = json.loads(lineage.stdout)["raw"]
    assert raw["path"] == "data/sprites/raw" and raw["hash"] == dvc_hash(project / "data/sprites/raw") and raw["in_sync_with_dvc"]
    for i in range(500, 505):
        (project / f"data/sprites/raw/sprite_{i:04d}.png").unlink()
    git(project, "checkout", "--", "data/sprites/raw.dvc", "dvc.lock")
    dvc(project, "checkout", "-q")
    assert "up to date" in dvc(project, "status").stdout


@pytest.mark.slow
def test_what_dvc_restores_without_running_reaches_dagster(project, monkeypatch):
    """`dvc checkout` and a restore from DVC's run cache run no stage command, so no stage
    reports itself; the restore sync (the `dvc_restore_sensor`) records them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DAGSTER_HOME": str(project / ".dagster")}
    sync = "import json, dagster as dg\nfrom pathlib import Path\nfrom assets.record import sync_from_dvc\nprint(json.dumps(sync_from_dvc(Path('.'), dg.DagsterInstance.get())))\n"

    def synced() -> list[str]:
        p = subprocess.run([str(project / ".venv/bin/python"), "-c", sync], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.splitlines()[-1])

    def dagster_version(asset: str) -> tuple[str, str]:
        import dagster as dg

        with monkeypatch.context() as mp:
            mp.setenv("DAGSTER_HOME", str(project / ".dagster"))
            with dg.DagsterInstance.get() as instance:
                rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=["digits"]), limit=1).records[0]
                m = rec.event_log_entry.asset_materialization
                ep = m.metadata.get("entry_point")  # a Dagster run's materialization has none
                return m.tags["dagster/data_version"], ep.value if ep else "dagster run"

    committed = lock_md5(project, "train@digits", "models/digits/generator.safetensors")
    # Whatever Dagster was told before (the module's earlier tests restore the workspace,
    # not Dagster's records), a sync brings it to the committed state.
    synced()
    assert dagster_version("generator")[0] == committed
    dvc(project, "exp", "run", "-S", "scenarios/digits.yaml:gan.train.steps=5")  # runs: the stages report themselves
    five = lock_md5(project, "train@digits", "models/digits/generator.safetensors")
    assert dagster_version("generator")[0] == five and synced() == []
    # back to the commit: dvc checkout puts the committed model in place, no stage runs
    git(project, "checkout", "--", "scenarios/digits.yaml", "dvc.lock")
    dvc(project, "checkout", "-q")
    assert dagster_version("generator")[0] == five  # what Dagster knew
    assert set(synced()) >= {"train@digits", "evaluate@digits"}
    assert dagster_version("generator") == (committed, "dvc (restored)")
    # the same experiment again: DVC restores it from its run cache without running it
    out = dvc(project, "exp", "run", "-S", "scenarios/digits.yaml:gan.train.steps=5").stdout
    assert "cached - skipping run" in out and _ran(out) == set()
    assert set(synced()) >= {"train@digits", "evaluate@digits"}
    assert dagster_version("generator") == (five, "dvc (restored)")
    git(project, "checkout", "--", "scenarios/digits.yaml", "dvc.lock")
    dvc(project, "checkout", "-q")
    synced()
    assert "up to date" in dvc(project, "status").stdout


@pytest.mark.slow
def test_editing_a_steps_code_makes_dvc_and_dagster_name_the_same_steps(project, monkeypatch):
    """One file of the trainer's closure changes: `dvc status` names train@ of every
    scenario and nothing else, and Dagster's stale status names the generator and
    nothing else (the asset's code version is the hash of the files the stage depends
    on). Rerunning gives the same model bytes (the edit is a comment), so neither
    reruns the evaluation below it, and both are in sync again."""
    import dagster as dg
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from assets.definitions import build_definitions
    from assets.record import sync_from_dvc

    assert "up to date" in dvc(project, "status").stdout

    def stale() -> set[str]:
        defs = build_definitions(project, code_root=project)  # the copy's code, as its code location sees it
        with monkeypatch.context() as mp:
            mp.setenv("DAGSTER_HOME", str(project / ".dagster"))
            with dg.DagsterInstance.get() as instance:
                sync_from_dvc(project, instance)  # whatever DVC restored since its stages last reported
                resolver = get_stale_status_resolver(instance, list(defs.assets))
                return {st.asset for st in ASSET_STEPS.values() if resolver.get_status(dg.AssetKey(st.asset), "digits") != StaleStatus.FRESH}

    assert stale() == set()
    edited = project / "gan_core/ema.py"
    text = edited.read_text()
    model = dvc_hash(project / "models/digits/generator.safetensors")
    try:
        edited.write_text(text + "\n# a comment: the code changed\n")
        assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"train@digits", "train@sprites"}
        assert stale() == {STEPS["train"].asset} == {"generator"}
        assert _ran(dvc(project, "repro").stdout) == {"train@digits", "train@sprites"}  # same model: evaluate@ is not rerun
        assert dvc_hash(project / "models/digits/generator.safetensors") == model
        assert stale() == set()
    finally:
        edited.write_text(text)
    back = dvc(project, "repro").stdout  # the model of the original code, restored from DVC's run cache
    assert _ran(back) == set() and back.count("cached - skipping run") >= 2, back
    git(project, "checkout", "--", "dvc.lock")  # the committed state, as every test of the module leaves it
    dvc(project, "checkout", "-q")
    assert "up to date" in dvc(project, "status").stdout and stale() == set()  # the restore sync records the code version too


@pytest.mark.slow
def test_push_then_a_fresh_clone_pulls_models_and_metrics_without_retraining(project, tmp_path):
    assert "up to date" in dvc(project, "status").stdout
    dvc(project, "push", "-q")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    (clone / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (clone / ".dvc-venv").symlink_to(DVC.parents[1], target_is_directory=True)
    assert not (clone / "models/digits/generator.safetensors").exists()
    dvc(clone, "pull")
    for name in ("digits", "sprites"):
        for path in ("models/{s}/generator.safetensors", "metrics/{s}.json", "models/{s}/MODEL_CARD.md"):
            p = path.format(s=name)
            assert dvc_hash(clone / p) == dvc_hash(project / p), p
    out = dvc(clone, "repro").stdout
    assert _ran(out) == set()  # restored, nothing to retrain


@pytest.mark.slow
def test_dvc_repro_killed_while_recording_outputs_then_rerun(project):
    model = dvc_hash(project / "models/sprites/generator.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([str(DVC), "repro", "--force", "train@sprites"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith("Updating lock file") and any("Running stage 'augment@sprites'" in x for x in seen):
            os.killpg(p.pid, signal.SIGKILL)  # DVC is recording augment@sprites' outputs
            break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    # DVC rewrites dvc.lock in place: a kill at that moment can leave it cut short. DVC
    # then refuses to read it (naming it) rather than trusting it; the committed one is
    # the way back (docs/RELIABILITY.md, F3). The outputs themselves are whole (F1).
    status = dvc(project, "status", check=False)
    if status.returncode != 0:
        assert "dvc.lock" in status.stderr, status.stderr
        git(project, "checkout", "--", "dvc.lock")
    dvc(project, "repro")  # reruns what the kill left unrecorded (here: nothing differs)
    assert "up to date" in dvc(project, "status").stdout
    assert dvc_hash(project / "models/sprites/generator.safetensors") == model
    assert not list(project.glob("data/sprites/**/.*.tmp"))


@pytest.mark.slow
def test_a_dagster_run_and_dvc_repro_of_one_scenario_at_once_are_serialized(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "DAGSTER_HOME": str(project / ".dagster")}
    ui = subprocess.Popen([str(project / ".venv/bin/python"), "-m", "assets.run", "sprites"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    repro = dvc(project, "repro", "--force", "evaluate@sprites")
    out, err = ui.communicate(timeout=900)
    assert ui.returncode == 0, err[-3000:]
    assert _ran(repro.stdout) == {f"{s}@sprites" for s in STEPS}
    # whichever finished last, DVC's record and the files agree, and nothing is left to do
    assert "up to date" in dvc(project, "status").stdout
    for step, st in STEPS.items():
        for out in st.outputs:
            p = out.at("sprites")
            assert lock_md5(project, f"{step}@sprites", p) == dvc_hash(project / p), p


@pytest.mark.slow
def test_recording_waits_while_dvc_holds_its_lock(project):
    lockfile = project / ".dvc/tmp/lock"
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    result = {}
    with open(lockfile, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running `dvc repro` holds
        assert dvc_busy(project)
        t = threading.Thread(target=lambda: result.update(r=record_stage("ingest", "digits", project)))
        t.start()
        # a step outside DVC does not start either: DVC may be hashing the outputs it would rewrite
        paths = ScenarioPaths("digits", Roots.under(project))

        def step() -> None:
            with step_lock(paths, project, poll_s=0.2):
                result["step_started"] = time.monotonic()

        s = threading.Thread(target=step)
        s.start()
        time.sleep(4)
        assert t.is_alive() and not result, "dvc commit and the step should wait for DVC's lock, not fail or run"
        released = time.monotonic()
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert not dvc_busy(project)
    t.join(timeout=300)
    s.join(timeout=60)
    assert result["r"].recorded
    assert result["step_started"] >= released
    assert "up to date" in dvc(project, "status").stdout
