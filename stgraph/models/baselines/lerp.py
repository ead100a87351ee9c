"""Interpolation in time, alone (``lerp``) and blended with space (``lerp-knn``): no learning.

``lerp``: each station's gaps are filled by linear interpolation between the observations around
them in the window (LOCF/NOCB at the window's edges, 0 — the standardised mean — for a series with
no observation). ``lerp-knn``: where a gap is short, linear interpolation; where it is long, the
mean of the ``k`` nearest other stations observed at that step; blended with weight
``exp(-(gap - 1) / tau)`` on the interpolation (:func:`stgraph.models.anchors.lerp_knn`). Its
``tau`` is chosen on the validation cells by the engine's ``fit`` hook (``tau: null``) or fixed.
``lerp-knn`` is also the anchor learned imputers start from.

Gaps are measured inside the model's window: a gap that runs past the window's edge is taken as
twice the distance to its one observed side. Overlapping windows are averaged per cell when scored.
Defined for ``impute`` (in-sample imputation: every station has a history).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, FitContext, GraphBatch, Prediction, StationModel
from stgraph.ops.lerp import lerp_in_time, lerp_knn

TAU_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass
class LerpParams:
    pass


@dataclass
class LerpKNNParams:
    tau: float | None = None  # None: chosen on validation cells from TAU_GRID
    k: int = 3


def _targets(batch: GraphBatch, sizes: DataSizes) -> tuple[torch.Tensor, torch.Tensor]:
    tc = list(sizes.target_channels)
    m = batch.x_mask[..., tc]
    return torch.where(m, batch.x[..., tc], torch.zeros_like(batch.x[..., tc])), m


def _no_targets(src: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
    return src.new_zeros(src.size(0), src.size(1), batch.pos_tgt.size(0), src.size(3))


class Lerp(StationModel):
    """Args: sizes (task ``impute``). Shapes: (B, W, N_src, C_out) completed series; no targets."""

    trainable = False
    learns_interpolation = False
    tasks = frozenset({"impute"})

    def __init__(self, sizes: DataSizes, params: LerpParams | None = None):
        super().__init__(sizes)
        self.params = params or LerpParams()

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        x, m = _targets(batch, self.sizes)
        src, _ = lerp_in_time(x, m)
        return Prediction(src, _no_targets(src, batch))


class LerpKNN(StationModel):
    """Args: sizes (task ``impute``), params :class:`LerpKNNParams`. Shapes as :class:`Lerp`."""

    trainable = False
    learns_interpolation = False
    fits = True
    tasks = frozenset({"impute"})

    def __init__(self, sizes: DataSizes, params: LerpKNNParams | None = None):
        super().__init__(sizes)
        self.params = params or LerpKNNParams()
        if self.params.k < 1:
            raise ValueError(f"lerp-knn: k must be >= 1, got {self.params.k}")
        self.tau = 8.0 if self.params.tau is None else float(self.params.tau)

    def fit(self, ctx: FitContext) -> dict:
        """Choose ``tau`` from :data:`TAU_GRID` by validation MAE (unless fixed)."""
        if self.params.tau is not None:
            return {"tau": self.tau, "chosen": False}
        scores = {}
        for tau in TAU_GRID:
            self.tau = tau
            scores[tau] = ctx.validate()
        self.tau = min(scores, key=scores.get)
        return {"tau": self.tau, "chosen": True, "val_mae_scaled": {str(k): v for k, v in scores.items()}}

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        x, m = _targets(batch, self.sizes)
        src = lerp_knn(x, m, batch.pos_src, self.tau, self.params.k)
        return Prediction(src, _no_targets(src, batch))
