"""Shared fixtures: tiny synthetic networks and small real slices read from the mirror.

Real-data tests read ../shared/datasets (or $STGRAPH_DATA_DIR); without it they fail with the
loader's error naming every place it looked, never skip.
"""

import pytest
import torch

from stgraph.datasets import load_dataset
from stgraph.testing import synthetic_stations


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread, and the timing of a shared 2-core machine stays sane."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def synthetic():
    return synthetic_stations(num_nodes=12, num_steps=24 * 10, num_channels=2, seed=0)


@pytest.fixture(scope="session")
def uci12():
    return load_dataset("uci-beijing-12", download=False)


@pytest.fixture(scope="session")
def aqi36():
    return load_dataset("aqi36", download=False)


@pytest.fixture(scope="session")
def uci12_slice(uci12):
    """Ten weeks of the real UCI data: small enough for fast pipeline tests."""
    return uci12.select_times("2014-01-01", "2014-03-12")
