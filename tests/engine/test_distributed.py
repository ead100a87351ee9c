"""Two CPU processes (gloo, DistributedDataParallel) train to the same weights as one process with
the same global batch; only rank 0 writes; the learning curve is one global curve; an interrupted
distributed run resumes. 17 training windows in batches of 8: every epoch ends with a batch of one
window, so rank 1 has none (a zero loss through DDP) and rank 0's loss is scaled by 2 — the uneven
case the loss scaling exists for."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from stgraph.engine.config import config_from_dict, save_config
from stgraph.engine.run import build_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.trainer import train_model
from stgraph.testing import synthetic_stations


def _cfg(epochs=3, windows=17):
    return config_from_dict({
        "name": "ddp",
        "data": {"task": "krige", "window": 8, "stride": 4, "target_channels": ["x0"]},
        "split": {"method": "kfold", "n_folds": 4, "val": 1},
        "model": {"name": "ignnk", "hparams": {"hidden_channels": 8, "order": 1, "k": 3}},
        "train": {"epochs": epochs, "patience": 10, "batch_size": 8, "max_train_windows": windows, "num_threads": 1,
                  "grad_clip": 0.0},
    })  # fmt: skip


def _data():
    return synthetic_stations(num_nodes=12, num_steps=24 * 6, missing_rate=0.0)


def _worker(rank, world, port, folder, epochs, windows=17):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")  # fmt: skip
    from stgraph.engine import distributed

    distributed.init_from_env()
    torch.set_num_threads(1)
    exp, model = build_experiment(_cfg(epochs, windows), _data())
    run = RunDir.create(folder, "ddp")
    summary = train_model(model, exp, run, progress=False)
    ddp = type(distributed.Objective(model).ddp).__name__  # what the trainer wraps the objective in
    torch.save({"state": model.state_dict(), "summary": summary, "ddp": ddp}, os.path.join(folder, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(folder, epochs, windows=17):
    mp.start_processes(_worker, args=(2, _free_port(), str(folder), epochs, windows), nprocs=2, start_method="spawn")


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    _spawn(tmp_path, 3)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["ddp"] == r1["ddp"] == "DistributedDataParallel"
    exp, model = build_experiment(_cfg(3), _data())
    single = RunDir.create(tmp_path / "single", "ddp")
    summary = train_model(model, exp, single, progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
        assert torch.equal(r0["state"][k], r1["state"][k])  # the ranks agree exactly
    run = RunDir(tmp_path / "ddp")
    log, log1 = run.read_log(), single.read_log()
    assert [r["epoch"] for r in log] == [1, 2, 3]  # one global curve, written once (rank 0)
    for a, b in zip(log, log1, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_mae_scaled"] == pytest.approx(b["val_mae_scaled"], rel=1e-4)
    assert (tmp_path / "ddp" / "learning_curve.csv").exists() and run.best_path.exists()
    assert summary["best_epoch"] == r0["summary"]["best_epoch"]
    # resume: a 3-epoch distributed run continued to 4 epochs equals 4 epochs in one process
    save_config(_cfg(3), run.config_path)  # what run_experiment leaves in a run folder
    _spawn(tmp_path, 4)
    resumed = torch.load(tmp_path / "rank0.pt", weights_only=False)["state"]
    exp, model = build_experiment(_cfg(4), _data())
    train_model(model, exp, RunDir.create(tmp_path / "single4", "ddp"), progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(resumed[k], v, rtol=1e-4, atol=1e-5)

