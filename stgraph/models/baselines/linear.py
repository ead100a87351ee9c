"""Linear regression: the classic station-wise linear forecaster, read out at targets by IDW.

One linear map, shared by all stations, takes a station's flattened window of ``[values * mask,
mask]`` (W * 2 * C_in numbers) and the cyclic encodings of the H output steps (H * 6) to its
H * C_out outputs: the linear baseline of Zeng et al., "Are Transformers Effective for Time
Series Forecasting?" (AAAI 2023, arXiv:2205.13504), i.e. DLinear without the trend/seasonal
decomposition. With ``residual_last`` the map predicts the change from the station's last
observed value of each target channel (as NLinear subtracts the last value): the problem is
better conditioned (levels move slowly, changes are near zero-mean) and, since the map starts at
zero, the untrained model is persistence. A series with no observed value in the window adds 0
(the standardised mean).

Stations are forecast independently (the station axis is folded into the batch); a target
station then takes the inverse-distance weighted mean of the visible stations' forecasts
(forecast-then-interpolate, :func:`~stgraph.models.readout.idw_readout`, no gradient).

This module also holds the helpers the other station-wise forecasters (LSTM, PatchTST) share:
:func:`station_series` and :func:`readout_prediction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.baselines.idw import last_observed
from stgraph.models.readout import idw_readout


def station_series(batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold the station axis into the batch: one sequence per (sample, visible station).

    Returns:
        seq: (B * N_src, W, 2 * C_in) ``[values * mask, mask]`` (unobserved values are 0 whatever x holds).
        x_time: (B * N_src, W, 6) the window's cyclic encodings, repeated for each station.
        y_time: (B * N_src, H, 6) the output steps' encodings.
        Row ``b * N_src + i`` is station ``i`` of sample ``b``.
    """
    b, w, n, c = batch.x.shape
    m = batch.x_mask.to(batch.x.dtype)
    seq = torch.cat([torch.where(batch.x_mask, batch.x, 0.0), m], dim=-1)  # (B, W, N, 2C)
    seq = seq.permute(0, 2, 1, 3).reshape(b * n, w, 2 * c)
    x_time = batch.x_time.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, w, -1)
    y_time = batch.y_time.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, batch.y_time.size(1), -1)
    return seq, x_time, y_time


def readout_prediction(y: torch.Tensor, batch: GraphBatch, power: float, k: int | None) -> Prediction:
    """(B * N_src, H, C_out) station forecasts -> Prediction: ``src`` (B, H, N_src, C_out) and
    ``tgt`` (B, H, N_tgt, C_out), the IDW readout (power, k nearest; None: all) without gradient."""
    n = batch.pos_src.size(0)
    src = y.reshape(-1, n, *y.shape[1:]).permute(0, 2, 1, 3)
    return Prediction(src, idw_readout(src, batch.pos_src, batch.pos_tgt, power=power, k=k))


@dataclass
class LinearParams:
    residual_last: bool = True  # predict the change from each station's last observed value
    cyclic_encoding: bool = True  # include the output steps' cyclic time encodings
    readout_k: int | None = None  # IDW readout over the k nearest visible stations; None: all
    readout_power: float = 1.0


class LinearRegression(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`LinearParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). Forecasting only.
    """

    learns_interpolation = False
    tasks = frozenset({"forecast"})

    def __init__(self, sizes: DataSizes, params: LinearParams | None = None):
        super().__init__(sizes)
        self.params = params or LinearParams()
        n_in = sizes.window * 2 * sizes.in_channels
        if self.params.cyclic_encoding:
            n_in += sizes.horizon * len(CYCLIC_FEATURES)
        self.linear = nn.Linear(n_in, sizes.horizon * sizes.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero map: persistence with ``residual_last``, the standardised mean without."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        seq, _, y_time = station_series(batch)
        feats = [seq.flatten(1)]
        if self.params.cyclic_encoding:
            feats.append(y_time.flatten(1))
        y = self.linear(torch.cat(feats, dim=1)).view(-1, self.sizes.horizon, self.sizes.out_channels)
        if self.params.residual_last:
            tc = list(self.sizes.target_channels)
            m = batch.x_mask[..., tc]
            last, _ = last_observed(torch.where(m, batch.x[..., tc], 0.0), m)  # (B, N, C_out), 0 if none
            y = y + last.reshape(-1, 1, self.sizes.out_channels)
        return readout_prediction(y, batch, self.params.readout_power, self.params.readout_k)
