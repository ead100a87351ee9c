import pytest
import torch

from stgraph.nn.intra_map_gnn import IntraMapGNN, intra_map_graph, voxel_clusters
from stgraph.nn.unet2d import UNet2d


def positions(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([39.6 + 0.8 * torch.rand(n, generator=g), 116.0 + torch.rand(n, generator=g)], -1)


@pytest.mark.parametrize("size", [(8, 12), (32, 48), (33, 49), (5, 7), (1, 1)])
def test_unet_keeps_any_map_size(size):
    torch.manual_seed(0)
    net = UNet2d(3, hidden=8)
    x = torch.randn(4, 3, *size, requires_grad=True)
    out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="UNet2d"):
        net(x[:, :2])


def test_unet_is_spatial():
    torch.manual_seed(0)
    net = UNet2d(1, hidden=8).eval()
    x = torch.zeros(1, 1, 16, 16)
    y = x.clone()
    y[0, 0, 2, 2] = 1.0
    d = (net(y) - net(x)).abs()[0, 0]
    assert d[2, 2] > 0 and d[3, 3] > 0  # neighbours see the change


def test_voxel_clusters_pool_about_ratio_and_ignore_node_order():
    pos = positions(60)
    assign, centres = voxel_clusters(pos, 15)
    assert assign.shape == (60,) and 5 <= centres.size(0) <= 30
    assert torch.equal(torch.unique(assign), torch.arange(centres.size(0)))
    for c in range(centres.size(0)):
        torch.testing.assert_close(centres[c], pos[assign == c].mean(0))
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    assign_p, centres_p = voxel_clusters(pos[perm], 15)
    assert torch.equal(assign_p, assign[perm])
    torch.testing.assert_close(centres_p, centres)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_graph_encoder_shapes_and_permutation_equivariance(levels):
    torch.manual_seed(0)
    pos = positions(40, 2)
    graph = intra_map_graph(pos, k=6, levels=levels)
    assert graph.levels == levels and graph.num_nodes[0] == 40
    assert all(a < b for a, b in zip(graph.num_nodes[1:], graph.num_nodes[:-1], strict=False))
    net = IntraMapGNN(8, num_layers=2, K=2, levels=levels)
    x = torch.randn(2, 3, 40, 8, requires_grad=True)
    out = net(x, graph)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    out_p = net(x[:, :, perm], intra_map_graph(pos[perm], k=6, levels=levels))
    torch.testing.assert_close(out_p, out[:, :, perm], rtol=1e-4, atol=1e-5)


def test_one_block_reaches_graph_neighbours_only():
    torch.manual_seed(0)
    pos = positions(30, 4)
    graph = intra_map_graph(pos, k=3)
    net = IntraMapGNN(4, num_layers=1, K=2, levels=1).eval()
    x = torch.randn(1, 1, 30, 4)
    y = x.clone()
    y[0, 0, 7] += torch.tensor([1.0, -2.0, 0.5, 3.0])  # not constant: LayerNorm would erase that
    changed = ((net(y, graph) - net(x, graph)).abs().amax(-1) > 0)[0, 0]
    lap = graph.laplacians[0]  # dense on a graph this small (fast_laplacian)
    i, j = (lap.coalesce().indices() if lap.is_sparse else torch.nonzero(lap).T)
    neighbours = set(j[i == 7].tolist()) | {7}
    assert set(torch.nonzero(changed).flatten().tolist()) == neighbours


def test_too_deep_for_the_graph_is_an_error():
    graph = intra_map_graph(positions(3), k=2, levels=4)
    assert graph.levels < 4
    with pytest.raises(ValueError, match="levels"):
        IntraMapGNN(4, levels=4)(torch.zeros(1, 1, 3, 4), graph)
