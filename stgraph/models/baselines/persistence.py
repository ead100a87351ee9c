"""Persistence: the naive temporal baseline, no parameters.

``forecast``: each visible station's last observed value in the window persists over the horizon
(the random-walk forecast, Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*,
§5.2). A station never observed in the window falls back to the mean of the other stations'
persisted values (0, the standardised mean, if no station was observed). ``impute``: each
station and channel carries its last observation forward (LOCF), the next observation backward
where nothing precedes it (NOCB), and 0 where the window holds none. Target stations take the
inverse-distance weighted mean of their ``readout_k`` nearest visible stations' outputs
(:func:`~stgraph.models.readout.idw_readout`; ``readout_k=1``: the nearest one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.baselines.idw import last_observed
from stgraph.models.readout import idw_readout


@dataclass
class PersistenceParams:
    readout_k: int = 1
    readout_power: float = 1.0


def persisted_last(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask: (B, W, N, C) -> (B, N, C) each series' last observed value; a series never observed
    takes the mean over the stations that were observed (per batch and channel; 0 if none)."""
    value, has = last_observed(torch.where(mask, x, torch.zeros_like(x)), mask)
    hf = has.to(x.dtype)
    mean = (value * hf).sum(1, keepdim=True) / hf.sum(1, keepdim=True).clamp_min(1)
    return torch.where(has, value, mean.expand_as(value))


def locf_nocb(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask: (B, W, N, C) -> (B, W, N, C): observed cells unchanged, gaps filled by the last
    observation before them, else the first one after them, else 0. Vectorised over steps."""
    _, prev, nxt, fwd, bwd = observations_around(x, mask)
    return torch.where(prev >= 0, fwd, torch.where(nxt < x.size(1), bwd, torch.zeros_like(x)))


def observations_around(x: torch.Tensor, mask: torch.Tensor):
    """The observations around every cell along time (dim 1), vectorised.

    Args:
        x, mask: (B, W, N, C).
    Returns:
        steps: (B, W, N, C) each cell's step index; prev / nxt: (B, W, N, C) the step of the last
        observation at or before it (-1: none) and of the first at or after it (W: none);
        fwd / bwd: (B, W, N, C) the values observed there (0 where none).
    """
    w = x.size(1)
    steps = torch.arange(w, device=x.device).view(1, -1, 1, 1).expand_as(mask)
    prev = torch.where(mask, steps, torch.full_like(steps, -1)).cummax(dim=1).values  # last observed <= t
    nxt = torch.where(mask, steps, torch.full_like(steps, w)).flip(1).cummin(dim=1).values.flip(1)  # first >= t
    xm = torch.where(mask, x, torch.zeros_like(x))
    return steps, prev, nxt, xm.gather(1, prev.clamp_min(0)), xm.gather(1, nxt.clamp_max(w - 1))


class Persistence(StationModel):
    """Args:
        sizes: data-derived sizes (task ``forecast`` or ``impute``). params: :class:`PersistenceParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out).
    """

    trainable = False
    learns_interpolation = False
    tasks = frozenset({"forecast", "impute"})

    def __init__(self, sizes: DataSizes, params: PersistenceParams | None = None):
        super().__init__(sizes)
        self.params = params or PersistenceParams()
        if self.params.readout_k < 1:
            raise ValueError(f"persistence: readout_k must be >= 1, got {self.params.readout_k}")

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        tc = list(self.sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]
        if self.sizes.aligned:
            src = locf_nocb(x, m)
        else:
            src = persisted_last(x, m).unsqueeze(1).expand(-1, self.sizes.horizon, -1, -1)
        tgt = idw_readout(src, batch.pos_src, batch.pos_tgt, self.params.readout_power, self.params.readout_k)
        return Prediction(src, tgt)
