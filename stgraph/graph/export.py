"""networkx export and connectivity statistics of station graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import degree


def to_networkx(graph: Data, station_ids: list[str] | None = None, *, directed: bool = False) -> nx.Graph:
    """A networkx graph with node attributes ``latitude``, ``longitude`` (and ``station``) and
    edge attributes ``weight`` and ``distance_km``. Undirected unless ``directed``."""
    g = nx.DiGraph() if directed else nx.Graph()
    n = graph.num_nodes
    pos = graph.pos.tolist() if graph.pos is not None else [[np.nan, np.nan]] * n
    for i in range(n):
        attrs = {"latitude": pos[i][0], "longitude": pos[i][1]}
        if station_ids is not None:
            attrs["station"] = station_ids[i]
        g.add_node(i, **attrs)
    w = graph.edge_weight.tolist() if graph.edge_weight is not None else [1.0] * graph.num_edges
    d = graph.edge_attr[:, 0].tolist() if graph.edge_attr is not None else [np.nan] * graph.num_edges
    src, dst = graph.edge_index.tolist()
    g.add_edges_from((s, t, {"weight": wi, "distance_km": di}) for s, t, wi, di in zip(src, dst, w, d, strict=True))
    return g


def connectivity_summary(graph: Data) -> dict:
    """Degree statistics (in-degree: messages a node receives) and connected components
    (weak components of the directed graph)."""
    n = graph.num_nodes
    deg = degree(graph.edge_index[1], num_nodes=n) if graph.num_edges else torch.zeros(n)
    comps = sorted((len(c) for c in nx.connected_components(to_networkx(graph))), reverse=True)
    dist = graph.edge_attr[:, 0] if graph.edge_attr is not None and graph.num_edges else torch.zeros(0)
    return {
        "num_nodes": n,
        "num_edges": int(graph.num_edges),
        "degree_min": float(deg.min()) if n else 0.0,
        "degree_mean": float(deg.mean()) if n else 0.0,
        "degree_max": float(deg.max()) if n else 0.0,
        "num_components": len(comps),
        "component_sizes": comps,
        "isolated_nodes": int((deg == 0).sum()) if graph.num_edges else n,
        "edge_km_min": float(dist.min()) if dist.numel() else float("nan"),
        "edge_km_median": float(dist.median()) if dist.numel() else float("nan"),
        "edge_km_max": float(dist.max()) if dist.numel() else float("nan"),
    }
