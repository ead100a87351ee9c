"""Masked forecast metrics in original units: overall, per horizon step, per station, on daily means.

Every metric is computed only where ``mask`` is True, so missing targets (and whatever garbage the
prediction holds there, NaN included) never count. The caller inverse-scales before calling.
Sums are accumulated in float64 and reduced with tensor ops; results come back as Python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

METRIC_KEYS = ("mae", "rmse", "r2", "mape", "count")


def _check_inputs(pred: Tensor, true: Tensor, mask: Tensor, *, ndim: int | None = None) -> None:
    """Raise ValueError unless ``pred``, ``true`` and ``mask`` share one shape (of ``ndim`` dims if given)."""
    if pred.shape != true.shape or pred.shape != mask.shape:
        raise ValueError(
            f"pred, true and mask must share one shape, got {tuple(pred.shape)}, {tuple(true.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if ndim is not None and pred.dim() != ndim:
        raise ValueError(f"expected (B, H, N, C) inputs with {ndim} dims, got shape {tuple(pred.shape)}")


def _sufficient_stats(pred: Tensor, true: Tensor, mask: Tensor, dims: tuple[int, ...], mape_floor: float) -> dict:
    """Masked sums reduced over ``dims``, in float64.

    Args:
        pred: any shape S.
        true: S.
        mask: S, bool; False cells contribute nothing (their values may be NaN or absurd).
        dims: the axes to reduce over; the kept axes give the shape K of every statistic.
        mape_floor: the smallest denominator of the absolute percentage error.

    Returns:
        ``{"count", "sum_abs", "sum_sq", "sum_y", "sum_y2", "sum_ape"}``, each a tensor of shape K:
        the number of observed cells, sum |e|, sum e², sum y, sum y² and sum |e| / max(|y|, floor).
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=torch.float64, device=true.device)
    y = torch.where(m, true.detach().to(torch.float64), zero)
    e = torch.where(m, pred.detach().to(torch.float64), zero) - y
    abs_e = e.abs()
    return {
        "count": m.sum(dim=dims),
        "sum_abs": abs_e.sum(dim=dims),
        "sum_sq": (e * e).sum(dim=dims),
        "sum_y": y.sum(dim=dims),
        "sum_y2": (y * y).sum(dim=dims),
        "sum_ape": (abs_e / y.abs().clamp_min(mape_floor)).sum(dim=dims),
    }


def _stats_to_metrics(stats: dict) -> list[dict]:
    """Turn 1-D sufficient statistics of length K into K metric dicts.

    Groups without observed cells get NaN for every metric; R² is NaN where the observed truth is
    constant (SST = 0), as it is undefined there.

    Args:
        stats: the output of ``_sufficient_stats``, each value of shape (K,).

    Returns:
        K dicts with keys ``mae``, ``rmse``, ``r2``, ``mape`` (floats, MAPE in %) and ``count`` (int).
    """
    count = stats["count"]
    n = count.to(torch.float64).clamp_min(1.0)
    observed = count > 0
    nan = torch.full_like(n, math.nan)
    mae = torch.where(observed, stats["sum_abs"] / n, nan)
    rmse = torch.where(observed, (stats["sum_sq"] / n).sqrt(), nan)
    mape = torch.where(observed, 100.0 * stats["sum_ape"] / n, nan)
    sst = stats["sum_y2"] - stats["sum_y"] ** 2 / n
    # Relative tolerance: float64 cancellation leaves tiny positive SST for constant truth.
    has_spread = observed & (sst > 1e-12 * stats["sum_y2"])
    r2 = torch.where(has_spread, 1.0 - stats["sum_sq"] / torch.where(has_spread, sst, torch.ones_like(sst)), nan)
    rows = zip(mae.tolist(), rmse.tolist(), r2.tolist(), mape.tolist(), count.tolist(), strict=True)
    return [dict(zip(METRIC_KEYS, (*vals[:4], int(vals[4])), strict=True)) for vals in rows]


def _grouped_metrics(pred: Tensor, true: Tensor, mask: Tensor, axis: int, mape_floor: float) -> list[dict]:
    """One metric dict per index of ``axis``, reducing over every other axis."""
    if not mape_floor > 0:
        raise ValueError(f"mape_floor must be positive, got {mape_floor}")
    dims = tuple(d for d in range(pred.dim()) if d != axis)
    return _stats_to_metrics(_sufficient_stats(pred, true, mask, dims, mape_floor))


def masked_metrics(pred: Tensor, true: Tensor, mask: Tensor, *, mape_floor: float = 1.0) -> dict:
    """MAE, RMSE, R², MAPE over all observed cells.

    Args:
        pred: any shape S, original units.
        true: S, original units.
        mask: S, bool; True where the truth is observed and should be scored.
        mape_floor: MAPE divides by max(|true|, mape_floor), so near-zero truths cannot blow it up.

    Returns:
        ``{"mae", "rmse", "r2", "mape", "count"}``: R² = 1 - SSE/SST with SST around the mean of the
        observed truth, MAPE in percent, count the number of observed cells (int). With no observed
        cell the four metrics are NaN and count is 0.
    """
    _check_inputs(pred, true, mask)
    flat = (pred.reshape(1, -1), true.reshape(1, -1), mask.reshape(1, -1))
    return _grouped_metrics(*flat, axis=0, mape_floor=mape_floor)[0]


