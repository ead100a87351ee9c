"""A PyG transform that (re)builds geographic kNN edges from ``data.pos``."""

from __future__ import annotations

import copy

from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from stgraph.graph.build import station_knn_graph


class GeoKNNGraph(BaseTransform):
    """Replace a graph's edges by the kNN graph of ``data.pos`` ((N, 2) latitude/longitude).

    Like PyG's ``KNNGraph``, it works on a copy and clears every stale edge attribute before
    writing ``edge_index``, ``edge_weight`` and ``edge_attr`` (km).
    """

    def __init__(
        self,
        k: int = 6,
        *,
        symmetric: bool = False,
        self_loops: bool = False,
        weight: str = "gaussian",
        sigma_km: float | None = None,
        backend: str | None = None,
    ):
        self.k, self.symmetric, self.self_loops = k, symmetric, self_loops
        self.weight, self.sigma_km, self.backend = weight, sigma_km, backend

    def forward(self, data: Data) -> Data:
        if data.pos is None:
            raise ValueError("GeoKNNGraph needs data.pos as (N, 2) latitude/longitude in degrees")
        data = copy.copy(data)
        for key in list(data.keys()):
            if data.is_edge_attr(key):
                del data[key]
        g = station_knn_graph(
            data.pos,
            self.k,
            symmetric=self.symmetric,
            self_loops=self.self_loops,
            weight=self.weight,
            sigma_km=self.sigma_km,
            backend=self.backend,
        )
        data.edge_index, data.edge_weight, data.edge_attr = g.edge_index, g.edge_weight, g.edge_attr
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k}, symmetric={self.symmetric}, weight={self.weight!r})"
