"""LSTM forecaster: a station-wise sequence-to-vector LSTM, read out at targets by IDW.

Each visible station's window, ``[values * mask, mask]`` plus the step's cyclic time encoding
(2 * C_in + 6 features per step), goes through an input Linear and a stacked LSTM (Hochreiter &
Schmidhuber, Neural Computation 1997); a Linear head on the last layer's final hidden state,
with the output steps' time encodings, emits all H * C_out outputs at once (direct multi-step
forecasting, no autoregressive feedback). Weights are shared by all stations and each station
sees only its own series (the station axis is folded into the batch). A target station then
takes the inverse-distance weighted mean of the visible stations' forecasts
(forecast-then-interpolate, :func:`~stgraph.models.readout.idw_readout`, no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import readout_prediction, station_series
from stgraph.models.search import IntRange


@dataclass
class LSTMParams:
    hidden_channels: int = 64
    num_layers: int = 2
    dropout: float = 0.1  # between LSTM layers and before the head
    cyclic_encoding: bool = True  # time encodings of the input steps (per step) and output steps (head)
    readout_k: int | None = None  # IDW readout over the k nearest visible stations; None: all
    readout_power: float = 1.0


class LSTMForecaster(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`LSTMParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). Forecasting only.
    """

    learns_interpolation = False
    search_space = {"hidden_channels": IntRange(16, 128, log=True), "num_layers": IntRange(1, 3)}
    tasks = frozenset({"forecast"})

    def __init__(self, sizes: DataSizes, params: LSTMParams | None = None):
        super().__init__(sizes)
        self.params = p = params or LSTMParams()
        if p.hidden_channels < 1 or p.num_layers < 1:
            raise ValueError(
                f"lstm: hidden_channels and num_layers must be >= 1, got {p.hidden_channels}, {p.num_layers}"
            )
        n_time = len(CYCLIC_FEATURES) if p.cyclic_encoding else 0
        self.input = nn.Linear(2 * sizes.in_channels + n_time, p.hidden_channels)
        self.lstm = nn.LSTM(
            p.hidden_channels,
            p.hidden_channels,
            p.num_layers,
            batch_first=True,
            dropout=p.dropout if p.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(p.dropout)
        self.head = nn.Linear(p.hidden_channels + sizes.horizon * n_time, sizes.horizon * sizes.out_channels)
        self.reset_parameters()

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels] -> one sequence per (sample, station)
        seq, x_time, y_time = station_series(batch)  # (B*N, W, 2C), (B*N, W, 6), (B*N, H, 6)
        if self.params.cyclic_encoding:
            seq = torch.cat([seq, x_time], dim=-1)
        _, (h, _) = self.lstm(self.input(seq))  # h: (num_layers, B*N, hidden)
        z = self.drop(h[-1])
        if self.params.cyclic_encoding:
            z = torch.cat([z, y_time.flatten(1)], dim=1)
        y = self.head(z).view(-1, self.sizes.horizon, self.sizes.out_channels)
        return readout_prediction(y, batch, self.params.readout_power, self.params.readout_k)
