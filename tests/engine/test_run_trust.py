"""Run folders you can trust: checkpoints that hold only data, a folder that answers for one config
and one dataset, evaluate that never finishes a run, one writer at a time."""

import json
import multiprocessing as mp
import os
import sys

import pytest
import torch

from stgraph.engine.config import config_from_dict, save_config
from stgraph.engine.run import evaluate_run, run_experiment
from stgraph.engine.run_folder import RunDir, UnsafeCheckpointError, load_checkpoint
from stgraph.engine.run_identity import RunIdentityError, StaleRunError
from stgraph.engine.run_lock import RunLockedError, lock_path, run_lock
from stgraph.engine.trainer import train_model
from stgraph.testing import synthetic_stations

MODEL = {"name": "aqnet", "hparams": {"hidden_channels": 8, "num_layers": 1, "heads": 2, "k": 3}}


def cfg_dict(**train):
    return {
        "name": "trust",
        "data": {"target_channels": ["x0"], "task": "krige", "window": 8, "stride": 8, "eval_stride": 8},
        "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
        "model": MODEL,
        "train": {"epochs": 3, "batch_size": 8, "max_train_windows": 16, "max_eval_windows": 8, "patience": 10,
                  **train},
    }  # fmt: skip


@pytest.fixture
def data():
    return synthetic_stations(num_nodes=10, num_steps=24 * 6, num_channels=2, seed=5)


