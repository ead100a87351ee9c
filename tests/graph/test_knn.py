import numpy as np
import pytest
import torch

from stgraph._optional import has_torch_cluster
from stgraph.geo import latlon_to_xyz
from stgraph.graph import BACKENDS, knn, knn_graph, radius, radius_graph, station_knn_graph


def neighbour_sets(edge_index, n):
    sets = [set() for _ in range(n)]
    for s, t in edge_index.t().tolist():
        sets[t].add(s)
    return sets


def test_torch_cluster_is_the_default_backend():
    """The build installs torch-cluster; the default must use it (the reference is for tests)."""
    assert has_torch_cluster()
    from stgraph.graph.knn import default_backend

    assert default_backend() == "torch_cluster"


# Six stations on the equator at these longitudes: great-circle distance = longitude gap.
EQUATOR = [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
# k = 2 nearest, worked out by hand from the gaps (no ties).
EQUATOR_K2 = [{1, 2}, {0, 2}, {1, 0}, {2, 1}, {3, 2}, {4, 3}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_checked_neighbours(backend):
    pos = latlon_to_xyz(torch.tensor([[0.0, lon] for lon in EQUATOR], dtype=torch.float64))
    ei = knn_graph(pos, 2, backend=backend)
    assert ei.shape == (2, 12)
    assert neighbour_sets(ei, 6) == EQUATOR_K2
    g = station_knn_graph([[0.0, lon] for lon in EQUATOR], 2, backend=backend, weight="none")
    km_per_degree = 111.319  # WGS84 equator
    d = g.edge_attr[:, 0]
    gaps = torch.tensor([abs(EQUATOR[s] - EQUATOR[t]) for s, t in g.edge_index.t().tolist()])
    torch.testing.assert_close(d, (gaps * km_per_degree).float(), rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_antimeridian_neighbours(backend):
    lons = [179.5, -179.5, 178.0, -176.5, 0.0]
    g = station_knn_graph([[0.0, lon] for lon in lons], 2, backend=backend)
    sets = neighbour_sets(g.edge_index, 5)
    assert sets[0] == {1, 2}  # 1.0 and 1.5 degrees away, across the antimeridian
    assert sets[1] == {0, 2}  # 1.0 and 2.5 (vs 3.0 to -176.5)
    assert sets[3] == {1, 0}  # 3.0 and 4.0
    across = g.edge_attr[(g.edge_index[0] == 1) & (g.edge_index[1] == 0), 0]
    assert float(across) == pytest.approx(111.32, abs=0.05)


@pytest.mark.parametrize("n, k", [(500, 1), (3000, 16)])
def test_backends_agree_on_random_points(n, k):
    g = torch.Generator().manual_seed(n)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64)
    pos = pos / pos.norm(dim=1, keepdim=True)
    a, b = (knn_graph(pos, k, backend=be, chunk_elements=10_000) for be in BACKENDS)
    assert neighbour_sets(a, n) == neighbour_sets(b, n)
    y = torch.randn(200, 3, generator=g, dtype=torch.float64)
    a, b = (knn(pos, y, k, backend=be) for be in BACKENDS)
    assert neighbour_sets(a, 200) == neighbour_sets(b, 200)
    a, b = (radius(pos, y, 0.2, max_num_neighbors=8, backend=be) for be in BACKENDS)
    assert neighbour_sets(a, 200) == neighbour_sets(b, 200) and a.size(1) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_bipartite_and_radius_semantics(backend):
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    y = torch.tensor([[0.9, 0.0], [4.0, 0.0]])
    ei = knn(x, y, 2, backend=backend)
    assert neighbour_sets(ei, 2) == [{0, 1}, {1, 2}]  # row 0 indexes x, row 1 indexes y
    assert neighbour_sets(radius(x, y, 1.5, backend=backend), 2) == [{0, 1}, {2}]
    rg = radius_graph(x, 1.5, backend=backend)
    assert neighbour_sets(rg, 3) == [{1}, {0}, set()]
    assert knn_graph(x, 10, backend=backend).size(1) == 3 * 2  # k capped at N-1
    assert knn(x, y[:0], 2, backend=backend).shape == (2, 0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn_graph(torch.zeros(3, 3), 1, backend="faiss")
    with pytest.raises(ValueError, match="non-finite"):
        knn_graph(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match=r"\(N, 2\) latitude/longitude"):
        station_knn_graph(np.zeros((3, 3)), 1)
    with pytest.raises(ValueError, match="latitude must be"):
        station_knn_graph([[91.0, 0.0], [0.0, 0.0]], 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_coincident_points_still_give_k_neighbours_without_self(backend):
    pos = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    ei = knn_graph(pos, 2, backend=backend)
    assert ei.size(1) == 10 and not (ei[0] == ei[1]).any()
    assert neighbour_sets(ei, 5)[:3] == [{1, 2}, {0, 2}, {0, 1}]


def test_morton_order_is_a_permutation_that_groups_neighbours():
    from stgraph.graph.locality import morton_order

    g = torch.Generator().manual_seed(0)
    pos = torch.rand(5000, 3, generator=g)
    order = morton_order(pos)
    assert torch.equal(order.sort().values, torch.arange(5000))
    step = (pos[order][1:] - pos[order][:-1]).norm(dim=1).mean()
    assert step < 0.2 * (pos[1:] - pos[:-1]).norm(dim=1).mean()  # consecutive points are close
    assert torch.equal(morton_order(pos[:, :2]).sort().values, torch.arange(5000))  # 2-D works too


def test_batched_knn_stays_within_examples_and_backends_agree():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 4, generator=g), torch.randn(30, 4, generator=g)
    bx = torch.arange(3).repeat_interleave(torch.tensor([25, 30, 5]))  # example 2 has only 5 sources
    by = torch.arange(3).repeat_interleave(10)
    a, b = (knn(x, y, 8, batch_x=bx, batch_y=by, backend=be) for be in BACKENDS)
    assert neighbour_sets(a, 30) == neighbour_sets(b, 30)
    assert (bx[a[0]] == by[a[1]]).all()
    counts = torch.bincount(a[1], minlength=30)
    assert counts[:20].eq(8).all() and counts[20:].eq(5).all()
    with pytest.raises(ValueError, match="batch_x"):
        knn(x, y, 3, batch_x=bx)
