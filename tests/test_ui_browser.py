"""The real Dagster UI in headless Chromium (Playwright), started as users start it
(``python -m assets.ui``): the asset graph shows the six stages, an asset shows the
scenario partitions, a materialization of the whole chain for ``digits`` launched from
the UI succeeds, and the evaluation's sample grid renders from its metadata.

The run writes into a temporary base dir and reads a tiny copy of the ``digits``
scenario: both are given as run config of the ``project`` resource, typed into the
launch dialog's config editor, as a user would. Screenshots of every stage go to
``$UI_ARTIFACTS`` (default: the test's tmp dir; the path is printed).

Needs Debian's ``chromium`` and ``playwright==1.65.2`` (no downloaded browser); skips
when either is missing, and fails instead under CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from .conftest import require

# Under CI (CI set, or SCENARIO_GAN_REQUIRE_BROWSER=1 as .ci/run sets) a missing
# playwright or chromium fails the test instead of skipping it.
BROWSER_FLAG = "SCENARIO_GAN_REQUIRE_BROWSER"

try:
    from playwright import sync_api
except ImportError:
    sync_api = None
require(sync_api, "the Python package playwright", "install it: .venv/bin/pip install playwright==1.65.2 (in the dev extra)", flag=BROWSER_FLAG, module_level=True)
expect = sync_api.expect

from .dagster_support import tiny_scenario  # noqa: E402
from .ui_support import CHROMIUM_ARGS, Artifacts, DagsterUI, start_ui, stop_ui  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ASSETS = ["ingested_images", "validated_images", "augmented_images", "ruler", "generator", "evaluation"]
SCENARIOS = ["digits", "faces", "histology", "textures"]
RUN_TIMEOUT_S = 8 * 60
UI_TIMEOUT_MS = 60_000  # two busy CPU cores: pages can take a while to load


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium")
    require(path, "Debian's chromium (no chromium on PATH)", "install it: apt-get install -y chromium (.ci/run does)", flag=BROWSER_FLAG)
    return path


@pytest.fixture
def artifacts(tmp_path) -> Artifacts:
    directory = Path(os.environ.get("UI_ARTIFACTS") or tmp_path / "ui-artifacts").resolve()
    print(f"\nUI screenshots: {directory}")
    return Artifacts(directory)


@pytest.fixture
def dagster_ui(chromium, tmp_path, artifacts):
    ui = start_ui(tmp_path / "dagster_home", tmp_path / "dagster_ui.log")
    try:
        yield ui
    finally:
        stop_ui(ui)
        shutil.copyfile(ui.log, artifacts.dir / "dagster_ui.log")


@pytest.fixture
def page(chromium):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.set_default_navigation_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def nav(page, text: str):
    """A link of the main navigation by its visible text (its accessible name also
    holds its icon's label)."""
    return page.get_by_role("navigation").get_by_role("link").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


def asset_link(page, name: str):
    """An asset's link in the catalog (its name sits in a truncating box titled with it)."""
    return page.get_by_role("link").filter(has=page.get_by_title(name, exact=True)).first


def run_config(base_dir: Path, scenarios_dir: Path) -> str:
    q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
    return f"resources:\n  project:\n    config:\n      base_dir: {q(str(base_dir))}\n      scenarios_dir: {q(str(scenarios_dir))}\n"


def wait_for_run(page, ui: DagsterUI, run_id: str) -> str:
    """The run page's status tag: 'Success', or the failure/cancel status (bounded)."""
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        try:
            expect(status.first).to_be_visible(timeout=20_000)
            return status.first.inner_text()
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} not finished after {RUN_TIMEOUT_S} s; server log:\n{ui.log_tail()}") from None
            page.reload()  # the page follows the run live; a reload covers a dropped subscription


