"""Probabilistic scores (CRPS against properscoring, coverage, quantiles) and their path through
the engine: a fake probabilistic model's run writes CRPS and coverage90 with the expected values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from stgraph.engine.config import config_from_dict
from stgraph.engine.experiment import prepare_experiment
from stgraph.engine.probabilistic import crps_from_samples, interval_coverage
from stgraph.engine.run import run_experiment
from stgraph.models import MODELS
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.ops.quantiles import sample_quantiles
from stgraph.testing import synthetic_stations

properscoring = pytest.importorskip("properscoring")


def test_crps_matches_properscoring_including_ties():
    rng = np.random.default_rng(0)
    for s in (1, 2, 7, 50):
        samples = rng.normal(size=(s, 4, 3, 5))
        truth = rng.normal(size=(4, 3, 5))
        ties = np.round(samples * 2) / 2  # many equal samples ...
        truth_on_sample = ties[0].copy()  # ... and truths equal to one of them
        for smp, y in ((samples, truth), (ties, truth), (ties, truth_on_sample)):
            want = properscoring.crps_ensemble(y, np.moveaxis(smp, 0, -1))
            got = crps_from_samples(torch.as_tensor(smp), torch.as_tensor(y))
            assert got.shape == y.shape and got.dtype == torch.float64
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    const = crps_from_samples(torch.full((9, 2), 3.0), torch.tensor([3.0, 5.0]))  # a point mass: CRPS = |x - y|
    np.testing.assert_allclose(const.numpy(), [0.0, 2.0])


def test_crps_is_zero_where_masked_even_for_nan():
    samples = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0))
    truth = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) < 0.5
    truth_nan, samples_nan = truth.masked_fill(~mask, float("nan")), samples.masked_fill(~mask, float("nan"))
    got = crps_from_samples(samples_nan, truth_nan, mask)
    assert (got[~mask] == 0).all()
    torch.testing.assert_close(got[mask], crps_from_samples(samples, truth)[mask])
    with pytest.raises(ValueError, match="disagree"):
        crps_from_samples(samples, truth[:2])


def test_quantiles_match_numpy_and_coverage_on_a_known_case():
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(13, 5, 2))
    qs = (0.0, 0.05, 0.5, 0.95, 1.0)
    np.testing.assert_allclose(
        sample_quantiles(torch.as_tensor(samples), qs).numpy(), np.quantile(samples, qs, axis=0), rtol=1e-12
    )
    # 101 samples 0, 0.01, ..., 1 in every cell: the central 90 % interval is [0.05, 0.95]
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None].expand(101, 8)
    truth = torch.tensor([0.05, 0.5, 0.95, 0.2, -0.1, 0.951, 1.5, 0.0], dtype=torch.float64)
    assert interval_coverage(grid, truth) == pytest.approx(4 / 8)  # bounds count as inside
    mask = torch.tensor([True, True, True, True, False, False, False, True])
    assert interval_coverage(grid, truth, mask) == pytest.approx(4 / 5)
    assert np.isnan(interval_coverage(grid, truth, torch.zeros(8, dtype=torch.bool)))


# --- through the engine ---------------------------------------------------------------------------

OFFSETS = torch.tensor([-1.5, -1.0, -0.5, -0.5, 0.0, 0.0, 0.5, 1.0, 1.5])  # standardised, with ties
DRIFT = 0.05  # the samples' centre moves with the output step h: a cell's windows disagree


@dataclass
class FakeParams:
    shift: float = 0.0


class FakeProbabilistic(StationModel):
    """Samples centre + OFFSETS at every cell, centre = shift + DRIFT · h (standardised); the
    point estimate is their median. No parameters: the engine skips training."""

    trainable = False

    def __init__(self, sizes: DataSizes, params: FakeParams):
        super().__init__(sizes)
        self.params = params

    def forward(self, batch: GraphBatch) -> Prediction:
        b, h, c = batch.x.size(0), self.sizes.horizon, self.sizes.out_channels

        def samples(n: int) -> torch.Tensor:
            centre = self.params.shift + DRIFT * torch.arange(h, dtype=torch.float32)
            return (OFFSETS[:, None] + centre[None]).reshape(-1, 1, h, 1, 1).expand(-1, b, h, n, c).contiguous()

        s_src, s_tgt = samples(batch.pos_src.size(0)), samples(batch.pos_tgt.size(0))
        median = lambda s: sample_quantiles(s, (0.5,))[0]  # noqa: E731
        return Prediction(median(s_src), median(s_tgt), samples_src=s_src, samples_tgt=s_tgt)


def _cfg(task: str, model: str = "fake-prob"):
    return config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": task, "window": 12, "horizon": 6, "eval_steps": [1]},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": model},
            "train": {"batch_size": 8, "max_eval_windows": None},
        }
    )


@pytest.mark.parametrize("task", ["krige", "forecast"])
def test_run_writes_crps_and_coverage_of_a_probabilistic_model(task, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MODELS, "fake-prob", f"{__name__}:FakeProbabilistic:FakeParams")
    data = synthetic_stations(num_nodes=12, num_steps=24 * 12, num_channels=1, seed=4)
    c = _cfg(task)
    run, metrics = run_experiment(c, tmp_path, data=data, progress=False)
    arrays = run.load_predictions()
    exp = prepare_experiment(c, data)
    mean, std = float(exp.train.scaler.mean[0]), float(exp.train.scaler.std[0])
    true, mask, start = arrays["true"][..., 0], arrays["mask"][..., 0], arrays["start"]  # (B, H, N)
    b, h, n = true.shape
    # independent expectation: every (window, step, station) cell's samples, properscoring's CRPS
    centre = DRIFT * np.arange(h)
    smp = mean + std * (OFFSETS.numpy()[None, :] + centre[:, None])  # (H, S)
    cells = pd.DataFrame(
        {
            "time": (start[:, None, None] + np.arange(h)[None, :, None] + 0 * np.arange(n)).ravel(),
            "lead": np.broadcast_to(np.arange(h)[None, :, None], (b, h, n)).ravel(),
            "window": np.broadcast_to(np.arange(b)[:, None, None], (b, h, n)).ravel(),
            "station": np.broadcast_to(np.arange(n), (b, h, n)).ravel(),
            "y": true.ravel(),
            "m": mask.ravel(),
        }
    )
    cells = cells[cells.m]
    s = smp[cells.lead.to_numpy()]
    cells["crps"] = properscoring.crps_ensemble(cells.y.to_numpy(), s)
    lo, hi = np.quantile(s, 0.05, axis=1), np.quantile(s, 0.95, axis=1)
    cells["hit"] = ((lo <= cells.y) & (cells.y <= hi)).astype(float)
    if task == "krige":  # each (time, station) cell once: its windows' CRPS / coverage averaged
        per_cell = cells.groupby(["time", "station"])[["crps", "hit", "y"]].mean()
        assert per_cell.groupby(level=[0, 1]).size().max() == 1 and len(per_cell) < len(cells)
    else:  # forecasts: one row per window
        per_cell = cells
    hidden = metrics["test"]["hidden"]["overall"]
    assert hidden["count"] == len(per_cell) and hidden["samples"] == len(OFFSETS)
    assert hidden["crps"] == pytest.approx(per_cell.crps.mean(), rel=1e-5)
    assert hidden["coverage90"] == pytest.approx(per_cell.hit.mean(), rel=1e-9)
    assert hidden["crps_norm"] == pytest.approx(per_cell.crps.sum() / per_cell.y.abs().sum(), rel=1e-5)
    assert 0.05 < hidden["coverage90"] < 0.95  # the known case is neither trivially all in nor all out
    assert "crps" not in metrics["test"]["visible"]["overall"]
    # the run keeps per-cell CRPS and the 5/50/95 % quantiles in original units; q50 is the point estimate
    assert arrays["crps"].shape == arrays["pred"].shape and arrays["quantiles"].shape == (3, *arrays["pred"].shape)
    np.testing.assert_allclose(arrays["quantile_levels"], [0.05, 0.5, 0.95])
    np.testing.assert_allclose(arrays["quantiles"][1], arrays["pred"], rtol=1e-6)
    q05 = np.broadcast_to(np.quantile(smp, 0.05, axis=1)[None, :, None], (b, h, n))
    np.testing.assert_allclose(arrays["quantiles"][0][..., 0], q05, rtol=1e-5)
    # `stgraph evaluate` prints them
    from stgraph.cli import _print_metrics

    _print_metrics(metrics)
    assert f"CRPS {hidden['crps']:.3f}  coverage90 {hidden['coverage90']:.3f}" in capsys.readouterr().out


def test_daily_scores_are_of_the_samples_daily_means(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "fake-prob", f"{__name__}:FakeProbabilistic:FakeParams")
    c = config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": "forecast", "window": 24, "horizon": 48, "daily": True},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": "fake-prob"},
            "train": {"batch_size": 8, "max_eval_windows": 10},
        }
    )
    data = synthetic_stations(num_nodes=12, num_steps=24 * 30, num_channels=1, seed=4)
    run, metrics = run_experiment(c, tmp_path, data=data, progress=False)
    arrays = run.load_predictions()
    exp = prepare_experiment(c, data)
    smp = exp.train.scaler.mean[0] + exp.train.scaler.std[0] * (OFFSETS.numpy()[:, None] + DRIFT * np.arange(48))
    true, mask = arrays["true"][..., 0], arrays["mask"][..., 0]  # (B, 48, N)
    want = []
    for b, d, n in np.ndindex(true.shape[0], 2, true.shape[2]):  # each (window, day, station) once
        hours = slice(24 * d, 24 * d + 24)
        m = mask[b, hours, n]
        if m.any():
            want.append(properscoring.crps_ensemble(true[b, hours, n][m].mean(), smp[:, hours][:, m].mean(1)))
    hidden = metrics["test"]["hidden"]["overall"]
    assert arrays["crps"].shape == (len(true), 2, true.shape[2], 1) and hidden["count"] == len(want)
    assert hidden["crps"] == pytest.approx(np.mean(want), rel=1e-5)


def test_point_models_are_scored_as_before(tmp_path):
    data = synthetic_stations(num_nodes=12, num_steps=24 * 8, num_channels=1, seed=5)
    run, metrics = run_experiment(_cfg("krige", "idw"), tmp_path, data=data, progress=False)
    assert not {"crps", "coverage90", "crps_norm"} & set(metrics["test"]["hidden"]["overall"])
    assert not {"crps", "quantiles"} & set(run.load_predictions())


class HalfProbabilistic(FakeProbabilistic):
    """Samples at the targets only: an error, not a silent half score."""

    def forward(self, batch: GraphBatch) -> Prediction:
        pred = super().forward(batch)
        pred.samples_src = None
        return pred


def test_samples_must_cover_both_outputs(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "half-prob", f"{__name__}:HalfProbabilistic:FakeParams")
    data = synthetic_stations(num_nodes=12, num_steps=24 * 8, num_channels=1, seed=5)
    with pytest.raises(ValueError, match="samples_src is None"):
        run_experiment(_cfg("krige", "half-prob"), tmp_path, data=data, progress=False)