class Payload:
    """Pickles to a call of ``open(path, "w")``: a file that appears if the payload ever runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _poison(path, marker):
    ckpt = torch.load(path, weights_only=True)
    ckpt["extra"] = Payload(marker)
    torch.save(ckpt, path)  # the pickled payload rides along with real weights


def test_a_checkpoint_carrying_code_is_refused_by_evaluate_resume_and_reanalyse(tmp_path, data):
    cfg = config_from_dict(cfg_dict())
    run, _ = run_experiment(cfg, tmp_path, data=data, progress=False)
    marker = tmp_path / "payload-ran"
    _poison(run.best_path, marker)
    _poison(run.last_path, marker)
    with pytest.raises(UnsafeCheckpointError, match="best.pt: refused"):
        evaluate_run(run.path, data=data)
    with pytest.raises(UnsafeCheckpointError, match="last.pt: refused"):
        from stgraph.engine.run import build_experiment

        exp, model = build_experiment(cfg, data)
        train_model(model, exp, run, progress=False)
    from stgraph.cli import main

    code = main(["reanalyse", str(run.path), "--grid", "0,1,0,1,0.5", "--out", str(tmp_path / "r.nc"), "--quiet"])
    assert code == 1  # refused (the run's data is synthetic, so the CLI may fail earlier: never by running it)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(run.best_path)
    assert not marker.exists()


def test_checkpoints_load_as_plain_data(tmp_path, data):
    run, _ = run_experiment(config_from_dict(cfg_dict()), tmp_path, data=data, progress=False)
    last = load_checkpoint(run.last_path)
    assert set(last) == {"model", "optimizer", "rng", "state"} and last["state"]["epoch"] == 3


def test_a_finished_folder_answers_only_for_its_own_config(tmp_path, data):
    cfg = config_from_dict(cfg_dict())
    run, first = run_experiment(cfg, tmp_path, data=data, progress=False)
    again = run_experiment(cfg, tmp_path, data=data, progress=False)[1]
    assert again == first  # same config and data: the finished result
    other = config_from_dict({**cfg_dict(lr=1e-2), "model": {"name": "knn"}})
    with pytest.raises(RunIdentityError) as e:
        run_experiment(other, tmp_path, name="trust", data=data, progress=False)
    assert "model.name: 'aqnet' -> 'knn'" in str(e.value) and "train.lr: 0.001 -> 0.01" in str(e.value)
    assert "another run name" in str(e.value)
    moved = synthetic_stations(num_nodes=10, num_steps=24 * 6, num_channels=2, seed=6)  # other values
    with pytest.raises(StaleRunError, match="stale"):
        run_experiment(cfg, tmp_path, data=moved, progress=False)
    with pytest.raises(StaleRunError, match="stale"):
        evaluate_run(run.path, data=moved)


def test_a_resume_keeps_its_config_and_refuses_another(tmp_path, data):
    cfg = config_from_dict(cfg_dict())

    class Stop(RuntimeError):
        pass

    from stgraph.engine import run as run_module

    real = run_module.train_model

    def crash_after_epoch_1(model, exp, run, **kw):
        def stop(epoch):
            raise Stop

        return real(model, exp, run, on_epoch_end=stop, **kw)

    run_module.train_model = crash_after_epoch_1
    try:
        with pytest.raises(Stop):
            run_experiment(cfg, tmp_path, data=data, progress=False)
    finally:
        run_module.train_model = real
    folder = RunDir(tmp_path / "trust")
    written = folder.config_path.read_text()
    identity = folder.read_json("identity.json")
    with pytest.raises(RunIdentityError, match=r"train.lr: 0.001 -> 0.01"):
        run_experiment(config_from_dict(cfg_dict(lr=1e-2)), tmp_path, data=data, progress=False)
    with pytest.raises(RunIdentityError, match="model.hparams.hidden_channels: 8 -> 16"):
        wide = cfg_dict()
        wide["model"] = {"name": "aqnet", "hparams": {**MODEL["hparams"], "hidden_channels": 16}}
        run_experiment(config_from_dict(wide), tmp_path, data=data, progress=False)
    assert folder.config_path.read_text() == written  # a refused run rewrites nothing
    _, metrics = run_experiment(cfg, tmp_path, data=data, progress=False)  # the same config resumes
    assert metrics["training"]["epochs_run"] == 3
    assert folder.config_path.read_text() == written and folder.read_json("identity.json") == identity
    assert [r["epoch"] for r in folder.read_log()] == [1, 2, 3]


def test_a_resume_under_another_code_commit_is_refused(tmp_path, data):
    cfg = config_from_dict(cfg_dict())
    run = RunDir.create(tmp_path, "trust")
    save_config(cfg, run.config_path)
    from stgraph.engine.run_identity import data_checksums, make_identity

    env = {"git_commit": "0" * 40, "code_tree": "1" * 40}
    run.write_json("identity.json", make_identity(cfg, data_checksums(data), env))
    with pytest.raises(RunIdentityError, match="another version of the stgraph code"):
        run_experiment(cfg, tmp_path, data=data, progress=False)


def test_evaluate_does_not_finish_a_crashed_run(tmp_path, data):
    cfg = config_from_dict(cfg_dict())
    from stgraph.engine import run as run_module

    real = run_module.train_model

    class Stop(RuntimeError):
        pass

    def crash(model, exp, run, **kw):
        def stop(epoch):
            raise Stop

        return real(model, exp, run, on_epoch_end=stop, **kw)

    run_module.train_model = crash
    try:
        with pytest.raises(Stop):
            run_experiment(cfg, tmp_path, data=data, progress=False)
    finally:
        run_module.train_model = real
    folder = RunDir(tmp_path / "trust")
    evaluated = evaluate_run(folder.path, data=data)
    assert (folder.path / "evaluation.json").exists() and not folder.is_finished()
    assert evaluated["test"]["hidden"]["overall"]["count"] > 0
    _, metrics = run_experiment(cfg, tmp_path, data=data, progress=False)
    assert metrics["training"]["epochs_run"] == 3  # training went on, it was not skipped


def _hold_lock(folder, ready, release):
    with run_lock(folder):
        ready.set()
        release.wait(300)  # generous: under load the checks below can be slow


def test_one_writer_per_run_folder(tmp_path, data):
    cfg = config_from_dict(cfg_dict())
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "trust", ready, release))
    holder.start()
    try:
        assert ready.wait(300)  # a spawned interpreter importing torch takes long on a loaded machine
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            run_experiment(cfg, tmp_path, data=data, progress=False)
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            evaluate_run(tmp_path / "trust", data=data)
    finally:
        release.set()
        holder.join(30)
    assert not (tmp_path / "trust" / "train_log.jsonl").exists()


def test_a_lock_whose_process_died_is_taken_over(tmp_path, data):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "trust", ready, release))
    holder.start()
    assert ready.wait(300)  # a spawned interpreter importing torch takes long on a loaded machine
    os.kill(holder.pid, 9)  # SIGKILL: no clean-up runs; the OS drops its lock
    holder.join(30)
    assert json.loads(lock_path(tmp_path / "trust").read_text())["pid"] == holder.pid  # the stale record remains
    _, metrics = run_experiment(config_from_dict(cfg_dict()), tmp_path, data=data, progress=False)
    assert metrics["training"]["epochs_run"] == 3


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r"):
        pass
    with run_lock(tmp_path / "r"):  # released: taken again
        pass


def test_a_re_added_dataset_makes_its_runs_stale(tmp_path, monkeypatch, capsys):
    from stgraph.cli import main
    from tests.datasets.test_user_cards import write_long_table

    monkeypatch.setenv("STGRAPH_HOME", str(tmp_path / "home"))
    long, stations = write_long_table(tmp_path / "files")
    assert main(["datasets", "add", "mycity", "--long", str(long), "--stations", str(stations)]) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: r\ndata: {dataset: mycity, target_channels: [pm25], task: krige, window: 12, stride: 12}\n"
        "split: {method: kfold, n_folds: 4, val: 1}\nmodel: {name: idw}\n"
    )
    args = ["train", str(cfg), "--out", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 0
    lines = long.read_text().splitlines()
    i = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[-1])  # a row with a value
    row = lines[i].split(",")
    row[-1] = str(float(row[-1]) + 50.0)  # one value changed
    lines[i] = ",".join(row)
    long.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(args) == 1  # the card's checksum no longer matches the file
    assert "changed since it was added" in capsys.readouterr().err
    assert main(["datasets", "add", "mycity", "--long", str(long), "--stations", str(stations), "--force"]) == 0
    capsys.readouterr()
    assert main(args) == 1
    assert "is stale" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "runs" / "r")]) == 1
    assert "is stale" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_benchmark_and_train_share_the_lock(tmp_path):
    from stgraph.bench.execute import execute, run_root
    from tests.bench.test_bench import small_suite

    suite = small_suite(folds=[0], models={"idw": {}})
    parent, name = run_root(tmp_path, suite.runs[0])
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(parent / name, ready, release))
    holder.start()
    try:
        assert ready.wait(300)  # a spawned interpreter importing torch takes long on a loaded machine
        assert execute(suite.runs[0], str(tmp_path))["skipped"] == "running in another process"
    finally:
        release.set()
        holder.join(30)


def test_a_folder_from_before_an_option_existed_still_answers_for_its_default(tmp_path, data):
    """A key added to the schema after a run was made (its identity lacks it) is no difference when
    the config asks for its default (the behaviour the run had), and is one otherwise."""
    cfg = config_from_dict(cfg_dict())
    run, first = run_experiment(cfg, tmp_path, data=data, progress=False)
    identity = json.loads(run.identity_path.read_text())
    del identity["config"]["split.val_months"]  # as written before split.val_months existed
    run.identity_path.write_text(json.dumps(identity))
    assert run_experiment(cfg, tmp_path, data=data, progress=False)[1] == first
    other = config_from_dict({**cfg_dict(), "split": {**cfg_dict()["split"], "seed": 3}})
    del identity["config"]["split.seed"]  # missing, and asked for with another value than the default
    run.identity_path.write_text(json.dumps(identity))
    with pytest.raises(RunIdentityError, match=r"split.seed: None -> 3"):
        run_experiment(other, tmp_path, name="trust", data=data, progress=False)
