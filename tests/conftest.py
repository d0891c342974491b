"""Shared fixtures: no network, paths to shared data, deterministic seeds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vision3d.offline import refuse_network

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


CHILD_GUARD = Path(__file__).resolve().parent / "offline_children"


def pytest_configure(config):
    """Python processes the tests start import ``offline_children/sitecustomize.py``: the same guard."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(CHILD_GUARD), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(autouse=True)
def no_network():
    """Fail the test on any outbound connection, so a hidden download is caught."""
    with refuse_network("test"):
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """apt downloads (``vision3d.data.apt_data``; apt is no Python process the guard reaches) are refused
    unless the test is marked ``apt``; those tests skip with the reason when the archive cannot be reached."""
    if item.get_closest_marker("apt"):
        os.environ.pop("VISION3D_OFFLINE", None)
    else:
        os.environ["VISION3D_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the clone; tests that need it skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (CI keeps it beside the clone)")
    return SHARED_DATA
