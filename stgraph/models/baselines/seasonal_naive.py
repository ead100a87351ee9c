"""Seasonal naive: each output step repeats the value one season earlier, no parameters.

The seasonal naive forecast (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*,
§5.2): output step ``h`` (1-based; absolute step ``W - 1 + h`` when the window holds steps
``0 .. W-1``) takes the window's value at ``W - 1 + h - season``; beyond one season the last
season of the window repeats, i.e. it takes step ``W - season + (h - 1) mod season``. Where that
value is unobserved, the station's last observed value of the window stands in (persistence);
a station never observed in the window takes the mean of the others' (0 if none). Needs
``window >= season``. Target stations take the inverse-distance weighted mean of their
``readout_k`` nearest visible stations' forecasts (:func:`~stgraph.models.readout.idw_readout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import idw_readout
from stgraph.ops.observed import persisted_last


@dataclass
class SeasonalNaiveParams:
    season: int = 24
    readout_k: int = 1
    readout_power: float = 1.0


def seasonal_steps(window: int, horizon: int, season: int) -> torch.Tensor:
    """(H,) the window step each output step copies: ``W - season + (h - 1) mod season``."""
    return window - season + torch.arange(horizon) % season


class SeasonalNaive(StationModel):
    """Args:
        sizes: data-derived sizes (task ``forecast``, ``window >= season``).
        params: :class:`SeasonalNaiveParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out).
    """

    trainable = False
    learns_interpolation = False
    tasks = frozenset({"forecast"})

    def __init__(self, sizes: DataSizes, params: SeasonalNaiveParams | None = None):
        super().__init__(sizes)
        self.params = params or SeasonalNaiveParams()
        if self.params.season < 1:
            raise ValueError(f"seasonal-naive: season must be >= 1, got {self.params.season}")
        if sizes.window < self.params.season:
            raise ValueError(f"seasonal-naive: window ({sizes.window}) must be >= season ({self.params.season})")
        if self.params.readout_k < 1:
            raise ValueError(f"seasonal-naive: readout_k must be >= 1, got {self.params.readout_k}")

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        tc = list(self.sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]
        w = x.size(1)
        if w < self.params.season:
            raise ValueError(f"seasonal-naive: window ({w}) must be >= season ({self.params.season})")
        idx = seasonal_steps(w, self.sizes.horizon, self.params.season).to(x.device)
        fallback = persisted_last(x, m).unsqueeze(1)  # (B, 1, N, C)
        src = torch.where(m[:, idx], x[:, idx], fallback)
        tgt = idw_readout(src, batch.pos_src, batch.pos_tgt, self.params.readout_power, self.params.readout_k)
        return Prediction(src, tgt)
