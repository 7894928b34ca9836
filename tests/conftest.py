"""Shared fixtures: small real data (scikit-learn's digits) and tiny configs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Warm stage servers (assets.warm) that the suite's DVC stages start leave soon after it.
os.environ.setdefault("SCENARIO_GAN_WARM_IDLE", "30")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: a worker's torch (and the subprocesses it starts) on one
    # thread, instead of every worker's threads contending for every core.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def in_ci() -> bool:
    """True where the environment variable ``CI`` is set (CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition: object, what: str, how: str, *, flag: str | None = None, module_level: bool = False) -> None:
    """Go on when ``condition`` holds. Otherwise ``what`` (a tool, a permission) is
    missing for this test: locally the test is skipped; under CI (``CI`` set) or where
    ``flag`` (an environment variable such as ``SCENARIO_GAN_REQUIRE_DVC``, which
    ``.ci/run`` sets) is set, it fails, since a skip there would hide a test CI must run.
    The message says what is missing and ``how`` to get it."""
    __tracebackhide__ = True  # report the skip or failure at the caller's line
    if condition:
        return
    msg = f"{what} is missing; {how}"
    why = [name for name, on in (("CI", in_ci()), (flag, bool(flag and os.environ.get(flag)))) if on]
    if why:
        pytest.fail(f"{msg} (required here: {' and '.join(f'{n}={os.environ[n]}' for n in why)})", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


@pytest.fixture(scope="session")
def digits16() -> np.ndarray:
    """200 real 8x8 digits upsampled to 16x16, uint8 (N, H, W)."""
    from gan_core.cli import dry_run_data

    return dry_run_data()[:200]


def tiny_config(**train) -> dict:
    """A dcgan small enough that a step takes milliseconds on one CPU thread."""
    base = {"steps": 12, "batch_size": 16, "checkpoint_every": 4, "num_threads": 1, "seed": 3}
    base.update(train)
    return {"model": {"arch": "dcgan", "resolution": 16, "channels": 1, "width": 8, "z_dim": 16}, "train": base}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine
    oversubscribed threads cost several times over. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The modules that take longest on 2 cores (each a chain of subprocesses sharing one
# module fixture), longest first. With ``-n`` (--dist loadfile, no reordering) a worker
# takes one whole module at a time in this order, so the other worker fills in around
# the long ones instead of one of them starting last.
LONGEST_FIRST = ("test_dvc.py", "test_benchmarks_smoke.py", "test_faults.py", "test_scenario_isolation.py", "test_stage_cli.py", "test_dagster.py", "test_ui_browser.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module and among the rest, the usual order
