"""In-sample imputation (AQI-36 protocol): evaluation cells never reach the input, the scaler or
training, and each one is scored exactly once."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.metrics import average_overlapping_windows
from stgraph.engine.run import run_experiment
from stgraph.testing import synthetic_stations
from tests.models.test_contract import TINY


def impute_cfg(model="idw", **train):
    return config_from_dict(
        {
            "name": "imp",
            "data": {
                "dataset": "aqi36",
                "target_channels": ["PM2.5"],
                "task": "impute",
                "window": 12,
                "eval_steps": [],
            },
            "split": {"test_months": [3, 6, 9, 12], "time_gap": 0, "time_val": 0.1},
            "model": {"name": model, "hparams": TINY[model]},
            "train": {"epochs": 1, "batch_size": 16, "max_train_windows": 32, "max_eval_windows": 64, **train},
        }
    )


@pytest.fixture(scope="module")
def aqi36_slice(aqi36):
    return aqi36.select_times("2015-02-01", "2015-04-30")  # February, March (test), April


def test_evaluation_cells_are_not_inputs(aqi36_slice):
    exp = prepare_experiment(impute_cfg(), aqi36_slice)
    ev = aqi36_slice.eval_mask
    train = exp.periods.period("train")[:, None, None]
    assert (ev & ~train).any() and not (exp.data.mask & ev & ~train).any()  # val/test: removed from inputs
    assert exp.data.mask[ev & train].all()  # the published out-of-sample setting: train months' cells are data
    assert np.array_equal(exp.data.values[ev & train], aqi36_slice.values[ev & train])
    assert (exp.data.values[ev & ~train] == 0).all() and np.array_equal(exp.truth_mask, ev)
    strict = impute_cfg()
    strict.split.impute_training = "out-of-sample-strict"
    assert not (prepare_experiment(strict, aqi36_slice).data.mask & ev).any()
    assert np.array_equal(exp.truth_values[ev], aqi36_slice.values[ev])  # the truth keeps them
    assert len(exp.split.train) == 36 and not exp.split.test


@pytest.mark.parametrize("model", ["idw", "knn", "persistence", "ignnk"])
def test_poisoned_evaluation_cells_change_nothing_but_the_score(tmp_path, aqi36_slice, model):
    """The test months' evaluation cells reach nothing (the train months' are training data in the
    published out-of-sample setting, and the val months' are what validation scores)."""
    test = prepare_experiment(impute_cfg(model), aqi36_slice).periods.period("test")[:, None, None]
    ev = aqi36_slice.eval_mask & test
    values = aqi36_slice.values.copy()
    values[ev] = 1e9
    poisoned = replace(aqi36_slice, values=values, eval_mask=aqi36_slice.eval_mask.copy())
    cfg = impute_cfg(model)
    run_a, ma = run_experiment(cfg, tmp_path, name="clean", data=aqi36_slice, progress=False)
    run_b, mb = run_experiment(cfg, tmp_path, name="poisoned", data=poisoned, progress=False)
    pa, pb = run_a.load_predictions(), run_b.load_predictions()
    assert np.array_equal(pa["pred"], pb["pred"])
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]


def test_fit_hook_never_sees_test_cells(tmp_path, aqi36_slice):
    """lerp-knn chooses tau on the val period's evaluation cells; poisoning the test period's
    evaluation cells changes its score only, never its choice or its predictions."""
    march = np.asarray(aqi36_slice.times.astype("datetime64[M]") == np.datetime64("2015-03"))
    ev = aqi36_slice.eval_mask & march[:, None, None]
    values = aqi36_slice.values.copy()
    values[ev] = 1e9
    poisoned = replace(aqi36_slice, values=values, eval_mask=aqi36_slice.eval_mask.copy())
    cfg = impute_cfg("lerp-knn")
    cfg.model.hparams = {}  # tau: chosen by the fit hook
    run_a, ma = run_experiment(cfg, tmp_path, name="clean", data=aqi36_slice, progress=False)
    run_b, mb = run_experiment(cfg, tmp_path, name="poisoned", data=poisoned, progress=False)
    assert ma["training"]["fit"]["chosen"] and ma["training"]["fit"] == mb["training"]["fit"]
    assert np.array_equal(run_a.load_predictions()["pred"], run_b.load_predictions()["pred"])
    assert ma["test"]["hidden"]["overall"]["mae"] < 1e4 < mb["test"]["hidden"]["overall"]["mae"]


