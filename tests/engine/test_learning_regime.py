"""The training regime and the published protocols: step budgets, the shuffled window stream,
deterministic validation, schedules, gains over the untrained model, month-aligned windows each
cell once, SPIN's per-window scoring and the official out-of-sample training data."""

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stgraph.data.windows import block_window_starts, first_cover_cut, window_starts
from stgraph.engine.config import config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.run import build_experiment, record_run, run_experiment
from stgraph.engine.run_folder import RunDir
from stgraph.engine.trainer import _lr_factor, stream_indices, train_model, training_budget, validate
from stgraph.testing import synthetic_stations
from tests.models.test_contract import TINY

AQNET = {"name": "aqnet", "hparams": {"hidden_channels": 8, "num_layers": 1, "heads": 2, "k": 3}}


def steps_cfg(**train):
    return config_from_dict({
        "name": "steps",
        "data": {"target_channels": ["x0"], "task": "krige", "window": 8, "stride": 1, "eval_stride": 8},
        "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
        "model": AQNET,
        "train": {"steps": 10, "val_every": 4, "batch_size": 4, "max_eval_windows": 8, **train},
    })  # fmt: skip


@pytest.fixture
def data():
    return synthetic_stations(num_nodes=10, num_steps=24 * 5, num_channels=2, seed=4)


