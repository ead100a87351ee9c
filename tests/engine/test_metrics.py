"""Masked metrics on tiny inputs whose expected values are worked out by hand in the comments."""

import math

import pytest
import torch

from stgraph.engine.metrics import (
    daily_means,
    masked_metrics,
    metrics_per_station,
    metrics_per_step,
    summarize_metrics,
)


def _close(got: dict, want: dict) -> None:
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_masked_cells_are_ignored():
    # Observed: true 1, 2, 3, 4; pred 2, 2, 2, 4 -> errors 1, 0, -1, 0.
    # MAE = 2/4 = 0.5; RMSE = sqrt(2/4); mean(true) = 2.5, SST = 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # SSE = 2 -> R2 = 1 - 2/5 = 0.6; MAPE = (1/1 + 0 + 1/3 + 0) / 4 * 100 = 33.33...%.
    # The two masked-out cells hold an absurd prediction and a NaN: neither may count.
    true = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, math.nan]])
    pred = torch.tensor([[2.0, 2.0, 2.0], [4.0, 1e9, math.nan]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    got = masked_metrics(pred, true, mask)
    _close(got, {"mae": 0.5, "rmse": math.sqrt(0.5), "r2": 0.6, "mape": 100.0 / 3.0})
    assert got["count"] == 4 and isinstance(got["count"], int)
    assert all(isinstance(got[k], float) for k in ("mae", "rmse", "r2", "mape"))


def test_r2_perfect_and_mean_prediction():
    true = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.ones(4, dtype=torch.bool)
    # Perfect: SSE = 0 -> R2 = 1, all errors 0.
    _close(masked_metrics(true.clone(), true, mask), {"mae": 0.0, "rmse": 0.0, "r2": 1.0, "mape": 0.0})
    # Predicting the mean 2.5 everywhere: SSE = SST = 5 -> R2 = 0; MAE = (1.5 + 0.5 + 0.5 + 1.5) / 4 = 1.
    _close(masked_metrics(torch.full((4,), 2.5), true, mask), {"r2": 0.0, "mae": 1.0})


def test_r2_is_nan_for_constant_truth():
    # SST = 0: R2 undefined, the other metrics still defined (errors 1, 1 -> MAE 1).
    got = masked_metrics(torch.tensor([4.0, 4.0]), torch.tensor([3.0, 3.0]), torch.tensor([True, True]))
    assert math.isnan(got["r2"]) and got["mae"] == pytest.approx(1.0)


def test_mape_floor_with_zero_truth():
    true = torch.tensor([0.0, 10.0])
    pred = torch.tensor([0.5, 11.0])
    mask = torch.tensor([True, True])
    # floor 1: (0.5 / max(0, 1) + 1 / 10) / 2 * 100 = (0.5 + 0.1) / 2 * 100 = 30%.
    assert masked_metrics(pred, true, mask)["mape"] == pytest.approx(30.0)
    # floor 2: (0.5 / 2 + 1 / 10) / 2 * 100 = (0.25 + 0.1) / 2 * 100 = 17.5%.
    assert masked_metrics(pred, true, mask, mape_floor=2.0)["mape"] == pytest.approx(17.5)


def test_empty_mask_gives_nan_and_zero_count():
    x = torch.ones(2, 3)
    got = masked_metrics(x, x, torch.zeros(2, 3, dtype=torch.bool))
    assert got["count"] == 0
    assert all(math.isnan(got[k]) for k in ("mae", "rmse", "r2", "mape"))


def _bhnc_example():
    """(B, H, N, C) = (2, 3, 2, 1); one masked-out cell (b1, h2, n1) holds pred 1e9.

    true   b0: h0 [1, 2], h1 [3, 4], h2 [5, 6]    b1: h0 [2, 3], h1 [4, 5], h2 [6, 7]
    error  b0: h0 [1,-1], h1 [0, 2], h2 [3, 0]    b1: h0 [1, 1], h1 [-2,0], h2 [0, x]
    """
    true = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]])
    err = torch.tensor([[[1.0, -1.0], [0.0, 2.0], [3.0, 0.0]], [[1.0, 1.0], [-2.0, 0.0], [0.0, 1e9]]])
    mask = torch.ones(2, 3, 2, dtype=torch.bool)
    mask[1, 2, 1] = False
    return (true + err).unsqueeze(-1), true.unsqueeze(-1), mask.unsqueeze(-1)


