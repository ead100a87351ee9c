"""Inverse-distance weighting from visible stations: the kriging classic, no parameters.

``krige`` (outputs at the input steps): each target step is the IDW mean of the visible
stations observed at that step. ``forecast``: each visible station persists its last observed
value over the horizon, and targets take the IDW mean of those (spatial persistence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.graph.geo import geodesic_km
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel


@dataclass
class IDWParams:
    power: float = 1.0
    k: int | None = None  # None: all visible stations


def idw_weights(pos_src: torch.Tensor, pos_tgt: torch.Tensor, power: float, k: int | None) -> torch.Tensor:
    """(N_tgt, N_src) unnormalised weights 1/d^power (geodesic km), zero beyond the k nearest."""
    ps, pt = pos_src.double(), pos_tgt.double()
    d = geodesic_km(pt[:, None, 0], pt[:, None, 1], ps[None, :, 0], ps[None, :, 1])  # stations: N_tgt × N_src is small
    w = d.clamp_min(1e-3).pow(-power)
    if k is not None and k < ps.size(0):
        keep = torch.zeros_like(w, dtype=torch.bool).scatter_(1, d.topk(k, dim=1, largest=False).indices, True)
        w = w * keep
    return w.float()


def last_observed(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x, mask: (B, W, N, C) -> each series' last observed value (B, N, C) and whether one exists."""
    steps = torch.arange(x.size(1), device=x.device).view(1, -1, 1, 1)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (B, N, C)
    value = x.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
    return value * (last >= 0), last >= 0


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
        w = idw_weights(batch.pos_src, batch.pos_tgt, self.params.power, self.params.k).to(x.device)
        if self.sizes.aligned:  # krige/impute: interpolate each step from the stations observed then
            obs = m.to(x.dtype)
            w_ss = idw_weights(batch.pos_src, batch.pos_src, self.params.power, self.params.k).to(x.device)
            num = torch.einsum("ts,bhsc->bhtc", w_ss, x * obs)
            den = torch.einsum("ts,bhsc->bhtc", w_ss, obs)
            src = torch.where(m, x, num / den.clamp_min(1e-12))  # the completed series
        else:  # forecast: persistence, then interpolate
            value, has = last_observed(x, m)
            src = value.unsqueeze(1).expand(-1, self.sizes.horizon, -1, -1)
            obs = has.to(x.dtype).unsqueeze(1).expand_as(src)
        num = torch.einsum("ts,bhsc->bhtc", w, src * obs)
        den = torch.einsum("ts,bhsc->bhtc", w, obs)
        return Prediction(src, num / den.clamp_min(1e-12))
