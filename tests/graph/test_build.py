import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from stgraph.graph import (
    GeoKNNGraph,
    bipartite_knn_graph,
    connectivity_summary,
    gaussian_kernel,
    station_data_graph,
    station_knn_graph,
    station_radius_graph,
    to_networkx,
)

EQUATOR = [[0.0, lon] for lon in (0.0, 1.0, 3.0, 7.0, 15.0, 31.0)]


def test_gaussian_weights_symmetry_and_self_loops():
    g = station_knn_graph(EQUATOR, 1, symmetric=True, self_loops=True, sigma_km=200.0)
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert all((t, s) in pairs for s, t in pairs)  # symmetric
    assert all((i, i) in pairs for i in range(6))
    loops = g.edge_index[0] == g.edge_index[1]
    assert torch.all(g.edge_weight[loops] == 1) and torch.all(g.edge_attr[loops] == 0)
    d = g.edge_attr[~loops, 0]
    torch.testing.assert_close(g.edge_weight[~loops], torch.exp(-((d / 200.0) ** 2)))
    assert g.pos.shape == (6, 2) and g.knn_backend in ("torch_cluster", "torch")


def test_default_sigma_is_edge_length_std():
    d = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(gaussian_kernel(d), torch.exp(-((d / d.std()) ** 2)))


def test_radius_graph_in_km():
    g = station_radius_graph(EQUATOR, 250.0)  # 250 km: only 0-1 (111 km) and 1-3 (223 km)
    assert set(map(tuple, g.edge_index.t().tolist())) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert g.edge_attr.max() < 250


def test_bipartite_targets_to_training_stations():
    g = bipartite_knn_graph(EQUATOR, [[0.0, 2.0], [0.0, 20.0]], 2, weight="inverse")
    assert (g.num_src_nodes, g.num_dst_nodes) == (6, 2) and g.edge_index.shape == (2, 4)
    sets = [set(g.edge_index[0, g.edge_index[1] == t].tolist()) for t in range(2)]
    assert sets == [{1, 2}, {4, 5}]  # lon 2 -> lon 1 and 3 (1 degree each); lon 20 -> 15 and 31
    torch.testing.assert_close(g.edge_weight, 1 / g.edge_attr[:, 0])


def test_transform_copies_and_clears_stale_edges():
    data = Data(pos=torch.tensor(EQUATOR), edge_index=torch.tensor([[0], [5]]), edge_type=torch.tensor([7]))
    out = GeoKNNGraph(k=2)(data)
    assert data.edge_index.shape == (2, 1) and "edge_type" in data  # input untouched
    assert "edge_type" not in out and out.edge_index.shape == (2, 12) and out.edge_attr.shape == (12, 1)
    assert repr(GeoKNNGraph(k=3)) == "GeoKNNGraph(k=3, symmetric=False, weight='gaussian')"


def test_graph_over_a_station_subset_reads_only_positions(uci12):
    train = np.array([0, 2, 4, 6, 8, 10])
    g = station_data_graph(uci12, 3, stations=train)
    assert g.num_nodes == 6 and g.station_index.tolist() == train.tolist()
    np.testing.assert_allclose(g.pos.numpy(), uci12.latlon[train], rtol=1e-6)


def test_networkx_export_and_connectivity():
    two_clusters = [[0.0, 0.0], [0.0, 0.1], [0.0, 0.2], [10.0, 50.0], [10.0, 50.1]]
    g = station_knn_graph(two_clusters, 1, symmetric=True)
    nxg = to_networkx(g, ["a", "b", "c", "d", "e"])
    assert nxg.number_of_nodes() == 5 and nxg.nodes[3]["station"] == "d"
    assert nxg.edges[0, 1]["distance_km"] == pytest.approx(11.13, abs=0.01)
    s = connectivity_summary(g)
    assert s["num_components"] == 2 and s["component_sizes"] == [3, 2] and s["isolated_nodes"] == 0
    assert s["degree_min"] == 1 and s["degree_max"] == 2
