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

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import idw_readout
from stgraph.ops.observed import locf_nocb, persisted_last


@dataclass
class PersistenceParams:
    readout_k: int = 1
    readout_power: float = 1.0


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
