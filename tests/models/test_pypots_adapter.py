"""``pypots:<Name>``: a PyPOTS imputer inside the engine, trained for the run's step budget in its
fit hook, saved in the run folder and loaded (not refitted) by re-evaluation; samples give CRPS;
reconstruct's hidden stations get the IDW of the imputed series; names are checked."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.run import evaluate_run, run_experiment
from stgraph.models import build_model
from stgraph.models.base import DataSizes
from stgraph.testing import synthetic_stations

BRITS = {"rnn_hidden_size": 8}
CSDI = {"n_layers": 1, "n_heads": 2, "n_channels": 8, "d_time_embedding": 8, "d_feature_embedding": 4,
        "d_diffusion_embedding": 8, "n_diffusion_steps": 5}  # fmt: skip


def _data():
    data = synthetic_stations(num_nodes=6, num_steps=24 * 8, num_channels=2, seed=3)
    return replace(data, eval_mask=data.mask & (np.random.default_rng(0).random(data.mask.shape) < 0.1))


def _cfg(model: str, task: str = "impute", **hparams):
    split = {"method": "kfold", "n_folds": 3, "fold": 0, "val": 1, "time_gap": 0}
    if task == "reconstruct":
        split.update(pattern="random", pattern_ratio=0.4)
    return config_from_dict({
        "name": "pp",
        "data": {"target_channels": ["x0"], "task": task, "window": 12, "eval_steps": []},
        "split": split,
        "model": {"name": model, "hparams": hparams},
        "train": {"steps": 6, "batch_size": 8, "max_train_windows": 32, "max_eval_windows": 16},
    })  # fmt: skip


def test_a_pypots_imputer_trains_for_the_step_budget_and_reevaluates_from_its_saved_fit(tmp_path):
    data = _data()
    run, metrics = run_experiment(_cfg("pypots:BRITS", options=BRITS), tmp_path, data=data, progress=False)
    fit = run.read_json("fit.json")
    assert fit["pypots"] == "BRITS" and fit["budget_steps"] == 6
    # the budget rounded to whole PyPOTS epochs (each ends with the validation PyPOTS keeps a model at)
    assert fit["steps"] == max(1, round(6 / fit["epoch_steps"])) * fit["epoch_steps"]
    assert fit["steps"] % fit["epoch_steps"] == 0 and fit["steps"] != 6
    assert (run.path / "pypots_model.pypots").exists()
    hidden = metrics["test"]["hidden"]["overall"]
    assert hidden["count"] > 0 and np.isfinite(hidden["mae"])
    again = evaluate_run(run.path, data=data)  # loads the saved fit: the same numbers
    assert again["test"]["hidden"]["overall"]["mae"] == pytest.approx(hidden["mae"], rel=1e-6)


def test_pypots_learning_curve_is_the_runs_curve_and_gives_the_leaderboard_its_summary(tmp_path):
    import pandas as pd

    from stgraph.bench.leaderboard import still_improving

    cfg = _cfg("pypots:BRITS", options=BRITS)
    cfg.train.steps = 40  # several PyPOTS epochs
    run, metrics = run_experiment(cfg, tmp_path, data=_data(), progress=False)
    fit = run.read_json("fit.json")
    epochs = fit["steps"] // fit["epoch_steps"]
    assert epochs >= 2 and [r["epoch"] for r in fit["curve"]] == list(range(1, epochs + 1))
    assert [r["step"] for r in fit["curve"]] == [fit["epoch_steps"] * e for e in range(1, epochs + 1)]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_score"]) for r in fit["curve"])
    best = min(fit["curve"], key=lambda r: r["val_score"])  # PyPOTS keeps its best validated epoch
    assert fit["best_epoch"] == best["epoch"]
    table = pd.read_csv(run.path / "learning_curve.csv")
    assert list(table.epoch) == list(range(1, epochs + 1)) and "val_score" in table.columns
    assert (run.path / "learning_curve.png").exists() and any((run.path / "tensorboard").iterdir())
    training = metrics["training"]
    assert training["epochs_run"] == epochs and training["steps"] == fit["steps"]
    assert training["best_step"] == best["step"] and training["stopped"] == "budget"
    assert still_improving(training) == (best["step"] >= 0.75 * fit["steps"])


def test_a_pypots_fit_repeats_exactly_from_its_seed(tmp_path):
    saits = {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_k": 8, "d_v": 8, "d_ffn": 16, "dropout": 0.1}
    results = []
    for name in ("a", "b"):
        cfg = _cfg("pypots:SAITS", options=saits)
        cfg.train.steps = 24
        run, metrics = run_experiment(cfg, tmp_path, name=name, data=_data(), progress=False)
        results.append((metrics["test"]["hidden"]["overall"]["mae"], run.read_json("fit.json")["curve"]))
    assert results[0][0] == results[1][0]
    assert [r["val_score"] for r in results[0][1]] == [r["val_score"] for r in results[1][1]]


def test_a_run_that_crashed_after_its_fit_loads_the_fit_instead_of_refitting(tmp_path, monkeypatch):
    import pypots.imputation

    data = _data()
    run, metrics = run_experiment(_cfg("pypots:BRITS", options=BRITS), tmp_path, data=data, progress=False)
    fit = run.read_json("fit.json")
    run.metrics_path.unlink()  # the evaluation crashed: the run is unfinished, its fit is saved

    def refit(*args, **kwargs):
        raise AssertionError("the saved fit was repeated")

    monkeypatch.setattr(pypots.imputation.BRITS, "fit", refit)
    run, again = run_experiment(_cfg("pypots:BRITS", options=BRITS), tmp_path, data=data, progress=False)
    assert run.read_json("fit.json") == fit and again["training"]["fit"] == fit  # the fit's own record
    mae = metrics["test"]["hidden"]["overall"]["mae"]
    assert again["test"]["hidden"]["overall"]["mae"] == pytest.approx(mae, rel=1e-6)


def test_a_sampling_imputer_is_scored_by_its_median_with_crps(tmp_path):
    _, metrics = run_experiment(_cfg("pypots:CSDI", options=CSDI, samples=3), tmp_path, data=_data(), progress=False)
    hidden = metrics["test"]["hidden"]["overall"]
    assert np.isfinite(hidden["crps"]) and 0.0 <= hidden["coverage90"] <= 1.0 and hidden["samples"] == 3


def test_reconstruct_scores_the_removed_cells_and_the_hidden_stations(tmp_path):
    _, metrics = run_experiment(_cfg("pypots:BRITS", "reconstruct", options=BRITS), tmp_path, data=_data(),
                                progress=False)  # fmt: skip
    assert metrics["test"]["removed"]["overall"]["count"] > 0 and np.isfinite(
        metrics["test"]["removed"]["overall"]["mae"]
    )
    assert np.isfinite(metrics["test"]["hidden"]["overall"]["mae"])


def test_names_are_checked():
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=12, task="impute")
    with pytest.raises(ValueError, match="no imputer named 'Nope'"):
        build_model("pypots:Nope", sizes)
    with pytest.raises(ValueError, match="already sets"):
        build_model("pypots:SAITS", sizes, {"model": "BRITS"})
    with pytest.raises(KeyError, match="family:<name>"):
        build_model("idw:x", sizes)
    with pytest.raises(ValueError, match="not defined for task 'krige'"):
        build_model("pypots:SAITS", replace(sizes, task="krige"))


def _poisoned(data, cells: np.ndarray):
    values, mask = data.values.copy(), data.mask.copy()
    values[cells], mask[cells] = 1e9, True
    return replace(data, values=values, mask=mask)


@pytest.mark.parametrize("task", ["impute", "reconstruct"])
def test_poisoned_hidden_cells_leave_the_fit_and_every_prediction_bit_identical(tmp_path, task):
    """Poisoned with 1e9 — impute: the test period's evaluation cells; reconstruct: the pattern's
    cells outside the val period and the test stations — the saved PyPOTS model and every
    prediction stay bit-identical."""
    from stgraph.engine.experiment import prepare_experiment

    data = _data()
    cfg = _cfg("pypots:BRITS", task, options=BRITS)
    exp = prepare_experiment(cfg, data)
    if task == "impute":
        test = exp.periods.period("test")
        dirty = replace(_poisoned(data, data.eval_mask & test[:, None, None]), eval_mask=data.eval_mask)
    else:
        cells = np.zeros(data.mask.shape[:2], dtype=bool)
        cells[:, exp.pattern.nodes] = exp.pattern.removed
        cells[exp.periods.period("val")] = False
        cells[:, exp.split.indices(data, "test")] = True
        dirty = _poisoned(data, np.broadcast_to(cells[..., None], data.mask.shape))
    run_a, ma = run_experiment(cfg, tmp_path, name="clean", data=data, progress=False)
    run_b, mb = run_experiment(cfg, tmp_path, name="poisoned", data=dirty, progress=False)
    wa, wb = (torch.load(r.path / "pypots_model.pypots", weights_only=False) for r in (run_a, run_b))
    sa, sb = wa["model_state_dict"], wb["model_state_dict"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    for key in ["pred", "pred_visible"] + (["pred_removed"] if task == "reconstruct" else []):
        assert np.array_equal(pa[key], pb[key]), key
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]