def metrics_per_step(pred: Tensor, true: Tensor, mask: Tensor, *, mape_floor: float = 1.0) -> list[dict]:
    """The metrics of ``masked_metrics`` for each horizon step.

    Args:
        pred: (B, H, N, C), original units.
        true: (B, H, N, C), original units.
        mask: (B, H, N, C), bool.
        mape_floor: see ``masked_metrics``.

    Returns:
        H dicts; dict h pools windows, stations and channels at horizon step h (0-based).
    """
    _check_inputs(pred, true, mask, ndim=4)
    return _grouped_metrics(pred, true, mask, axis=1, mape_floor=mape_floor)


def metrics_per_station(pred: Tensor, true: Tensor, mask: Tensor, *, mape_floor: float = 1.0) -> list[dict]:
    """The metrics of ``masked_metrics`` for each station.

    Args:
        pred: (B, H, N, C), original units.
        true: (B, H, N, C), original units.
        mask: (B, H, N, C), bool.
        mape_floor: see ``masked_metrics``.

    Returns:
        N dicts; dict n pools windows, horizon steps and channels at station n.
    """
    _check_inputs(pred, true, mask, ndim=4)
    return _grouped_metrics(pred, true, mask, axis=2, mape_floor=mape_floor)


def daily_means(x: Tensor, mask: Tensor, steps_per_day: int = 24) -> tuple[Tensor, Tensor]:
    """Means over the observed steps of each day, for scoring long-term forecasts on daily means.

    Pass the truth's mask for both prediction and truth so the two are averaged over the same hours.

    Args:
        x: (B, H, N, C) values, H a multiple of ``steps_per_day``.
        mask: (B, H, N, C) bool; True where the step is observed.
        steps_per_day: steps in one day (24 for hourly data).

    Returns:
        ``(means, day_mask)``, both (B, H // steps_per_day, N, C): the mean of x over each day's
        observed steps (0 where none was observed), and True where the day had an observed step.

    Raises:
        ValueError: if the shapes differ, are not 4-D, or H is not a multiple of ``steps_per_day``.
    """
    if x.shape != mask.shape or x.dim() != 4:
        raise ValueError(f"x and mask must share one (B, H, N, C) shape, got {tuple(x.shape)} and {tuple(mask.shape)}")
    b, h, n, c = x.shape
    if steps_per_day <= 0 or h % steps_per_day:
        raise ValueError(f"H={h} is not a positive multiple of steps_per_day={steps_per_day}")
    days = h // steps_per_day
    m = mask.bool().reshape(b, days, steps_per_day, n, c)
    values = x if x.is_floating_point() else x.to(torch.get_default_dtype())
    values = values.reshape(b, days, steps_per_day, n, c)
    sums = torch.where(m, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dim=2)
    counts = m.sum(dim=2)
    return sums / counts.clamp_min(1).to(sums.dtype), counts > 0


def summarize_metrics(
    pred: Tensor, true: Tensor, mask: Tensor, *, steps: list[int] | None = None, mape_floor: float = 1.0
) -> dict:
    """Overall, per-step and per-station metrics in one dict.

    Args:
        pred: (B, H, N, C), original units.
        true: (B, H, N, C), original units.
        mask: (B, H, N, C), bool.
        steps: 1-based horizon steps to pick out, e.g. ``[6, 12, 24]``.
        mape_floor: see ``masked_metrics``.

    Returns:
        ``{"overall": dict, "per_step": list[dict] (H), "per_station": list[dict] (N)}``, plus
        ``"at_steps": {str(s): per_step[s - 1]}`` when ``steps`` is given.

    Raises:
        ValueError: if a step is outside 1..H.
    """
    _check_inputs(pred, true, mask, ndim=4)
    horizon = pred.shape[1]
    bad = [s for s in steps or [] if not 1 <= s <= horizon]
    if bad:
        raise ValueError(f"steps {bad} are outside the horizon 1..{horizon}")
    per_step = metrics_per_step(pred, true, mask, mape_floor=mape_floor)
    out = {
        "overall": masked_metrics(pred, true, mask, mape_floor=mape_floor),
        "per_step": per_step,
        "per_station": metrics_per_station(pred, true, mask, mape_floor=mape_floor),
    }
    if steps is not None:
        out["at_steps"] = {str(s): per_step[s - 1] for s in steps}
    return out


def average_overlapping_windows(
    pred: Tensor, true: Tensor, mask: Tensor, start: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One estimate per cell from overlapping windows (the in-sample imputation protocol of
    GRIN/SPIN: predictions of a cell from every window that holds and scores it are averaged), so
    each evaluation cell counts once. A window whose mask leaves a cell out (the overlapping head of
    a month's last window under CSDI's protocol) does not vote for it.

    Args:
        pred, true: (B, W, N, C); mask: (B, W, N, C) bool; start: (B,) first time index of each window.
    Returns:
        (1, T_u, N, C) pred, true, mask over the T_u distinct time steps the windows cover.
    """
    _check_inputs(pred, true, mask, ndim=4)
    b, w, n, c = pred.shape
    t = (torch.as_tensor(start).reshape(b, 1) + torch.arange(w)).reshape(-1)  # (B*W,)
    steps, inverse = torch.unique(t, return_inverse=True)
    flat = lambda x: x.reshape(b * w, n, c)  # noqa: E731
    weight = flat(mask.bool()).double()  # a window that does not score a cell (CSDI's overlap) does not vote
    sums = torch.zeros(len(steps), n, c, dtype=torch.float64).index_add_(0, inverse, flat(pred).double() * weight)
    counts = torch.zeros(len(steps), n, c, dtype=torch.float64).index_add_(0, inverse, weight)
    truth = torch.zeros(len(steps), n, c, dtype=true.dtype).index_copy_(0, inverse, flat(true))
    cells = counts > 0
    return (sums / counts.clamp_min(1)).to(pred.dtype).unsqueeze(0), truth.unsqueeze(0), cells.unsqueeze(0)
