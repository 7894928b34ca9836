"""The model card beside each trained model: what it says, that its links resolve, that
it is byte-identical for identical inputs, and the git commit line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.dvcio import dvc_hash
from pipelines.lineage import NOT_A_GIT_CHECKOUT, code_version
from pipelines.model_card import MODEL_CARD_FILE, render_model_card
from pipelines.paths import Roots, ScenarioPaths
from pipelines.scenario import load_scenario, parse_scenario

from .conftest import require
from .dagster_support import TINY_DIGITS, tiny_scenario


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, one_torch_thread):
    """The five steps on a tiny digits scenario: (scenario, paths, EvaluationResult)."""
    from pipelines.steps.augment import augment
    from pipelines.steps.evaluate import evaluate
    from pipelines.steps.ingest import ingest
    from pipelines.steps.ruler import build_ruler
    from pipelines.steps.train import train
    from pipelines.steps.validate import require_passed, validate

    tmp = tmp_path_factory.mktemp("card")
    # an op on D's input, so the card's "what training saw" has something to say
    affine = {"name": "Affine", "params": {"translate_percent": [-0.06, 0.06], "scale": [0.95, 1.05], "p": 0.5}}
    scenario = load_scenario(tiny_scenario(tmp / "scenarios", augmentation={"invariances": [], "transforms": [affine]}))
    paths = ScenarioPaths(scenario.name, Roots.under(tmp / "base"))
    ingest(scenario, paths)
    require_passed(validate(scenario, paths))
    augment(scenario, paths)
    build_ruler(scenario, paths)
    train(scenario, paths, progress=False, profile="cpu")
    return scenario, paths, evaluate(scenario, paths)


def test_card_describes_the_model_from_the_files_of_the_run(evaluated):
    scenario, paths, result = evaluated
    card = paths.model / MODEL_CARD_FILE
    assert result.model_card == card and card.is_file()
    text = card.read_text(encoding="utf-8")
    metrics = json.loads(paths.metrics.read_text())
    assert text.startswith("# Model card: digits (handwriting)\n")
    # the real numbers of metrics/digits.json, in the metrics table
    assert f"| FID | {metrics['fid']:.4f} | {metrics['fid_floor']:.4f} |" in text
    assert f"| FID / floor | {metrics['fid_over_floor']:.4f} |" in text
    assert f"`{metrics['model_sha256']}`" in text
    # DVC's hashes of the data and of the model
    for d in (paths.ingested, paths.validated, paths.augmented, paths.model / "generator.safetensors"):
        assert f"`{dvc_hash(d)}`" in text
    # data, validation, augmentation, parameters, training
    split = json.loads((paths.model / "split.json").read_text())
    assert f"Images ingested: {TINY_DIGITS}" in text and f"Held out for evaluation: {len(split['heldout_originals'])} original images" in text
    assert "**Passed**" in text and "| `expect_column_values_to_be_between` | `{\"column\": \"mean\"" in text
    # what training saw: digits declare no symmetry, so Affine acts on D's input
    assert "**Real images** (none)" in text
    assert "- `affine` (p=0.5, rotate 0.0, scale [0.95, 1.05], translate 0.06)" in text
    assert "| 0 | `Affine` | discriminator |" in text
    assert "Trained with the `cpu` profile (`profile` in scenarios/_project.yaml, a parameter in dvc.lock): the scenario's `gan` block." in text and "  steps: 6\n" in text and "  width: 8\n" in text
    assert "- Steps: 6 (96 images seen)" in text
    assert "Near-copy share:" in text and "**Promoted**: meets every criterion of the bar" in text
    # every check of the bar, with the model's value (the scenario's lenient test bar)
    assert f"| realism | sharpness (fine detail of samples / of reals) | {metrics['sharpness_ratio']:.3f} | >= 0.000 | ok |" in text
    assert text.index("## Promotion") < text.index("## Data")  # the verdict comes first
    # the sample grids, linked relative to the card
    for link in ("](eval/samples.png)", "](eval/interpolation.png)"):
        assert link in text
        assert (card.parent / link[2:-1]).is_file()
    # how to get it back
    for cmd in ("dvc repro evaluate@digits", "dvc pull --with-deps evaluate@digits", "python -m assets.run digits"):
        assert cmd in text
    assert f"Code: {NOT_A_GIT_CHECKOUT}" in text  # the tmp project is no git checkout
    # nothing of the machine it ran on
    base = paths.roots.data.parent
    assert str(base) not in text and str(base.resolve()) not in text and "/tmp" not in text


def test_card_is_byte_identical_for_identical_inputs(evaluated, tmp_path):
    from pipelines.steps.evaluate import evaluate

    scenario, paths, result = evaluated
    first = result.model_card.read_bytes()
    again = evaluate(scenario, paths)
    assert again.model_card.read_bytes() == first
    # the same files in another directory: the same card (no absolute paths)
    moved = tmp_path / "elsewhere"
    shutil.copytree(paths.roots.data.parent, moved)
    elsewhere = ScenarioPaths(scenario.name, Roots.under(moved))
    m = again.metrics
    assert render_model_card(scenario, elsewhere, m, m["quality"], m["memorization"], m["verdict"], m["privacy"]).encode("utf-8") == first


def test_card_names_the_budget_and_why_a_model_is_not_promoted(evaluated):
    scenario, paths, result = evaluated
    m = result.metrics
    raw = scenario.model_dump(mode="json")

    def variant(cpu_steps: int, gpu_steps: int):
        gan = {"model": raw["gan"]["model"], "train": {**raw["gan"]["train"], "steps": cpu_steps}}
        return parse_scenario({**raw, "gan": gan, "gpu": {"train": {"steps": gpu_steps}}})

    gpu_text = render_model_card(variant(100, 6), paths, m, m["quality"], m["memorization"], m["verdict"])
    assert "Trained with the GPU budget" in gpu_text
    other = render_model_card(variant(100, 200), paths, m, m["quality"], m["memorization"], m["verdict"])
    assert "neither of the scenario's budgets" in other and "`train.steps`" in other

    # The default bar refuses a six-step model, naming each failed criterion.
    from gan_core.verdict import Bar, judge

    v = judge(m, Bar())
    assert not v.passed and "fidelity" in v.failed_criteria
    failed = {**m, "promote": False, "promote_reasons": v.reasons, "failed_criteria": v.failed_criteria}
    text = render_model_card(scenario, paths, failed, m["quality"], m["memorization"], v.to_dict())
    assert f"**Not promoted**: fails {', '.join(v.failed_criteria)}." in text
    assert f"| fidelity | FID / floor | {m['fid_over_floor']:.3f} | <= 4.000 | **fails** |" in text


def test_card_says_what_is_missing_instead_of_failing(evaluated, tmp_path):
    scenario, paths, result = evaluated
    moved = tmp_path / "partial"
    shutil.copytree(paths.roots.data.parent, moved)
    partial = ScenarioPaths(scenario.name, Roots.under(moved))
    shutil.rmtree(partial.ingested)
    m = result.metrics
    text = render_model_card(scenario, partial, m, m["quality"], m["memorization"], m["verdict"])
    assert "_Not recorded: `data/digits/ingested/manifest.json` is missing" in text
    assert "| ingested | `data/digits/ingested` | _missing_ |" in text


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_code_version_is_not_a_git_checkout_outside_git(tmp_path):
    assert code_version(tmp_path) == NOT_A_GIT_CHECKOUT
    assert code_version(tmp_path / "does-not-exist") == NOT_A_GIT_CHECKOUT


def require_git() -> None:
    require(shutil.which("git"), "git", "install it: apt-get install -y git")


def test_code_version_names_the_commit_and_uncommitted_changes(tmp_path):
    require_git()
    repo = tmp_path / "project"
    (repo / "metrics").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "metrics/digits.json").write_text("{}\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    outputs = (repo / "data", repo / "models", repo / "metrics")
    assert code_version(repo, ignore=outputs) == head
    # untracked files and the pipeline's own outputs are not changes to the code
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "metrics/digits.json").write_text('{"fid": 1}\n')
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert code_version(repo, ignore=outputs) == head
    (repo / "code.py").write_text("x = 2\n")
    assert code_version(repo, ignore=outputs) == f"{head} (+ uncommitted changes)"
    # from a subdirectory of the checkout as well
    assert code_version(repo / "metrics", ignore=outputs) == f"{head} (+ uncommitted changes)"


def test_card_of_a_git_project_names_the_commit(evaluated, tmp_path):
    require_git()
    scenario, paths, result = evaluated
    repo = tmp_path / "project"
    shutil.copytree(paths.roots.data.parent, repo)
    (repo / "README.md").write_text("project\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    m = result.metrics
    text = render_model_card(scenario, ScenarioPaths(scenario.name, Roots.under(repo)), m, m["quality"], m["memorization"], m["verdict"])
    assert f"Code: git commit {head}; check it out" in text
    # the parameters block is YAML for the config the model was trained with
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block)["train"]["steps"] == 6
