"""Inverse-distance weighting from visible stations: the kriging classic, no parameters.

``krige`` (outputs at the input steps): each target step is the IDW mean of the visible
stations observed at that step. ``forecast``: each visible station persists its last observed
value over the horizon, and targets take the IDW mean of those (spatial persistence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.ops.idw import masked_idw
from stgraph.ops.observed import last_observed


@dataclass
class IDWParams:
    power: float = 1.0
    k: int | None = None  # None: all visible stations


class IDW(StationModel):
    trainable = False
    learns_interpolation = False

    def __init__(self, sizes: DataSizes, params: IDWParams | None = None):
        super().__init__(sizes)
        self.params = params or IDWParams()

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        tc = list(self.sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]
        p, k = self.params.power, self.params.k
        if self.sizes.aligned:  # krige/impute: interpolate each step from the stations observed then
            fill, _ = masked_idw(x, m, batch.pos_src, batch.pos_src, p, k)  # the k nearest include itself (unobserved)
            src, obs = torch.where(m, x, fill), m  # the completed series
        else:  # forecast: persistence, then interpolate
            value, has = last_observed(x, m)
            src = value.unsqueeze(1).expand(-1, self.sizes.horizon, -1, -1)
            obs = has.unsqueeze(1).expand_as(src)
        return Prediction(src, masked_idw(src, obs, batch.pos_src, batch.pos_tgt, p, k)[0])
