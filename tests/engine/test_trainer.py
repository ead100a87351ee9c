"""Training engine: resume after a crash, and the poisoning test extended to training."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.run import build_experiment, record_run, run_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.trainer import train_model
from stgraph.models import MODELS, get_model_class
from stgraph.testing import synthetic_stations
from tests.models.test_contract import TINY

TINY_MODEL = {"name": "aqnet", "hparams": {"hidden_channels": 8, "num_layers": 1, "heads": 2, "k": 3}}


def tiny_cfg(**train):
    return config_from_dict(
        {
            "name": "tiny",
            "data": {"target_channels": ["x0"], "task": "forecast", "window": 12, "horizon": 4, "eval_steps": [1, 4]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 1, "val": 2},
            "model": TINY_MODEL,
            "train": {
                "epochs": 4,
                "batch_size": 8,
                "max_train_windows": 24,
                "max_eval_windows": 8,
                "patience": 10,
                **train,
            },
        }
    )


class Crash(RuntimeError):
    pass


RESUME_CASES = [
    (name, "krige" if "forecast" not in get_model_class(name)[0].tasks else "forecast")
    for name in sorted(MODELS)
    if get_model_class(name)[0].trainable and {"forecast", "krige"} & get_model_class(name)[0].tasks
]


@pytest.mark.parametrize(("name", "task"), RESUME_CASES, ids=[f"{n}-{t}" for n, t in RESUME_CASES])
def test_resume_after_kill_gives_the_same_final_weights(tmp_path, name, task):
    """Every trainable model: a run killed after epoch 2 and resumed ends with the weights of a
    run never interrupted (optimiser, schedule, RNG and model buffers all in the checkpoint)."""
    data = synthetic_stations(num_nodes=10, num_steps=24 * 8, num_channels=2, seed=3)
    cfg = tiny_cfg()
    cfg.model.name, cfg.model.hparams = name, TINY[name]
    cfg.data.task = task
    exp, model = build_experiment(cfg, data)
    clean = RunDir.create(tmp_path, "clean")
    record_run(exp, clean)
    train_model(model, exp, clean, progress=False)
    final_clean = {k: v.clone() for k, v in model.state_dict().items()}

    crashed = RunDir.create(tmp_path, "crashed")
    exp, model = build_experiment(cfg, data)
    record_run(exp, crashed)

    def kill(epoch):
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train_model(model, exp, crashed, on_epoch_end=kill, progress=False)
    assert len(crashed.read_log()) == 2
    exp, model = build_experiment(cfg, data)  # a new process: fresh model, resumes from last.pt
    summary = train_model(model, exp, crashed, progress=False)
    assert summary["epochs_run"] == 4 and [r["epoch"] for r in crashed.read_log()] == [1, 2, 3, 4]
    for k, v in model.state_dict().items():
        assert torch.equal(v, final_clean[k]), k
    assert clean.read_log()[-1]["val_mae_scaled"] == crashed.read_log()[-1]["val_mae_scaled"]


POISON_CASES = [
    (name, task) for name in sorted(MODELS) for task in ("forecast", "krige") if task in get_model_class(name)[0].tasks
]


@pytest.mark.parametrize(("name", "task"), POISON_CASES, ids=[f"{n}-{t}" for n, t in POISON_CASES])
def test_trained_model_never_sees_test_stations(tmp_path, uci12_slice, name, task):
    """Replace every value of the test-role stations with absurd numbers: the trained weights,
    every prediction and the visible stations' metrics stay bit-identical — for every model."""
    cfg = config_from_dict(
        {
            "name": "p",
            "data": {
                "input_channels": ["PM2.5", "PM10", "TEMP"],
                "task": task,
                "window": 12,
                "horizon": 6,
                "eval_steps": [1, 6],
            },
            "split": {"method": "kfold", "n_folds": 4, "fold": 2},
            "model": {"name": name, "hparams": TINY[name]},
            "train": {"epochs": 2, "batch_size": 8, "max_train_windows": 16, "max_eval_windows": 8},
        }
    )
    data = uci12_slice
    from stgraph.engine.experiment import make_station_split

    test = make_station_split(data, cfg.split).indices(data, "test")
    values, mask = data.values.copy(), data.mask.copy()
    values[:, test], mask[:, test] = 1e9, True
    poisoned = replace(data, values=values, mask=mask)

    run_a, ma = run_experiment(cfg, tmp_path, name="clean", data=data, progress=False)
    run_b, mb = run_experiment(cfg, tmp_path, name="poisoned", data=poisoned, progress=False)
    if run_a.best_path.exists() or run_b.best_path.exists():
        wa, wb = (torch.load(r.best_path, weights_only=False)["model"] for r in (run_a, run_b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    for key in ("pred", "pred_visible", "true_visible", "mask_visible"):
        assert np.array_equal(pa[key], pb[key]), key
    assert ma["test"]["visible"] == mb["test"]["visible"]
    assert not np.array_equal(pa["true"], pb["true"])  # only the hidden truth differs
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]


def test_long_horizon_scores_daily_means(tmp_path):
    data = synthetic_stations(num_nodes=8, num_steps=24 * 30, num_channels=1, seed=4)
    cfg = config_from_dict(
        {
            "name": "daily",
            "data": {
                "target_channels": ["x0"],
                "window": 48,
                "horizon": 48,
                "stride": 12,
                "daily": True,
                "eval_days": [1, 2],
            },
            "split": {"method": "kfold", "n_folds": 4, "time_val": 0.2, "time_test": 0.3},
            "model": {"name": "idw"},
        }
    )
    run, m = run_experiment(cfg, tmp_path, data=data, progress=False)
    hidden = m["test"]["hidden"]
    assert m["test"]["unit"] == "daily mean" and set(hidden["at_steps"]) == {"1", "2"}
    assert len(hidden["per_step"]) == 2 and hidden["overall"]["count"] > 0
    preds = run.load_predictions()
    assert preds["pred"].shape[1] == 48  # predictions stay hourly; only the scores are daily


def test_training_records_its_learning_curve_and_whether_early_stopping_fired(tmp_path):
    data = synthetic_stations(num_nodes=10, num_steps=24 * 8, num_channels=2, seed=3)
    capped = tiny_cfg(epochs=2, patience=5)
    run, m = run_experiment(capped, tmp_path, name="capped", data=data, progress=False)
    t = m["training"]
    assert t["epochs_run"] == 2 and not t["early_stopped"] and t["stopped"] == "epoch cap"
    assert t["steps"] == 2 * t["steps_per_epoch"] and t["wall_seconds"] > 0
    curve = (run.path / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,step,train_loss,val_mae_scaled,lr") and len(curve) == 3
    assert (run.path / "learning_curve.png").stat().st_size > 1000
    early = tiny_cfg(epochs=50, patience=1, lr=1e-9)  # no learning: early stopping fires at once
    _, m = run_experiment(early, tmp_path, name="early", data=data, progress=False)
    assert m["training"]["early_stopped"] and m["training"]["epochs_run"] < 50


def test_l1_is_the_default_loss_and_the_schedule_halves_on_plateau():
    from stgraph.engine.trainer import _lr_factor
    from stgraph.ops.losses import LOSSES, masked_l1

    cfg = tiny_cfg()
    assert cfg.train.loss == "l1" and LOSSES[cfg.train.loss] is masked_l1
    p, y = torch.tensor([1.0, 5.0, 0.0]), torch.tensor([0.0, 0.0, 100.0])
    assert masked_l1(p, y, torch.tensor([True, True, False])).item() == 3.0
    tc = tiny_cfg(warmup_steps=10).train
    assert _lr_factor(tc, 0, 0, 1.0) == 0.1 and _lr_factor(tc, 20, 3, 0.5) == 0.5
    cos = tiny_cfg(lr_schedule="cosine", epochs=10).train
    assert _lr_factor(cos, 100, 0, 1.0) == 1.0 and abs(_lr_factor(cos, 100, 10, 1.0) - 0.01) < 1e-9


def test_the_initial_model_is_kept_when_training_only_makes_it_worse(tmp_path, monkeypatch):
    """Selection on validation includes the model before any step: a run whose every epoch
    validates worse than its start keeps the starting weights as best.pt (best_epoch 0)."""
    import stgraph.engine.trainer as trainer_mod
    from stgraph.engine.config import config_from_dict
    from stgraph.engine.run import build_experiment
    from stgraph.engine.run_folder import RunDir
    from stgraph.testing import synthetic_stations

    cfg = config_from_dict(
        {
            "data": {"task": "krige", "window": 8, "horizon": 8, "stride": 4, "target_channels": ["x0"]},
            "split": {"method": "random", "test": 3, "val": 2},
            "model": {"name": "ignnk", "hparams": {"hidden_channels": 8, "order": 1, "k": 3}},
            "train": {"epochs": 2, "patience": 5, "batch_size": 8, "max_train_windows": 16, "lr": 1e-3},
        }
    )
    exp, model = build_experiment(cfg, synthetic_stations(num_nodes=12, num_steps=24 * 6))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    calls = iter([1.0, 2.0, 3.0])  # initial model, epoch 1, epoch 2
    monkeypatch.setattr(trainer_mod, "validate", lambda m, e: next(calls))
    run = RunDir.create(tmp_path, "initial")
    summary = trainer_mod.train_model(model, exp, run, progress=False)
    assert summary["best_epoch"] == 0 and summary["best_val"] == 1.0 and summary["epochs_run"] == 2
    best = torch.load(run.best_path, weights_only=False)
    assert best["epoch"] == 0
    assert all(torch.equal(best["model"][k], start[k]) for k in start)
    assert not all(torch.equal(model.state_dict()[k], start[k]) for k in start)  # training did move it
