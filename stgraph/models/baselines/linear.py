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
(forecast-then-interpolate, :func:`~stgraph.models.readout.idw_readout`, no gradient)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import readout_prediction, station_series
from stgraph.ops.observed import last_observed


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
