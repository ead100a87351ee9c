import json
import re

import numpy as np
import pytest
import torch

from stgraph.engine import run_folder
from stgraph.engine.run_folder import RunDir, atomic_torch_save, environment_record

ENV_KEYS = {
    "code_tree",
    "code_dirty",
    "python",
    "platform",
    "torch",
    "torch_geometric",
    "torch_cluster",
    "numpy",
    "pandas",
    "stgraph",
    "git_commit",
    "git_dirty",
    "seed",
    "knn_backend",
    "device",
    "torch_threads",
    "hostname",
    "time_utc",
}


def test_environment_record():
    rec = environment_record(seed=3, knn_backend="torch_cluster")
    assert set(rec) == ENV_KEYS
    assert re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
    assert isinstance(rec["git_dirty"], bool)
    assert re.fullmatch(r"[0-9a-f]{40}", rec["code_tree"]) and isinstance(rec["code_dirty"], bool)
    assert rec["seed"] == 3 and rec["knn_backend"] == "torch_cluster" and rec["device"] == "cpu"
    assert rec["torch"] == torch.__version__ and rec["stgraph"]
    assert isinstance(rec["torch_threads"], int)
    json.dumps(rec)  # serialisable


def test_environment_record_outside_git(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "_package_root", lambda: tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    rec = environment_record(seed=0, knn_backend="pyg", device="cuda")
    assert rec["git_commit"] is None and rec["git_dirty"] is None and rec["device"] == "cuda"
    assert rec["code_tree"] is None and rec["code_dirty"] is None


def test_rundir_paths_and_reuse(tmp_path):
    run = RunDir.create(tmp_path / "runs", "exp1")
    assert run.path == tmp_path / "runs" / "exp1" and run.path.is_dir()
    names = [run.config_path, run.split_path, run.metrics_path, run.predictions_path]
    names += [run.best_path, run.last_path, run.env_path, run.log_path]
    assert [p.name for p in names] == [
        "config.yaml",
        "split.json",
        "metrics.json",
        "predictions.npz",
        "best.pt",
        "last.pt",
        "env.json",
        "train_log.jsonl",
    ]
    run.config_path.write_text("name: exp1\n")
    assert RunDir.create(tmp_path / "runs", "exp1") == run  # resume finds it

    (tmp_path / "runs" / "other").mkdir()
    (tmp_path / "runs" / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="config.yaml"):
        RunDir.create(tmp_path / "runs", "other")
    with pytest.raises(ValueError):
        RunDir.create(tmp_path, "../escape")


def test_json_log_predictions(tmp_path):
    run = RunDir.create(tmp_path, "r")
    assert not run.is_finished()
    assert run.read_log() == []
    obj = {"mae": np.float32(1.5), "per_step": np.arange(3), "name": "x"}
    run.write_json("split.json", obj)
    assert run.read_json("split.json") == {"mae": 1.5, "per_step": [0, 1, 2], "name": "x"}

    run.append_log({"epoch": 0, "loss": 1.0})
    run.append_log({"epoch": 1, "loss": 0.5})
    with open(run.log_path, "a") as f:
        f.write('{"epoch": 2, "lo')  # a crash mid-append
    assert run.read_log() == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]

    pred = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    run.save_predictions(pred=pred, mask=pred > 0)
    back = run.load_predictions()
    assert set(back) == {"pred", "mask"}
    np.testing.assert_array_equal(back["pred"], pred)
    assert back["mask"].dtype == bool

    run.write_json("metrics.json", {"mae": 1.0})
    assert run.is_finished()
    assert sorted(p.name for p in run.path.iterdir()) == [
        "metrics.json",
        "predictions.npz",
        "split.json",
        "train_log.jsonl",
    ]


def test_atomic_torch_save(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.arange(4)}, path)
    atomic_torch_save({"w": torch.arange(5)}, path)  # overwrite
    assert torch.equal(torch.load(path)["w"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def crash(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(run_folder.torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"w": torch.arange(6)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["w"], torch.arange(5))  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left
