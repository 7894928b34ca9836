"""Shared fixtures: small real data (scikit-learn's digits) and tiny configs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def digits16() -> np.ndarray:
    """200 real 8x8 digits upsampled to 16x16, uint8 (N, H, W)."""
    from gan_core.train import dry_run_data

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