def test_materialize_digits_from_the_ui(dagster_ui: DagsterUI, page, artifacts: Artifacts, tmp_path):
    base_dir, scenarios_dir = tmp_path / "base", tmp_path / "scenarios"
    tiny_scenario(scenarios_dir, "digits")
    ui = dagster_ui
    t0 = time.monotonic()
    try:
        # 1. A first visit opens on the project, not under Dagster's "Join the Dagster
        # community" dialog (off in the instance settings, nux.enabled: false; the UI
        # would raise it a second after the page loads).
        page.goto(ui.url + "/")
        page.wait_for_timeout(2500)
        expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
        artifacts.shot(page, "first-page")
        # The asset graph (Lineage) shows the six stages.
        nav(page, "Lineage").click()
        graph_nodes = page.locator("svg foreignObject")
        for name in ASSETS:
            expect(graph_nodes.get_by_text(name, exact=True).first).to_be_visible()
        artifacts.shot(page, "lineage")

        # 2. An asset lists the scenario partitions.
        nav(page, "Catalog").click()
        asset_link(page, "ingested_images").click()
        page.get_by_role("tab", name="Partitions").click()
        expect(page.get_by_text("4 Partitions Selected")).to_be_visible()
        for name in SCENARIOS:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        artifacts.shot(page, "ingested_images-partitions")

        # 3. Materialize all six for the digits partition, with the resource pointed at
        #    the temporary base dir and the tiny scenario.
        nav(page, "Lineage").click()
        page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize all")).click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Launch runs to materialize 6 assets")).to_be_visible()
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_role("menuitem", name="digits").click()
        dialog.get_by_text("Launch runs to materialize 6 assets").click()  # closes the partition list
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        dialog.get_by_text("Config", exact=True).click()
        dialog.get_by_role("button", name="Add config").click()
        editor = page.locator(".CodeMirror.cm-s-config-editor")
        editor.click()
        config = run_config(base_dir, scenarios_dir)
        page.keyboard.insert_text(config)
        assert editor.evaluate("e => e.CodeMirror.getValue()").strip() == config.strip()
        expect(page.get_by_text("No errors")).to_be_visible()
        artifacts.shot(page, "run-config")
        page.get_by_role("button", name="Save config").click()
        expect(dialog.get_by_text("Config saved")).to_be_visible()
        artifacts.shot(page, "launch-dialog")
        dialog.get_by_role("button", name="Launch 1 run").click()

        # 4. The run, followed from the toast to its page, succeeds.
        view = page.locator("a[href^='/runs/']", has_text=re.compile(r"^View$")).first  # the "Launched run ..." toast
        run_id = (view.get_attribute("href") or "").rsplit("/", 1)[-1]
        artifacts.shot(page, "run-launched")
        view.click()
        status = wait_for_run(page, ui, run_id)
        artifacts.shot(page, "run-finished")
        assert status == "Success", f"run {run_id} ended as {status}; server log:\n{ui.log_tail()}"
        nav(page, "Runs").click()
        expect(page.get_by_role("link", name=re.compile(rf"{run_id[:8]}$"))).to_be_visible()  # the only run of this instance
        expect(page.get_by_text("Success", exact=True)).to_be_visible()
        artifacts.shot(page, "runs")

        # 5. The evaluation's latest materialization shows the sample grid.
        nav(page, "Catalog").click()
        asset_link(page, "evaluation").click()
        page.get_by_role("tab", name="Events").click()
        expect(page.get_by_text(re.compile(rf"Partition\s*digits\s*materialized in run\s*{run_id[:8]}"))).to_be_visible()
        # the verdict is in the materialization's metadata, in words
        expect(page.get_by_role("row").filter(has=page.get_by_text("verdict", exact=True)).get_by_text(re.compile(r"^(promoted|not promoted: fails .+)$"))).to_be_visible()
        artifacts.shot(page, "evaluation-events")
        page.get_by_role("row").filter(has=page.get_by_text("samples", exact=True)).get_by_text("[Show Markdown]").click()
        grid = page.get_by_role("dialog").get_by_role("img", name="digits samples")
        expect(grid).to_be_visible()
        grid.evaluate("img => img.decode()")  # resolves once the image is decoded
        assert grid.evaluate("img => img.naturalWidth") > 0
        assert (grid.get_attribute("src") or "").startswith("data:image/png;base64,")
        artifacts.shot(page, "evaluation-samples")
    except BaseException:
        artifacts.dump(page, "failure")
        raise
    finally:
        print(f"UI test: {time.monotonic() - t0:.0f} s after the server answered; screenshots in {artifacts.dir}")

    # Everything went to the temporary base dir, nothing into the project.
    assert (base_dir / "models" / "digits" / "eval" / "samples.png").is_file()
