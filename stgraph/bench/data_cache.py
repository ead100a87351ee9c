"""A suite's datasets, loaded once per process and shared by its runs and tuning studies."""

from __future__ import annotations

import functools
import json

from stgraph.engine.config import DataConfig
from stgraph.engine.experiment import load_experiment_data


@functools.lru_cache(maxsize=4)
def dataset(source: str):
    """The data of a suite's ``data`` section (``source``: its dataset fields as JSON), loaded once."""
    return load_experiment_data(DataConfig(**json.loads(source)))


def source_key(dc: DataConfig) -> str:
    keys = ("dataset", "data_dir", "start", "end", "long", "stations", "reader")
    return json.dumps({k: getattr(dc, k) for k in keys}, sort_keys=True)
