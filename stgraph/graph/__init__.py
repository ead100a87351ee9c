"""Station graphs: geodesy, kNN backends, weights, builders, transforms, networkx export."""

from stgraph.graph.bipartite import BipartiteAttention, bipartite_knn, carry_to_fine, idw_edge_weights
from stgraph.graph.build import bipartite_knn_graph, station_data_graph, station_knn_graph, station_radius_graph
from stgraph.graph.export import connectivity_summary, to_networkx
from stgraph.graph.geo import EARTH_RADIUS_KM, geodesic_km, haversine_km, km_to_chord, latlon_to_xyz
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
    "latlon_to_xyz",
    "haversine_km",
    "geodesic_km",
    "km_to_chord",
    "EARTH_RADIUS_KM",
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
