"""Station graphs: kNN backends, weights, builders, transforms, networkx export (geodesy: :mod:`stgraph.geo`)."""

from stgraph.graph.bipartite import BipartiteAttention, bipartite_knn, carry_to_fine, idw_edge_weights
from stgraph.graph.build import bipartite_knn_graph, station_data_graph, station_knn_graph, station_radius_graph
from stgraph.graph.export import connectivity_summary, to_networkx
from stgraph.graph.knn import BACKENDS, default_backend, knn, knn_graph, radius, radius_graph
from stgraph.graph.transforms import GeoKNNGraph
from stgraph.graph.weights import edge_weights, gaussian_kernel, inverse_distance, symmetrize

__all__ = [
    "knn",
    "knn_graph",
    "radius",
    "radius_graph",
    "BACKENDS",
    "default_backend",
    "station_knn_graph",
    "station_radius_graph",
    "bipartite_knn_graph",
    "bipartite_knn",
    "carry_to_fine",
    "idw_edge_weights",
    "BipartiteAttention",
    "station_data_graph",
    "gaussian_kernel",
    "inverse_distance",
    "edge_weights",
    "symmetrize",
    "GeoKNNGraph",
    "to_networkx",
    "connectivity_summary",
]
