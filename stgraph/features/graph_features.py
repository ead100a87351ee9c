"""Graph features for tabular learners: one row of numbers per output cell (sample, step, station, channel).

AMLSG (the Shanghai 2014-2025 air-quality inventory's stacked generalisation) and the RFSI-style
tree models learn on tables, not graphs. :func:`station_features` turns a
:class:`~stgraph.data.batch.GraphBatch` into such a table, built only from what a model may see: the
visible stations' observed inputs (``x``/``x_mask``), positions, time encodings, static covariates
and, for targets, the co-located channels observed there (``colocated_tgt``). An input cell whose mask
is False is never read, and a visible station's own value at the output cell is never one of its
features.

Columns, in this order (``k``, ``lags`` and the switches from :class:`FeatureConfig`; j runs over
the ``k`` nearest visible stations *observed* in that cell, nearest first):

- ``cal_hour_sin`` … ``cal_month_cos``: cyclic encodings of the output step (``y_time``);
  ``lead`` (forecast only): the output step's lead time h = 1..H.
- ``lat``, ``lon`` of the output station; ``static{s}``: its static covariates (if the data has any).
- Aligned tasks (``krige``, ``impute``: outputs at the input steps), per step t:
  ``n_observed`` (visible stations observed at t, the station itself excluded for ``src``),
  ``idw`` (masked IDW of the observed ones, power ``idw_power``, all of them),
  ``knn_mean`` (mean of the picked k), then per neighbour ``nbr{j}_value``, ``nbr{j}_dist_km``,
  ``nbr{j}_bearing_sin``, ``nbr{j}_bearing_cos`` and ``nbr{j}_lag{L}`` (its value at t - L).
  ``nbr1_dist_km`` is the distance to the nearest observed station.
- Forecast (outputs are the H steps after the window; constant over h but for ``lead`` and the
  calendar): ``n_observed`` (visible stations with an observation in the window), ``idw_last``
  and ``knn_mean_last`` of the stations' last observed values (spatial persistence), then per
  neighbour (the nearest with an observation in the window) ``nbr{j}_last``, ``nbr{j}_age``
  (steps from that observation to the window's last step), distance, bearing and
  ``nbr{j}_lag{L}`` (its value at input step W - L: lag 1 is the last input step).
- ``own_history`` (``src`` only): aligned: ``own_locf``, ``own_locf_gap``, ``own_nocb``,
  ``own_nocb_gap`` (the observations strictly before/after t and the steps to them), ``own_lerp``
  (linear interpolation between them), ``own_lag{L}``; forecast: ``own_last``, ``own_age``,
  ``own_lag{L}``.
- ``covariates``: for each non-target input channel i, ``cov{i}_idw`` (aligned: masked IDW of the
  visible stations observed at t) or ``cov{i}_idw_last`` (forecast: of their last values);
  for ``src`` the station itself is excluded.
- ``co_located``: ``tgt``, when the batch carries ``colocated_tgt`` (B, W, N_tgt, C_a) and
  ``colocated_tgt_mask``: aligned ``colocated{a}`` (the co-located channel observed at the target at t),
  forecast ``colocated{a}_last``, ``colocated{a}_age``, ``colocated{a}_lag{L}``. ``src``: the station's
  own non-target input channels, which the batch already holds: aligned ``own_cov{i}`` (at t),
  forecast ``own_cov{i}_last``, ``own_cov{i}_age``, ``own_cov{i}_lag{L}``.
- ``aggregate`` (AMLSG's downscaling), when the batch carries ``aggregate`` (B, W, C_out) and
  ``aggregate_mask``: the aggregate of the output channel, aligned ``aggregate`` (at t), forecast
  ``aggregate_last``, ``aggregate_age``, ``aggregate_lag{L}``.

NaN marks an undefined feature (no observed neighbour, a lag before the window, no observation).
The column set depends only on (sizes, cfg, which, whether the batch has co-located channels and an
aggregate), so rows of different batches stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.data.batch import DataSizes, GraphBatch
from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.features.neighbours import (
    NeighbourTable,
    gather_picked,
    gather_table,
    nearest_observed,
    neighbour_table,
)
from stgraph.features.own_history import around_cell, lagged, last_observation, observed_or_nan, value_before_end
from stgraph.ops.idw import masked_idw

WHICH = ("tgt", "src")


@dataclass
class FeatureConfig:
    """What :func:`station_features` computes.

    Attributes:
        k: nearest *observed* visible stations described at each step (>= 1).
        lags: steps back at which neighbours' (and the station's own) values are read (each >= 1, distinct).
        idw_power: power of the inverse-distance weights (geodesic km).
        own_history: ``src`` only: the station's own LOCF/NOCB, gaps, linear interpolation and lags.
        covariates: IDW of the neighbours' non-target input channels (weather, other pollutants).
        co_located: co-located channels observed at the output station (``tgt``: ``batch.colocated_tgt``
            when present; ``src``: the station's own non-target channels).
        aggregate: the batch's aggregate series (``batch.aggregate``, downscaling) when present.
    """

    k: int = 6
    lags: tuple[int, ...] = (1, 2, 3, 6)
    idw_power: float = 2.0
    own_history: bool = True
    covariates: bool = True
    co_located: bool = True
    aggregate: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"FeatureConfig.k must be >= 1, got {self.k}")
        self.lags = tuple(int(lag) for lag in self.lags)
        if any(lag < 1 for lag in self.lags) or len(set(self.lags)) != len(self.lags):
            raise ValueError(f"FeatureConfig.lags must be distinct integers >= 1, got {self.lags}")
        if self.idw_power < 0:
            raise ValueError(f"FeatureConfig.idw_power must be >= 0, got {self.idw_power}")


Columns = list[tuple[str, torch.Tensor]]  # (name, tensor broadcastable to (B, H, M, C_out))


def station_features(
    batch: GraphBatch, sizes: DataSizes, cfg: FeatureConfig, which: str
) -> tuple[torch.Tensor, list[str]]:
    """Features of every output cell of ``which``.

    Args:
        batch: the model input (see :class:`~stgraph.data.batch.GraphBatch`); may carry
            ``colocated_tgt`` (B, W, N_tgt, C_a) and bool ``colocated_tgt_mask``.
        sizes: the data sizes (task, window, horizon, target channels, static covariates).
        cfg: :class:`FeatureConfig`.
        which: ``"tgt"`` (target stations, no history) or ``"src"`` (the visible stations' own
            output cells, e.g. ``impute``).
    Returns:
        (B, H, M, C_out, F) float32 features (M = N_tgt or N_src), NaN where undefined, and the F
        column names (see the module docstring).
    """
    _check(batch, sizes, which)
    tc = list(sizes.target_channels)
    x, m = batch.x.float(), batch.x_mask.bool()
    b, h, c_out = x.size(0), sizes.horizon, len(tc)
    own = which == "src"
    dev = x.device
    pos_src = batch.pos_src.to(dev)
    pos_out = pos_src if own else batch.pos_tgt.to(dev)
    n_out = pos_out.size(0)
    other = [i for i in range(sizes.in_channels) if i not in set(tc)]

    cols: Columns = [
        (f"cal_{name}", batch.y_time[:, :, i].float().view(b, h, 1, 1)) for i, name in enumerate(CYCLIC_FEATURES)
    ]
    if not sizes.aligned:
        cols.append(("lead", torch.arange(1, h + 1, dtype=torch.float32, device=dev).view(1, h, 1, 1)))
    cols += [("lat", pos_out[:, 0].float().view(1, 1, n_out, 1)), ("lon", pos_out[:, 1].float().view(1, 1, n_out, 1))]
    static = batch.static_src if own else batch.static_tgt
    for s in range(sizes.num_static):
        cols.append((f"static{s}", static[:, s].float().to(dev).view(1, 1, n_out, 1)))

    xt, mt = x[..., tc], m[..., tc]
    neighbours = _aligned_neighbours if sizes.aligned else _forecast_neighbours
    cols += neighbours(xt, mt, pos_src, pos_out, cfg, own)
    if own and cfg.own_history:
        cols += _own_history(xt, mt, cfg, sizes.aligned)
    if cfg.covariates and other:
        cols += _covariates(x[..., other], m[..., other], other, pos_src, pos_out, cfg, own, sizes.aligned)
    if cfg.co_located:
        if own and other:
            names = [f"own_cov{i}" for i in other]
            cols += _colocated(x[..., other], m[..., other], names, cfg, sizes.aligned)
        colocated = getattr(batch, "colocated_tgt", None)
        if not own and colocated is not None:
            am = batch.colocated_tgt_mask.to(dev).bool()
            names = [f"colocated{a}" for a in range(colocated.size(-1))]
            cols += _colocated(colocated.to(dev).float(), am, names, cfg, sizes.aligned)
    aggregate = getattr(batch, "aggregate", None)
    if cfg.aggregate and aggregate is not None:  # (B, W, C_out): one station-free series per channel
        agg, agg_m = aggregate.to(dev).float().unsqueeze(2), batch.aggregate_mask.to(dev).bool().unsqueeze(2)
        if sizes.aligned:
            cols.append(("aggregate", observed_or_nan(agg, agg_m)))
        else:
            last, age = last_observation(agg, agg_m)
            cols += [("aggregate_last", last.unsqueeze(1)), ("aggregate_age", age.unsqueeze(1))]
            cols += [(f"aggregate_lag{lag}", value_before_end(agg, agg_m, lag).unsqueeze(1)) for lag in cfg.lags]

    shape = (b, h, n_out, c_out)
    feats = torch.stack([t.to(dev, torch.float32).expand(shape) for _, t in cols], dim=-1)
    return feats, [name for name, _ in cols]


def _aligned_neighbours(
    x: torch.Tensor, m: torch.Tensor, pos_src: torch.Tensor, pos_out: torch.Tensor, cfg: FeatureConfig, own: bool
) -> Columns:
    """Per step t: the k nearest visible stations observed at t, IDW, kNN mean, count. x, m: (B, W, N_src, C)."""
    table = neighbour_table(pos_src, pos_out, exclude_self=own)
    vals = observed_or_nan(x, m)
    picked = nearest_observed(m, table.order, cfg.k)  # (B, W, M, k, C)
    nbr = gather_picked(vals, table.order, picked)
    n_obs = m.sum(2, keepdim=True).float()
    n_obs = n_obs - m.float() if own else n_obs  # (B, W, M, C)
    idw, has = masked_idw(x, m, pos_src, pos_out, cfg.idw_power, exclude_self=own)
    cols: Columns = [("n_observed", n_obs), ("idw", torch.where(has, idw, torch.nan)), ("knn_mean", _slot_mean(nbr))]
    lag_vals = [(lag, gather_picked(lagged(vals, lag), table.order, picked)) for lag in cfg.lags]
    cols += _per_slot(picked, table, "value", nbr, [(f"lag{lag}", v) for lag, v in lag_vals])
    return cols


def _forecast_neighbours(
    x: torch.Tensor, m: torch.Tensor, pos_src: torch.Tensor, pos_out: torch.Tensor, cfg: FeatureConfig, own: bool
) -> Columns:
    """Spatial persistence: the k nearest visible stations with an observation in the window, their
    last values, ages and lags; IDW and kNN mean of the last values. Every column is (B, 1, M, C)."""
    table = neighbour_table(pos_src, pos_out, exclude_self=own)
    last, age = last_observation(x, m)  # (B, N_src, C)
    has = ~torch.isnan(last)
    picked = nearest_observed(has.unsqueeze(1), table.order, cfg.k)  # (B, 1, M, k, C)
    nbr = gather_picked(last.unsqueeze(1), table.order, picked)
    n_obs = has.sum(1, keepdim=True).float()
    n_obs = (n_obs - has.float() if own else n_obs.expand(-1, pos_out.size(0), -1)).unsqueeze(1)
    zero_filled = torch.where(has, last, torch.zeros_like(last)).unsqueeze(1)
    idw, ok = masked_idw(zero_filled, has.unsqueeze(1), pos_src, pos_out, cfg.idw_power, exclude_self=own)
    cols: Columns = [("n_observed", n_obs), ("idw_last", torch.where(ok, idw, torch.nan))]
    cols.append(("knn_mean_last", _slot_mean(nbr)))
    extra = [("age", gather_picked(age.unsqueeze(1), table.order, picked))]
    for lag in cfg.lags:
        extra.append((f"lag{lag}", gather_picked(value_before_end(x, m, lag).unsqueeze(1), table.order, picked)))
    return cols + _per_slot(picked, table, "last", nbr, extra)


def _per_slot(
    picked: torch.Tensor, table: NeighbourTable, value_name: str, nbr: torch.Tensor, extra: Columns
) -> Columns:
    """Columns ``nbr{j}_*`` for each slot j: value, distance, bearing, then the ``extra`` quantities.
    nbr and extras: (B, T, M, k, C)."""
    dist = gather_table(table.dist_km.to(nbr.device), picked)
    b_sin = gather_table(table.bearing_sin.to(nbr.device), picked)
    b_cos = gather_table(table.bearing_cos.to(nbr.device), picked)
    cols: Columns = []
    for j in range(picked.size(3)):
        slot = [(value_name, nbr), ("dist_km", dist), ("bearing_sin", b_sin), ("bearing_cos", b_cos), *extra]
        cols += [(f"nbr{j + 1}_{name}", t[:, :, :, j]) for name, t in slot]
    return cols


def _slot_mean(nbr: torch.Tensor) -> torch.Tensor:
    """(B, T, M, k, C) picked values -> (B, T, M, C) their mean, NaN where no slot is filled."""
    ok = ~torch.isnan(nbr)
    total = torch.where(ok, nbr, torch.zeros_like(nbr)).sum(3)
    count = ok.sum(3)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)


def _own_history(x: torch.Tensor, m: torch.Tensor, cfg: FeatureConfig, aligned: bool) -> Columns:
    """The visible station's own target-channel history (never its value at the output cell).
    x, m: (B, W, N_src, C) -> columns (B, W, N_src, C) (aligned) or (B, 1, N_src, C) (forecast)."""
    if aligned:
        around = around_cell(x, m)
        cols: Columns = [
            ("own_locf", around.locf),
            ("own_locf_gap", around.locf_gap),
            ("own_nocb", around.nocb),
            ("own_nocb_gap", around.nocb_gap),
            ("own_lerp", around.lerp),
        ]
        vals = observed_or_nan(x, m)
        return cols + [(f"own_lag{lag}", lagged(vals, lag)) for lag in cfg.lags]
    last, age = last_observation(x, m)
    cols = [("own_last", last.unsqueeze(1)), ("own_age", age.unsqueeze(1))]
    return cols + [(f"own_lag{lag}", value_before_end(x, m, lag).unsqueeze(1)) for lag in cfg.lags]


def _covariates(
    x: torch.Tensor,
    m: torch.Tensor,
    channels: list[int],
    pos_src: torch.Tensor,
    pos_out: torch.Tensor,
    cfg: FeatureConfig,
    own: bool,
    aligned: bool,
) -> Columns:
    """Masked IDW of the visible stations' non-target channels (x, m: (B, W, N_src, J)), per step
    (aligned) or of their last values (forecast); one (B, T, M, 1) column per channel."""
    if not aligned:
        last, _ = last_observation(x, m)
        has = ~torch.isnan(last)
        x, m = torch.where(has, last, torch.zeros_like(last)).unsqueeze(1), has.unsqueeze(1)
    est, ok = masked_idw(x, m, pos_src, pos_out, cfg.idw_power, exclude_self=own)
    est = torch.where(ok, est, torch.nan)
    suffix = "idw" if aligned else "idw_last"
    return [(f"cov{i}_{suffix}", est[..., j : j + 1]) for j, i in enumerate(channels)]


def _colocated(a: torch.Tensor, am: torch.Tensor, names: list[str], cfg: FeatureConfig, aligned: bool) -> Columns:
    """Channels observed at the output station itself (a, am: (B, W, M, C_a)): the value at the output
    step (aligned) or the last value, its age and lags (forecast); columns (B, T, M, 1)."""
    if aligned:
        vals = observed_or_nan(a, am)
        return [(name, vals[..., j : j + 1]) for j, name in enumerate(names)]
    last, age = last_observation(a, am)  # (B, M, C_a)
    lags = [value_before_end(a, am, lag) for lag in cfg.lags]
    cols: Columns = []
    for j, name in enumerate(names):
        cols += [(f"{name}_last", last[:, None, :, j : j + 1]), (f"{name}_age", age[:, None, :, j : j + 1])]
        cols += [(f"{name}_lag{lag}", v[:, None, :, j : j + 1]) for lag, v in zip(cfg.lags, lags, strict=True)]
    return cols


def _check(batch: GraphBatch, sizes: DataSizes, which: str) -> None:
    """Clear errors for inputs that do not match the sizes."""
    if which not in WHICH:
        raise ValueError(f"station_features: which must be one of {WHICH}, got {which!r}")
    x, m = batch.x, batch.x_mask
    if x.dim() != 4 or x.size(1) != sizes.window or x.size(3) != sizes.in_channels:
        raise ValueError(
            f"GraphBatch.x must be (B, W={sizes.window}, N_src, C_in={sizes.in_channels}), got {tuple(x.shape)}"
        )
    if m.shape != x.shape or m.dtype != torch.bool:
        raise ValueError(f"GraphBatch.x_mask must be bool {tuple(x.shape)}, got {m.dtype} {tuple(m.shape)}")
    if batch.pos_src.shape != (x.size(2), 2):
        raise ValueError(f"GraphBatch.pos_src must be ({x.size(2)}, 2), got {tuple(batch.pos_src.shape)}")
    if batch.pos_tgt.dim() != 2 or batch.pos_tgt.size(1) != 2:
        raise ValueError(f"GraphBatch.pos_tgt must be (N_tgt, 2), got {tuple(batch.pos_tgt.shape)}")
    if batch.y_time.shape != (x.size(0), sizes.horizon, len(CYCLIC_FEATURES)):
        raise ValueError(
            f"GraphBatch.y_time must be (B={x.size(0)}, H={sizes.horizon}, {len(CYCLIC_FEATURES)}), "
            f"got {tuple(batch.y_time.shape)}"
        )
    n_out = x.size(2) if which == "src" else batch.pos_tgt.size(0)
    static = batch.static_src if which == "src" else batch.static_tgt
    field = f"GraphBatch.static_{which}"
    if sizes.num_static > 0 and (static is None or tuple(static.shape) != (n_out, sizes.num_static)):
        got = None if static is None else tuple(static.shape)
        raise ValueError(f"{field} must be ({n_out}, num_static={sizes.num_static}), got {got}")
    if sizes.num_static == 0 and static is not None and static.numel() > 0:
        raise ValueError(f"{field} holds {tuple(static.shape)} covariates but DataSizes.num_static is 0")
    colocated = getattr(batch, "colocated_tgt", None)
    if which == "tgt" and colocated is not None:
        am = getattr(batch, "colocated_tgt_mask", None)
        want = (x.size(0), sizes.window, batch.pos_tgt.size(0))
        if colocated.dim() != 4 or tuple(colocated.shape[:3]) != want:
            raise ValueError(
                f"GraphBatch.colocated_tgt must be (B, W, N_tgt, C_a) with (B, W, N_tgt) = {want}, got "
                f"{tuple(colocated.shape)}"
            )
        if am is None or am.shape != colocated.shape or am.dtype != torch.bool:
            got = None if am is None else f"{am.dtype} {tuple(am.shape)}"
            raise ValueError(f"GraphBatch.colocated_tgt_mask must be bool {tuple(colocated.shape)}, got {got}")
    aggregate = getattr(batch, "aggregate", None)
    if aggregate is not None:
        agg_m = getattr(batch, "aggregate_mask", None)
        want = (x.size(0), sizes.window, len(sizes.target_channels))
        if tuple(aggregate.shape) != want:
            raise ValueError(f"GraphBatch.aggregate must be (B, W, C_out) = {want}, got {tuple(aggregate.shape)}")
        if agg_m is None or agg_m.shape != aggregate.shape or agg_m.dtype != torch.bool:
            got = None if agg_m is None else f"{agg_m.dtype} {tuple(agg_m.shape)}"
            raise ValueError(f"GraphBatch.aggregate_mask must be bool {want}, got {got}")
