"""AMLSG and LightGBM-alone as StationModels: end to end in the engine for every task, artefacts,
determinism of the refit, leak-freedom (poisoned test stations), rows and helpers."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from stgraph.data.encodings import cyclic_time_encoding
from stgraph.engine.config import config_from_dict
from stgraph.engine.fitting import fit_context
from stgraph.engine.run import build_experiment, evaluate_run, run_experiment
from stgraph.models import DataSizes, build_model
from stgraph.models.amlsg import AMLSG, RowSampler, StationIds, window_months
from stgraph.models.anchors import anchor_prediction
from stgraph.testing import synthetic_stations
from tests.data.test_poisoning import poisoned
from tests.models.contract import make_batch

FAST = {
    "k": 3,
    "lags": [1, 2],
    "n_folds": 3,
    "n_estimators": 40,
    "learning_rate": 0.15,
    "num_leaves": 7,
    "min_child_samples": 10,
    "mlp_epochs": 3,
    "mlp_hidden": [16],
    "max_rows": 1500,
    "max_val_rows": 400,
    "num_threads": 1,
}


def untimed(record):
    """A fit record without its timings (every key ending in 'seconds'), the only part that may vary."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if not k.endswith("seconds")}
    if isinstance(record, list):
        return [untimed(v) for v in record]
    return record


@pytest.fixture(scope="module")
def stations():
    """150 days at 12-hour steps: the training period spans three calendar months, so the folds are
    blocked in time too."""
    return synthetic_stations(num_nodes=12, num_steps=300, num_channels=2, seed=0, freq="12h")


def cfg(task: str, model: str = "amlsg", **hparams):
    return config_from_dict(
        {
            "name": f"{model}-{task}",
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "horizon": 4, "eval_steps": [1, 4]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": model, "hparams": {**FAST, **hparams}},
            "train": {"batch_size": 8, "max_train_windows": 48, "max_eval_windows": 48},
        }
    )


@pytest.mark.parametrize(("model", "task"), [("amlsg", "krige"), ("amlsg", "forecast"), ("lgbm", "krige")])
def test_runs_end_to_end_and_leaves_its_artefacts(tmp_path, stations, model, task):
    run, metrics = run_experiment(cfg(task, model), tmp_path, data=stations, progress=False)
    fit = json.loads((run.path / "fit.json").read_text())
    assert fit == metrics["training"]["fit"]
    assert fit["rows"][0] > 100 and fit["val_rows"][0] > 10 and fit["features"] == len(fit["feature_names"])
    assert fit["passthrough"] == (["idw"] if task == "krige" else ["idw_last"])
    learners = fit["channels"][0]["learners"]
    assert set(learners) == ({"lgbm", "mlp", "ridge"} if model == "amlsg" else {"lgbm"})
    assert fit["channels"][0].get("time_blocked", model == "lgbm")  # lgbm: one model, no folds
    assert all(np.isfinite(v["val_mae"]) for v in learners.values())
    if model == "amlsg":
        weights = fit["channels"][0]["meta"]["weights"]  # the default meta-learner: greedy ensemble selection
        assert set(weights) == {"pred:lgbm", "pred:mlp", "pred:ridge"} and abs(sum(weights.values()) - 1) < 1e-9
    importance = json.loads((run.path / "feature_importance.json").read_text())
    assert set(importance) == set(fit["feature_names"])
    assert (run.path / "feature_importance.png").stat().st_size > 5000
    overall = metrics["test"]["hidden"]["overall"]
    assert overall["count"] > 0 and np.isfinite(overall["mae"])
    preds = run.load_predictions()
    assert np.isfinite(preds["pred"]).all() and np.isfinite(preds["pred_visible"]).all()


def test_impute_fills_the_evaluation_cells(tmp_path):
    data = synthetic_stations(num_nodes=8, num_steps=24 * 12, num_channels=1, seed=4)
    held = data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1)
    data = replace(data, eval_mask=held)
    c = cfg("impute")
    c.split.time_gap = 0
    run, metrics = run_experiment(c, tmp_path, data=data, progress=False)
    fit = metrics["training"]["fit"]
    assert "own_locf" in fit["feature_names"] and fit["passthrough"] == ["idw"]
    hidden = metrics["test"]["hidden"]["overall"]
    assert hidden["count"] > 0 and np.isfinite(hidden["mae"])
    assert (run.path / "feature_importance.png").exists()


def test_refit_is_deterministic(tmp_path, stations):
    """evaluate_run fits the model again: the same choices and bit-identical predictions."""
    run, _ = run_experiment(cfg("krige"), tmp_path, data=stations, progress=False)
    first = run.load_predictions()
    evaluate_run(run.path, data=stations)
    again = run.load_predictions()
    assert np.array_equal(first["pred"], again["pred"]) and np.array_equal(first["pred_visible"], again["pred_visible"])