def test_lerp_knn_beats_its_parts_on_real_data(tmp_path, aqi36_slice):
    """On real AQI-36 cells the gap-weighted blend is better than either interpolation alone."""
    maes = {}
    for name, hp in (("lerp", {}), ("knn", {"k": 3}), ("lerp-knn", {})):
        cfg = impute_cfg("idw", max_eval_windows=None)
        cfg.model.name, cfg.model.hparams = name, hp
        _, m = run_experiment(cfg, tmp_path, name=name, data=aqi36_slice, progress=False)
        maes[name] = m["test"]["hidden"]["overall"]["mae"]
    assert maes["lerp-knn"] < min(maes["lerp"], maes["knn"]), maes


def test_each_evaluation_cell_is_scored_once(tmp_path, aqi36_slice):
    cfg = impute_cfg("idw", max_eval_windows=None)
    _, m = run_experiment(cfg, tmp_path, data=aqi36_slice, progress=False)
    march = np.asarray(aqi36_slice.times.astype("datetime64[M]") == np.datetime64("2015-03"))
    assert m["test"]["hidden"]["overall"]["count"] == int(aqi36_slice.eval_mask[march].sum())


def test_impute_needs_an_evaluation_mask():
    data = synthetic_stations(num_nodes=6, num_steps=24 * 40, num_channels=1, seed=0)
    cfg = config_from_dict({"data": {"target_channels": ["x0"], "task": "impute", "window": 12}})
    with pytest.raises(ValueError, match="has no eval_mask"):
        prepare_experiment(cfg, data)


def test_average_overlapping_windows_by_hand():
    # two windows of 3 steps starting at t=0 and t=1 over one station: steps 1 and 2 overlap
    pred = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]]).view(2, 3, 1, 1)
    true = torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]).view(2, 3, 1, 1)
    mask = torch.tensor([[True, True, True], [True, False, True]]).view(2, 3, 1, 1)
    p, t, m = average_overlapping_windows(pred, true, mask, torch.tensor([0, 1]))
    # t=1: (2 + 5) / 2; t=2: only the first window scores it (the second leaves it out): 3
    assert p.flatten().tolist() == [1.0, 3.5, 3.0, 7.0]
    assert t.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert p.shape == (1, 4, 1, 1) and m.flatten().tolist() == [True, True, True, True]
    none = torch.zeros_like(mask)
    assert not average_overlapping_windows(pred, true, none, torch.tensor([0, 1]))[2].any()


def test_hidden_cells_come_as_gaps_of_the_block_length():
    from stgraph.engine.tasks import hidden_cells

    g = torch.Generator().manual_seed(0)
    points = hidden_cells((64, 48, 10, 2), 0.25, 1, g)
    assert abs(points.float().mean() - 0.25) < 0.01
    gaps = hidden_cells((64, 48, 10, 2), 0.25, 6, g)
    assert 0.15 < gaps.float().mean() < 0.3
    series = gaps.permute(0, 2, 3, 1).reshape(-1, 48).int()
    edges = torch.diff(torch.nn.functional.pad(series, (1, 1)), dim=1)
    starts, ends = (edges == 1).nonzero(), (edges == -1).nonzero()
    lengths = ends[:, 1] - starts[:, 1]
    inside = (starts[:, 1] > 0) & (ends[:, 1] < 48)  # gaps cut by the window edges may be shorter
    assert (lengths[inside] >= 6).all()
    assert (lengths[inside] == 6).float().mean() > 0.5  # mostly single gaps, some merged


