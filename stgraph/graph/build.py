"""Station graphs as PyG ``Data``: kNN, bipartite kNN and radius graphs on latitude/longitude.

Positions are degrees; neighbours are found on unit-sphere xyz (exact great-circle order) and
each chosen edge carries its WGS84 geodesic length in km (``edge_attr``, shape (E, 1)) and a
weight (``edge_weight``, shape (E,)). Graph weights built for training depend only on the
stations passed in, so a caller building them from train-role stations keeps hidden stations out.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import add_self_loops as pyg_add_self_loops

from stgraph.geo import geodesic_km, km_to_chord, latlon_to_xyz
from stgraph.graph.knn import knn, knn_graph, radius_graph, resolve_backend
from stgraph.graph.weights import edge_weights, symmetrize


def _latlon(latlon) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(latlon) if not isinstance(latlon, torch.Tensor) else latlon, dtype=torch.float64)
    if t.dim() != 2 or t.size(1) != 2:
        raise ValueError(f"positions must be (N, 2) latitude/longitude in degrees, got shape {tuple(t.shape)}")
    if (t[:, 0].abs() > 90).any() or (t[:, 1].abs() > 180).any():
        raise ValueError("latitude must be in [-90, 90] and longitude in [-180, 180] degrees")
    return t


def _edge_distance(src_ll: torch.Tensor, dst_ll: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    s, d = src_ll[edge_index[0]], dst_ll[edge_index[1]]
    return geodesic_km(s[:, 0], s[:, 1], d[:, 0], d[:, 1])


def _finish(edge_index, latlon, *, weight, sigma_km, self_loops, backend, **extra) -> Data:
    n = latlon.size(0)
    dist = _edge_distance(latlon, latlon, edge_index)
    w = edge_weights(dist, weight, sigma_km)
    if self_loops:
        edge_index, w = pyg_add_self_loops(edge_index, w, fill_value=1.0, num_nodes=n)
        dist = torch.cat([dist, torch.zeros(n, dtype=dist.dtype)])
    return Data(
        edge_index=edge_index,
        edge_weight=w.float(),
        edge_attr=dist.float().unsqueeze(-1),
        pos=latlon.float(),
        num_nodes=n,
        knn_backend=backend,
        **extra,
    )


def station_knn_graph(
    latlon,
    k: int,
    *,
    symmetric: bool = False,
    self_loops: bool = False,
    weight: str = "gaussian",
    sigma_km: float | None = None,
    backend: str | None = None,
) -> Data:
    """kNN graph of stations.

    Args:
        latlon: (N, 2) latitude/longitude in degrees.
        k: neighbours per station (capped at N-1).
        symmetric: add reverse edges, so i~j whenever either is among the other's k nearest.
        self_loops: add one loop per node with weight 1 and distance 0.
        weight: ``gaussian`` (kernel on km, ``sigma_km`` default = std of edge lengths),
            ``inverse`` (1/d) or ``none``.
    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), edge_attr (E, 1) km, pos (N, 2))``.
    """
    latlon = _latlon(latlon)
    backend = resolve_backend(backend)
    ei = knn_graph(latlon_to_xyz(latlon), k, backend=backend)
    if symmetric:
        ei = symmetrize(ei, latlon.size(0))
    return _finish(ei, latlon, weight=weight, sigma_km=sigma_km, self_loops=self_loops, backend=backend, k=k)


def station_radius_graph(
    latlon,
    r_km: float,
    *,
    max_num_neighbors: int = 32,
    self_loops: bool = False,
    weight: str = "gaussian",
    sigma_km: float | None = None,
    backend: str | None = None,
) -> Data:
    """Edges between stations within ``r_km`` great-circle kilometres (at most
    ``max_num_neighbors`` nearest per node). Same outputs as :func:`station_knn_graph`."""
    latlon = _latlon(latlon)
    backend = resolve_backend(backend)
    ei = radius_graph(latlon_to_xyz(latlon), km_to_chord(r_km), max_num_neighbors=max_num_neighbors, backend=backend)
    return _finish(ei, latlon, weight=weight, sigma_km=sigma_km, self_loops=self_loops, backend=backend, r_km=r_km)


def bipartite_knn_graph(
    src_latlon,
    dst_latlon,
    k: int,
    *,
    weight: str = "gaussian",
    sigma_km: float | None = None,
    backend: str | None = None,
) -> Data:
    """Edges from each target location (hidden station, grid point) to its ``k`` nearest sources
    (training stations).

    Returns:
        ``Data(edge_index (2, M*k)`` with row 0 into the sources and row 1 into the targets,
        ``edge_weight``, ``edge_attr`` (km), ``pos_src (N, 2)``, ``pos_dst (M, 2)``,
        ``num_src_nodes=N``, ``num_dst_nodes=M)``.
    """
    src, dst = _latlon(src_latlon), _latlon(dst_latlon)
    backend = resolve_backend(backend)
    ei = knn(latlon_to_xyz(src), latlon_to_xyz(dst), k, backend=backend)
    dist = _edge_distance(src, dst, ei)
    return Data(
        edge_index=ei,
        edge_weight=edge_weights(dist, weight, sigma_km).float(),
        edge_attr=dist.float().unsqueeze(-1),
        pos_src=src.float(),
        pos_dst=dst.float(),
        num_src_nodes=src.size(0),
        num_dst_nodes=dst.size(0),
        knn_backend=backend,
        k=min(k, src.size(0)),
    )


def station_data_graph(data, k: int, *, stations: np.ndarray | None = None, **kwargs) -> Data:
    """kNN graph over the nodes ``stations`` (indices into ``data``; default all). The result's
    ``station_index`` maps graph nodes back to dataset nodes.

    Args:
        data: a :class:`~stgraph.data.station_data.StationData` or anything with its ``latlon``
            ((N, 2) degrees) and ``num_nodes``; only positions are read.
    """
    idx = np.arange(data.num_nodes) if stations is None else np.asarray(stations, dtype=np.int64)
    g = station_knn_graph(data.latlon[idx], k, **kwargs)
    g.station_index = torch.as_tensor(idx)
    return g
