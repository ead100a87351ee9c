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

from stgraph.graph.geo import geodesic_km
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel


@dataclass
class KNNMeanParams:
    k: int = 3


def neighbour_order(pos_from: torch.Tensor, pos_to: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """(N_to, N_from') indices of ``pos_from`` stations, nearest first (geodesic km, ties by index).

    With ``exclude_self`` (``pos_from`` is ``pos_to``) each station's own index is dropped, so
    N_from' = N_from - 1; otherwise N_from' = N_from.
    """
    pf, pt = pos_from.double(), pos_to.double()
    d = geodesic_km(pt[:, None, 0], pt[:, None, 1], pf[None, :, 0], pf[None, :, 1])  # stations: small
    if exclude_self:
        d = d.fill_diagonal_(float("inf"))
    order = torch.argsort(d, dim=1, stable=True)
    return order[:, :-1] if exclude_self else order


def knn_mean(x: torch.Tensor, mask: torch.Tensor, order: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the first ``k`` observed stations in each row of ``order``.

    Args:
        x, mask: (B, W, N, C) values and observation mask.
        order: (T, R) station indices into N, nearest first.
        k: neighbours averaged.
    Returns:
        (B, W, T, C); 0 where no listed station is observed.
    """
    xr = x[:, :, order]  # (B, W, T, R, C)
    mr = mask[:, :, order]
    sel = mr & (mr.cumsum(dim=3) <= k)  # the first k observed in rank order
    num = torch.where(sel, xr, torch.zeros_like(xr)).sum(dim=3)
    cnt = sel.sum(dim=3)
    return torch.where(cnt > 0, num / cnt.clamp_min(1).to(x.dtype), torch.zeros_like(num))


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
