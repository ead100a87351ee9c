"""Spatial k-nearest-neighbour mean: the classic kNN imputation baseline, no parameters.

At each step a target station takes the plain (unweighted) mean of its ``k`` nearest visible
stations by geodesic distance **among those observed at that step**: an unobserved neighbour is
skipped and the next nearest observed one takes its place. This is the spatial kNN baseline of
the air-quality imputation literature (AQI-36 of Yi et al., ST-MVL, IJCAI 2016; Cini et al.,
GRIN, ICLR 2022, report in-sample kNN MAE 30.21 there). ``pred.src`` is
the completed series of the visible stations: observed cells echo the input, unobserved cells are
the mean of the ``k`` nearest *other* visible stations observed at that step. A step at which no
station is observed gives 0 (the standardised mean).

Defined for the aligned tasks (``krige``, ``impute``, ``reconstruct``) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.ops.neighbours import knn_mean, neighbour_order


@dataclass
class KNNMeanParams:
    k: int = 3


class KNNMean(StationModel):
    """Args:
        sizes: data-derived sizes (task ``krige`` or ``impute``). params: :class:`KNNMeanParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, W, N_src, C_out) and
    (B, W, N_tgt, C_out). Memory is O(B·W·N_src²·C_out) (ranked neighbour masks), fine for
    monitoring networks of a few hundred stations.
    """

    trainable = False
    learns_interpolation = False
    tasks = frozenset({"krige", "impute", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: KNNMeanParams | None = None):
        super().__init__(sizes)
        self.params = params or KNNMeanParams()
        if self.params.k < 1:
            raise ValueError(f"knn: k must be >= 1, got {self.params.k}")

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        tc = list(self.sizes.target_channels)
        m = batch.x_mask[..., tc]
        x = torch.where(m, batch.x[..., tc], torch.zeros_like(batch.x[..., tc]))
        k = self.params.k
        tgt = knn_mean(x, m, neighbour_order(batch.pos_src, batch.pos_tgt).to(x.device), k)
        n_src = batch.pos_src.size(0)
        if n_src > 1:
            fill = knn_mean(x, m, neighbour_order(batch.pos_src, batch.pos_src, exclude_self=True).to(x.device), k)
        else:
            fill = torch.zeros_like(x)
        return Prediction(torch.where(m, x, fill), tgt)