def test_uniform_ratio_draws_one_missing_rate_per_window_from_0_to_1():
    """hide_ratio: uniform (CSDI's random strategy): each window hides its own fraction of cells,
    spread over (0, 1); fixed hides hide_fraction in every window."""
    from stgraph.data.windows import Windows
    from stgraph.engine.config import TrainConfig
    from stgraph.engine.tasks.impute import Impute

    b, w, n = 256, 24, 20
    g = torch.Generator().manual_seed(0)
    win = Windows(torch.randn(b, w, n, 1, generator=g), torch.ones(b, w, n, 1, dtype=torch.bool),
                  torch.zeros(b, w, n, 1), torch.ones(b, w, n, 1, dtype=torch.bool), torch.zeros(b, w, 6),
                  torch.zeros(b, w, 6), torch.arange(b))  # fmt: skip
    rates = {}
    for ratio in ("fixed", "uniform"):
        tc = TrainConfig(hide_fraction=0.25, hide_ratio=ratio)
        view = Impute().training_view(win, np.arange(n), np.array([0]), tc, torch.Generator().manual_seed(1))
        rates[ratio] = (~view.w.x_mask).float().mean(dim=(1, 2, 3))  # (B,) hidden share per window
    assert (rates["fixed"] - 0.25).abs().max() < 0.12
    u = rates["uniform"]
    assert u.min() < 0.05 and u.max() > 0.95 and abs(float(u.mean()) - 0.5) < 0.06 and u.std() > 0.25


def test_history_pattern_hides_where_another_window_is_missing():
    from stgraph.engine.tasks.impute import history_cells

    mask = torch.rand(4, 12, 5, 1, generator=torch.Generator().manual_seed(0)) > 0.3
    hide = history_cells(mask, torch.Generator().manual_seed(1))
    shifted = [torch.equal(hide, ~torch.roll(mask, s, dims=0)) for s in range(1, 4)]
    assert sum(shifted) == 1  # exactly another window's missing cells, never the window's own
    assert not torch.equal(hide, ~mask)


def test_per_station_scaling_is_undone_per_station(tmp_path, aqi36_slice):
    """``data.scaler: station`` (CSDI's normalisation): linear interpolation in time is
    affine-equivariant per station, so with one scaler per station it gives the same predictions in
    original units as with one per channel, except where a window holds no observation of the
    station (it then predicts 0 standardised: the station's own training mean, not the network's);
    a model mixing stations (kNN) differs."""
    preds, exps = {}, {}
    for scaler in ("channel", "station"):
        for name, hp in (("lerp", {}), ("knn", {"k": 3})):
            cfg = impute_cfg("idw", max_eval_windows=None)
            cfg.model.name, cfg.model.hparams, cfg.data.scaler = name, hp, scaler
            run, m = run_experiment(cfg, tmp_path, name=f"{name}-{scaler}", data=aqi36_slice, progress=False)
            p = run.load_predictions()
            preds[name, scaler] = p["pred"][p["mask"]]
            node = np.nonzero(p["mask"])[2]  # the station of each scored cell
            assert np.isfinite(m["test"]["hidden"]["overall"]["mae"])
        exps[scaler] = prepare_experiment(cfg, aqi36_slice)
    same = np.isclose(preds["lerp", "station"], preds["lerp", "channel"], rtol=1e-4, atol=1e-2)
    assert same.mean() > 0.5, same.mean()  # window 12: AQI-36 outages leave many windows without the station
    ch = int(exps["station"].targets[0])
    own_mean = exps["station"].train.scaler.mean[node, ch]
    np.testing.assert_allclose(preds["lerp", "station"][~same], own_mean[~same], rtol=1e-5)
    np.testing.assert_allclose(preds["lerp", "channel"][~same], exps["channel"].train.scaler.mean[ch], rtol=1e-5)
    assert np.abs(preds["knn", "station"] - preds["knn", "channel"]).max() > 1.0