def test_metrics_per_step():
    pred, true, mask = _bhnc_example()
    got = metrics_per_step(pred, true, mask)
    assert len(got) == 3
    # h0: errors 1, -1, 1, 1; truth 1, 2, 2, 3 (mean 2, SST 2); SSE 4 -> R2 = 1 - 4/2 = -1;
    #     MAPE = (1/1 + 1/2 + 1/2 + 1/3) / 4 * 100 = 58.33...%.
    _close(got[0], {"mae": 1.0, "rmse": 1.0, "r2": -1.0, "mape": 700.0 / 12.0, "count": 4})
    # h1: errors 0, 2, -2, 0; truth 3, 4, 4, 5 (SST 2); SSE 8 -> RMSE sqrt(2), R2 = 1 - 8/2 = -3;
    #     MAPE = (0 + 2/4 + 2/4 + 0) / 4 * 100 = 25%.
    _close(got[1], {"mae": 1.0, "rmse": math.sqrt(2.0), "r2": -3.0, "mape": 25.0, "count": 4})
    # h2: errors 3, 0, 0 (the 1e9 cell masked out); truth 5, 6, 6, mean 17/3,
    #     SST = 4/9 + 1/9 + 1/9 = 2/3; SSE 9 -> RMSE sqrt(3), R2 = 1 - 9 / (2/3) = -12.5; MAPE = (3/5) / 3 * 100 = 20%.
    _close(got[2], {"mae": 1.0, "rmse": math.sqrt(3.0), "r2": -12.5, "mape": 20.0, "count": 3})


def test_metrics_per_station():
    pred, true, mask = _bhnc_example()
    got = metrics_per_station(pred, true, mask)
    assert len(got) == 2
    # n0: errors 1, 0, 3, 1, -2, 0 -> MAE 7/6, SSE 15, RMSE sqrt(15/6); truth 1, 3, 5, 2, 4, 6, mean 3.5,
    #     SST = 6.25 + 0.25 + 2.25 + 2.25 + 0.25 + 6.25 = 17.5 -> R2 = 1 - 15/17.5 = 1/7;
    #     MAPE = (1/1 + 0 + 3/5 + 1/2 + 2/4 + 0) / 6 * 100 = 2.6 / 6 * 100.
    _close(got[0], {"mae": 7.0 / 6.0, "rmse": math.sqrt(2.5), "r2": 1.0 / 7.0, "mape": 260.0 / 6.0, "count": 6})
    # n1: errors -1, 2, 0, 1, 0 (one masked) -> MAE 4/5, SSE 6, RMSE sqrt(6/5); truth 2, 4, 6, 3, 5, mean 4,
    #     SST = 4 + 0 + 4 + 1 + 1 = 10 -> R2 = 0.4; MAPE = (1/2 + 2/4 + 0 + 1/3 + 0) / 5 * 100 = 80/3 %.
    _close(got[1], {"mae": 0.8, "rmse": math.sqrt(1.2), "r2": 0.4, "mape": 80.0 / 3.0, "count": 5})


def test_summarize_metrics():
    pred, true, mask = _bhnc_example()
    got = summarize_metrics(pred, true, mask, steps=[1, 3])
    # Overall: 11 observed cells, |errors| sum to 4 + 4 + 3 = 11 -> MAE 1.
    assert got["overall"]["count"] == 11 and got["overall"]["mae"] == pytest.approx(1.0)
    assert len(got["per_step"]) == 3 and len(got["per_station"]) == 2
    assert set(got["at_steps"]) == {"1", "3"}
    assert got["at_steps"]["3"] == got["per_step"][2]
    assert "at_steps" not in summarize_metrics(pred, true, mask)
    with pytest.raises(ValueError, match="outside"):
        summarize_metrics(pred, true, mask, steps=[4])


def test_daily_means_over_observed_hours():
    # (B, H, N, C) = (1, 48, 2, 1); station 0 holds 0..47, station 1 holds 100..147.
    hours = torch.arange(48, dtype=torch.float32)
    x = torch.stack([hours, hours + 100.0], dim=-1).reshape(1, 48, 2, 1)
    mask = torch.ones(1, 48, 2, 1, dtype=torch.bool)
    mask[0, :12, 1] = False  # station 1, day 0: only hours 12..23 observed
    mask[0, 24:, 1] = False  # station 1, day 1: nothing observed
    x[0, 24:, 1] = math.nan  # ...and NaN there must not leak
    means, day_mask = daily_means(x, mask)
    assert means.shape == (1, 2, 2, 1) and day_mask.shape == (1, 2, 2, 1)
    # Station 0: mean(0..23) = 11.5, mean(24..47) = 35.5. Station 1: mean(112..123) = 117.5, then no data -> 0.
    assert means[0, :, :, 0].tolist() == [[11.5, 117.5], [35.5, 0.0]]
    assert day_mask[0, :, :, 0].tolist() == [[True, True], [True, False]]


def test_daily_means_rejects_partial_days():
    x = torch.zeros(1, 30, 1, 1)
    with pytest.raises(ValueError, match=r"H=30.*steps_per_day=24"):
        daily_means(x, torch.ones_like(x, dtype=torch.bool))
