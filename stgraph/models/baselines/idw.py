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


def masked_idw(
    x: torch.Tensor,
    mask: torch.Tensor,
    pos_src: torch.Tensor,
    pos_tgt: torch.Tensor,
    power: float = 2.0,
    k: int | None = None,
    *,
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-distance weighted mean of the stations observed at each step.

    Args:
        x, mask: (B, T, N_src, C) values and observation mask.
        pos_src: (N_src, 2), pos_tgt: (N_tgt, 2) latitude/longitude in degrees.
        power: IDW power on geodesic km. k: nearest stations considered (None: all).
        exclude_self: ``pos_tgt`` is ``pos_src`` and each station is estimated from the others.
    Returns:
        (B, T, N_tgt, C) estimate (0 where no considered station is observed) and its
        (B, T, N_tgt, C) bool "has an estimate" mask.
    """
    b, t, _, c = x.shape
    if pos_tgt.size(0) == 0:
        empty = x.new_zeros(b, t, 0, c)
        return empty, empty.bool()
    if exclude_self:  # drop each station itself, then keep its k nearest others
        w = idw_weights(pos_src, pos_tgt, power, None).to(x).fill_diagonal_(0.0)
        if k is not None and k < w.size(1):
            keep = torch.zeros_like(w, dtype=torch.bool).scatter_(1, w.topk(k, dim=1).indices, True)
            w = w * keep
    else:
        w = idw_weights(pos_src, pos_tgt, power, k).to(x)
    obs = mask.to(x.dtype)
    num = torch.einsum("ts,bhsc->bhtc", w, torch.where(mask, x, torch.zeros_like(x)))
    den = torch.einsum("ts,bhsc->bhtc", w, obs)
    has = den > 0
    return torch.where(has, num / den.clamp_min(1e-12), torch.zeros_like(num)), has


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