def test_the_window_stream_visits_every_window_once_per_pass_and_is_the_same_after_a_resume():
    n = 7
    whole = stream_indices(n, 0, 3 * n, seed=1)
    for p in range(3):
        assert sorted(whole[p * n : (p + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(whole[:n], whole[n : 2 * n])  # a new order each pass
    assert torch.equal(torch.cat([stream_indices(n, 0, 5, 1), stream_indices(n, 5, 17, 1)]), whole[:17])


def test_step_budget_counts_rounds_and_patience_in_steps():
    tc = SimpleNamespace(steps=1000, val_every=200, patience_steps=None, early_stopping=True, batch_size=32,
                         epochs=5, max_train_windows=None, patience=3)  # fmt: skip
    b = training_budget(tc, n_windows=10_000)
    assert (b.rounds, b.steps_per_round, b.total_steps, b.patience, b.by_steps) == (5, 200, 1000, 2, True)
    tc.early_stopping = False
    assert training_budget(tc, 10_000).patience is None
    tc.steps, tc.early_stopping = None, True
    b = training_budget(tc, 100)
    assert (b.rounds, b.steps_per_round, b.total_steps, b.patience, b.by_steps) == (5, 4, 20, 3, False)


def test_schedules_cosine_and_csdi_step_decay():
    tc = SimpleNamespace(steps=100, epochs=1, warmup_steps=0, lr_schedule="step")
    assert [_lr_factor(tc, s, 0, 1.0) for s in (0, 74, 75, 89, 90, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    tc.lr_schedule, tc.warmup_steps = "cosine", 10
    assert _lr_factor(tc, 0, 0, 1.0) == pytest.approx(0.1)  # warm-up
    assert _lr_factor(tc, 50, 0, 1.0) == pytest.approx(0.01 + 0.99 * 0.5)
    assert _lr_factor(tc, 100, 0, 1.0) == pytest.approx(0.01)


def test_a_step_budget_runs_exactly_its_steps_and_records_them(tmp_path, data):
    cfg = steps_cfg(early_stopping=False, score_initial=True)
    _, metrics = run_experiment(cfg, tmp_path, data=data, progress=False)
    t = metrics["training"]
    assert t["steps"] == 10 and t["budget"] == "steps" and t["stopped"] == "step budget"
    assert t["epochs_run"] == math.ceil(10 / 4) and 0 <= t["best_step"] <= 10
    log = RunDir(tmp_path / "steps").read_log()
    assert [r["step"] for r in log] == [4, 8, 10]
    assert t["steps_per_second"] > 0 and t["val_gain_over_initial"] is not None
    initial = t["initial_test"]["mae"]
    assert t["test_gain_over_initial"] == pytest.approx(1 - metrics["test"]["hidden"]["overall"]["mae"] / initial)
    assert not (tmp_path / "steps" / "initial.pt").exists()


def test_a_step_budget_run_resumes_to_the_same_weights(tmp_path, data):
    cfg = steps_cfg(early_stopping=False)
    exp, model = build_experiment(cfg, data)
    clean = RunDir.create(tmp_path, "clean")
    record_run(exp, clean)
    train_model(model, exp, clean, progress=False)
    final = {k: v.clone() for k, v in model.state_dict().items()}

    class Crash(RuntimeError):
        pass

    def kill(rnd):
        if rnd == 2:
            raise Crash

    crashed = RunDir.create(tmp_path, "crashed")
    exp, model = build_experiment(cfg, data)
    record_run(exp, crashed)
    with pytest.raises(Crash):
        train_model(model, exp, crashed, on_epoch_end=kill, progress=False)
    exp, model = build_experiment(cfg, data)
    assert train_model(model, exp, crashed, progress=False)["steps"] == 10
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k


def test_validation_of_a_sampling_model_is_deterministic_and_leaves_the_rng_alone(data):
    cfg = steps_cfg()
    cfg.model.name, cfg.model.hparams = "diffrecon", dict(TINY["diffrecon"])
    exp, model = build_experiment(cfg, data)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = validate(model, exp)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # whatever the caller's stream did meanwhile
    assert validate(model, exp) == first


@pytest.mark.parametrize("task", ["krige", "impute"])
def test_validation_by_the_training_objective_is_fixed_and_follows_the_weights(data, task, tmp_path):
    """val_score: loss scores the diffusion ε-MSE at fixed noise and steps (CSDI's calc_loss_valid):
    the same value at every call, without moving the step counter, and a different one after the
    weights change; a run records what its validation measured."""
    cfg = steps_cfg(val_score="loss", early_stopping=False)
    cfg.model.name, cfg.model.hparams = "diffrecon", dict(TINY["diffrecon"])
    if task == "impute":
        data = replace(data, eval_mask=data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1))
        cfg.data.task, cfg.split.time_gap = "impute", 0
    exp, model = build_experiment(cfg, data)
    model.set_training_budget(10)
    first = validate(model, exp)
    assert first == validate(model, exp) and int(model.train_steps) == 0
    exp.cfg.train.val_score = "mae"
    assert validate(model, exp) != first  # a different metric: the sampled estimate's MAE
    exp.cfg.train.val_score = "loss"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert validate(model, exp) != first
    if task == "krige":  # one scale across phases: the same weights score the same before and after the switch
        model.train_steps.fill_(9)
        assert model.phase() == "joint" and validate(model, exp) == validate(model, exp)
        late = validate(model, exp)
        model.train_steps.fill_(0)
        assert model.phase() == "pretrain" and validate(model, exp) == late
    exp, model = build_experiment(cfg, data)
    summary = train_model(model, exp, RunDir(tmp_path / "r"), progress=False)
    assert summary["val_score"] == "loss" and summary["steps"] == 10


def test_block_windows_start_at_each_block_and_cover_its_tail():
    period = np.zeros(100, dtype=bool)
    period[10:45] = True  # a 35-step block
    period[60:80] = True  # a 20-step block
    starts = block_window_starts(period, 8, 0, 8)
    assert starts.tolist() == [10, 18, 26, 34, 37, 60, 68, 72]
    cut = first_cover_cut(starts, 8)
    assert cut.tolist() == [0, 0, 0, 0, 5, 0, 0, 4]
    covered = np.zeros(100, dtype=int)
    for s, c in zip(starts, cut, strict=True):
        covered[s + c : s + 8] += 1
    assert (covered[period] == 1).all() and (covered[~period] == 0).all()  # each cell once
    assert block_window_starts(period, 8, 0, 1).tolist() == window_starts(period, 8, 0, 1).tolist()


def _aqi36_impute(mode: str, stride: int, aqi36):
    return config_from_dict({
        "name": "aqi",
        "data": {"dataset": "aqi36", "target_channels": ["PM2.5"], "task": "impute", "window": 36,
                 "eval_stride": stride, "eval_steps": []},
        "split": {"test_months": [3, 6, 9, 12], "time_gap": 0, "time_val": 0.1, "impute_training": mode},
        "model": {"name": "lerp"},
        "train": {"batch_size": 64},
    })  # fmt: skip


@pytest.mark.parametrize("stride", [1, 36], ids=["grin-every-window", "csdi-month-aligned"])
def test_every_aqi36_evaluation_cell_is_scored_once(tmp_path, aqi36, stride):
    _, metrics = run_experiment(_aqi36_impute("out-of-sample", stride, aqi36), tmp_path, data=aqi36, progress=False)
    hidden = metrics["test"]["hidden"]
    assert hidden["overall"]["count"] == 20_434  # every evaluation cell of months 3/6/9/12
    assert "per_window" in hidden
    if stride == 36:  # the month-aligned windows count each cell once: both scorings agree
        assert hidden["per_window"]["count"] == 20_434
        assert hidden["per_window"]["mae"] == pytest.approx(hidden["overall"]["mae"], rel=1e-6)
    else:  # SPIN's per-window scoring counts a cell once per window that holds it
        assert hidden["per_window"]["count"] > 20 * 20_434


def test_official_out_of_sample_trains_on_the_train_months_evaluation_cells(aqi36):
    strict = prepare_experiment(_aqi36_impute("out-of-sample-strict", 36, aqi36), aqi36)
    official = prepare_experiment(_aqi36_impute("out-of-sample", 36, aqi36), aqi36)
    eval_cells = aqi36.eval_mask
    train = official.periods.period("train")[:, None, None]
    others = ~train
    assert official.data.mask[eval_cells & train].all()  # the train months' evaluation cells are data
    assert not strict.data.mask[eval_cells & train].any()
    assert not official.data.mask[eval_cells & others].any()  # val and test months': never an input
    assert official.truth_mask[eval_cells].all()