@pytest.mark.parametrize("task", ["krige", "forecast"])
def test_test_stations_never_reach_the_fit_or_the_predictions(tmp_path, stations, task):
    """Poison the test-role stations (values 1e9, every cell 'observed'): the fit record (minus its
    timing) and every prediction stay bit-identical; only the truth they are scored on moves."""
    c = cfg(task)
    exp, _ = build_experiment(c, stations)
    test = exp.split.indices(exp.data, "test")
    run_a, ma = run_experiment(c, tmp_path, name="clean", data=stations, progress=False)
    run_b, mb = run_experiment(c, tmp_path, name="poisoned", data=poisoned(stations, test), progress=False)
    assert untimed(ma["training"]["fit"]) == untimed(mb["training"]["fit"])
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    assert np.array_equal(pa["pred"], pb["pred"]) and np.array_equal(pa["pred_visible"], pb["pred_visible"])
    assert not np.array_equal(pa["true"], pb["true"])
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]


def test_fitted_model_ignores_unobserved_inputs_and_echoes_observed_ones(stations):
    exp, model = build_experiment(cfg("krige"), stations)
    model.fit(fit_context(model, exp))
    inputs, _ = exp.eval_windows("test", 8)
    src, tgt = exp.roles("test")
    batch = exp.batch(inputs[torch.arange(8)], src, tgt)
    ref = model(batch)
    noisy = copy.copy(batch)
    noisy.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e6))
    out = model(noisy)
    assert torch.equal(out.src, ref.src) and torch.equal(out.tgt, ref.tgt)
    seen = batch.x_mask[..., [0]]
    assert torch.equal(ref.src[seen], batch.x[..., [0]][seen])
    anchor = anchor_prediction(batch, model.sizes)
    assert not torch.equal(ref.tgt, anchor.tgt)  # the stack, not the anchor
    assert not list(model.parameters())


def test_unfitted_model_is_its_anchor_and_reset_forgets_the_fit(stations):
    batch, sizes = make_batch("krige")
    model = build_model("amlsg", sizes, FAST)
    out, anchor = model(batch), anchor_prediction(batch, sizes)
    assert torch.equal(out.tgt, anchor.tgt) and torch.equal(out.src, anchor.src)
    exp, fitted = build_experiment(cfg("forecast"), stations)
    fitted.fit(fit_context(fitted, exp))
    assert fitted.stacks is not None
    fitted.reset_parameters()
    assert fitted.stacks is None


def test_rows_come_from_hidden_cells_only(stations):
    """Training rows: every observed target cell of a hidden station, and no cell the model was given."""
    exp, model = build_experiment(cfg("krige", time_blocks=False), stations)
    ctx = fit_context(model, exp)
    batch, terms = next(iter(ctx.train_batches()))
    sampler, ids = RowSampler(10**6, 0), StationIds()
    model._rows(batch, terms, [sampler], ids)
    x, y, groups, months = sampler.result()
    tgt_mask = terms[0][2]
    assert terms[0][0] == "tgt" and len(y) == int(tgt_mask.sum())  # the src term's cells were all given
    assert np.array_equal(y, terms[0][1][tgt_mask].double().numpy())
    assert set(groups) == set(range(batch.pos_tgt.size(0))) and x.shape[1] == len(model.columns)


def test_row_sampler_keeps_a_uniform_sample_in_arrival_order():
    a = RowSampler(50, seed=1)
    for start in range(0, 1000, 100):
        a.add(np.arange(start, start + 100))
    (kept,) = a.result()
    assert len(kept) == 50 and np.all(np.diff(kept) > 0) and kept.min() < 200 and kept.max() > 800
    b = RowSampler(50, seed=1)
    for start in range(0, 1000, 100):
        b.add(np.arange(start, start + 100))
    assert np.array_equal(kept, b.result()[0])
    small = RowSampler(50, seed=1)
    small.add(np.arange(30))
    assert np.array_equal(small.result()[0], np.arange(30))


def test_helpers_decode_months_and_name_stations():
    times = pd.to_datetime(["2021-01-15 03:00", "2021-06-30 23:00", "2021-12-01 00:00"])
    enc = torch.from_numpy(cyclic_time_encoding(times))[:, None, :]  # (B=3, W=1, 6)
    assert window_months(enc).tolist() == [0, 5, 11]
    ids = StationIds()
    a = ids(torch.tensor([[40.0, 116.0], [39.9, 116.3]]))
    b = ids(torch.tensor([[39.9, 116.3], [40.1, 116.1], [40.0, 116.0]]))
    assert len(set(a)) == 2 and b[0] == a[1] and b[2] == a[0] and b[1] not in a


def test_bad_options_are_errors(stations):
    sizes = DataSizes(2, 1, (0,), 12, 12, task="krige")
    with pytest.raises(ValueError, match="unknown learner"):
        AMLSG(sizes, AMLSG.params_cls(learners=("forest",)))
    with pytest.raises(ValueError, match="max_rows"):
        build_model("amlsg", sizes, {"max_rows": 0})
    exp, model = build_experiment(cfg("krige", passthrough=["idw_last"]), stations)
    with pytest.raises(ValueError, match="passthrough features \\['idw_last'\\]"):
        model.fit(fit_context(model, exp))
