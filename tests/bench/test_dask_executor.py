"""``executor: dask``: each run a task on a Dask cluster (a LocalCluster with two worker
processes here), the same numbers as one process, resumable like the local pool."""

import json
import os

import pandas as pd
import pytest

from stgraph.bench import run_suite, write_leaderboard
from stgraph.cli import main
from tests.bench.test_bench import small_suite


def test_dask_cluster_matches_one_process_and_resumes(tmp_path):
    suite = small_suite(
        folds=[0, 1],
        seeds=[0],
        models={"idw": {}, "aqnet": {"hparams": {"hidden_channels": 8, "num_layers": 1, "heads": 2, "k": 4}}},
    )
    ran = run_suite(suite, tmp_path / "dask", workers=2, threads=1, executor="dask")
    assert len(ran) == len(suite.runs)
    run_suite(suite, tmp_path / "solo", workers=0, threads=1)
    key, cols = ["task", "model", "fold", "seed"], ["mae", "rmse", "count"]
    tables = []
    for d in ("dask", "solo"):
        write_leaderboard(suite, tmp_path / d)
        tables.append(pd.read_csv(tmp_path / d / "runs.csv").sort_values(key)[key + cols].reset_index(drop=True))
    pd.testing.assert_frame_equal(*tables)
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "dask").rglob("bench.json")}
    assert os.getpid() not in pids  # the runs ran in the cluster's worker processes
    assert run_suite(suite, tmp_path / "dask", workers=2, executor="dask") == []  # finished runs are not rerun


def test_executor_options_are_checked(tmp_path):
    suite = small_suite(folds=[0], seeds=[0], models={"idw": {}})
    with pytest.raises(ValueError, match="executor must be one of"):
        run_suite(suite, tmp_path, executor="ray")
    with pytest.raises(ValueError, match="needs executor 'dask'"):
        run_suite(suite, tmp_path, address="tcp://127.0.0.1:8786")
    with pytest.raises(SystemExit):
        main(["benchmark", "configs/bench/demo.yaml", "--out", str(tmp_path), "--executor", "ray"])
