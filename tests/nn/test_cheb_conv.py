import pytest
import torch

from stgraph.nn.cheb_conv import ChebConv, fast_laplacian, scaled_laplacian

# 6 nodes; node 5 has no edge. (0, 1) is listed both ways with different weights: the larger counts.
EDGES = torch.tensor([[0, 1, 1, 2, 3, 0, 4], [1, 0, 2, 3, 4, 3, 2]])
WEIGHTS = torch.tensor([0.5, 0.8, 1.0, 0.3, 0.7, 0.2, 0.9])
N = 6


def dense_terms(k: int, lambda_max: float = 2.0) -> list[torch.Tensor]:
    """T_0..T_{k-1} of L~, built densely from the edge list (reference only)."""
    w = torch.zeros(N, N, dtype=torch.float64)
    for (j, i), v in zip(EDGES.T.tolist(), WEIGHTS.double().tolist(), strict=True):
        w[i, j] = max(w[i, j], v)
        w[j, i] = max(w[j, i], v)
    deg = w.sum(1)
    dinv = torch.where(deg > 0, deg.pow(-0.5), 0.0)
    lap = torch.eye(N, dtype=torch.float64) - dinv[:, None] * w * dinv[None, :]
    lt = 2.0 / lambda_max * lap - torch.eye(N, dtype=torch.float64)
    terms = [torch.eye(N, dtype=torch.float64), lt]
    while len(terms) < k:
        terms.append(2 * lt @ terms[-1] - terms[-2])
    return terms[:k]


def reference(conv: ChebConv, x: torch.Tensor, lambda_max: float = 2.0) -> torch.Tensor:
    terms = dense_terms(conv.K, lambda_max)
    w = conv.weight.detach().double()
    out = sum(torch.einsum("ij,...jc,cd->...id", t, x.double(), w[k]) for k, t in enumerate(terms))
    return out + conv.bias.detach().double()


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(("c_in", "c_out"), [(3, 4), (5, 2)])  # inputs-first and Clenshaw paths
def test_matches_dense_chebyshev_recursion(k, c_in, c_out):
    torch.manual_seed(k)
    conv = ChebConv(c_in, c_out, k)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, N, c_in)  # batched over leading dims
    out = conv(x, EDGES, WEIGHTS)
    assert out.shape == (2, 3, N, c_out)
    torch.testing.assert_close(out.double(), reference(conv, x), rtol=0, atol=1e-5)
    lap = scaled_laplacian(EDGES, WEIGHTS, N)  # the same from a sparse and a dense Laplacian
    dense = fast_laplacian(lap)
    assert lap.is_sparse and not dense.is_sparse  # a small graph: dense is faster
    torch.testing.assert_close(conv(x, laplacian=lap), out)
    torch.testing.assert_close(conv(x, laplacian=dense), out, rtol=0, atol=1e-6)


def test_lambda_max_and_node_dim():
    torch.manual_seed(0)
    conv = ChebConv(3, 4, 3)
    x = torch.randn(N, 2, 3)  # nodes first
    out = conv(x, EDGES, WEIGHTS, lambda_max=1.5, node_dim=0)
    ref = reference(conv, x.transpose(0, 1), lambda_max=1.5).transpose(0, 1)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


def test_laplacian_of_symmetric_graph_and_edge_order():
    lap = scaled_laplacian(EDGES, WEIGHTS, N).to_dense().double()
    torch.testing.assert_close(lap, dense_terms(2)[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(lap, lap.T)
    perm = torch.randperm(EDGES.size(1), generator=torch.Generator().manual_seed(3))
    flipped = EDGES[:, perm].flip(0)  # listed in another order and direction
    conv = ChebConv(3, 2, 3)
    x = torch.randn(4, N, 3)
    torch.testing.assert_close(conv(x, flipped, WEIGHTS[perm]), conv(x, EDGES, WEIGHTS), rtol=0, atol=1e-6)


def test_isolated_node_is_finite_and_only_sees_itself():
    torch.manual_seed(0)
    conv = ChebConv(3, 2, 3)
    x = torch.randn(4, N, 3)
    out = conv(x, EDGES, WEIGHTS)
    assert torch.isfinite(out).all()
    moved = x.clone()
    moved[:, :5] += 100.0  # the other nodes change: node 5 does not hear it
    torch.testing.assert_close(conv(moved, EDGES, WEIGHTS)[:, 5], out[:, 5])
    empty = conv(x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0))  # no edges at all
    assert torch.isfinite(empty).all()


def test_gradients_reach_inputs_and_weights():
    conv = ChebConv(3, 2, 3)
    x = torch.randn(2, N, 3, requires_grad=True)
    conv(x, EDGES, WEIGHTS).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and conv.weight.grad[2].abs().sum() > 0


# --- outside oracle: PyG's own ChebConv -----------------------------------------------------


def _symmetrised(edge_index, edge_weight, n):
    """Both directions of every edge, the larger weight where both are given (stgraph's W)."""
    flat = edge_index[1] * n + edge_index[0]
    w = torch.zeros(n * n, dtype=edge_weight.dtype).scatter_reduce_(0, flat, edge_weight, reduce="amax").view(n, n)
    w = torch.maximum(w, w.T)
    ei = w.nonzero().T
    return ei, w[ei[0], ei[1]]


def _pyg_copy(conv: ChebConv):
    """PyG's ChebConv with stgraph's weights: PyG keeps Θ_k as ``lins[k]`` (Linear, weight Θ_kᵀ)."""
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    ref = pyg_nn.ChebConv(conv.in_channels, conv.out_channels, conv.K, normalization="sym")
    with torch.no_grad():
        for k, lin in enumerate(ref.lins):
            lin.weight.copy_(conv.weight[k].T)
        ref.bias.copy_(conv.bias)
    return ref


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("lambda_max", [2.0, 1.6])
@pytest.mark.parametrize(("c_in", "c_out"), [(3, 5), (6, 2)])  # inputs-first and Clenshaw paths
def test_matches_pyg_chebconv(k, lambda_max, c_in, c_out):
    """Same filter as ``torch_geometric.nn.ChebConv(normalization="sym")``: L = I - D^-1/2 W D^-1/2,
    L~ = 2 L / λ_max - I, T_k recursion. PyG uses the edge list as given (a directed list gives a
    non-symmetric L) and drops self-loops, so it gets stgraph's symmetrised, loop-free W."""
    g = torch.Generator().manual_seed(10 * k + c_in)
    n = 12
    src, dst = torch.randint(0, n, (2, 30), generator=g)
    keep = src != dst
    edge_index = torch.stack([src[keep], dst[keep]])  # directed, some edges twice or both ways
    edge_weight = torch.rand(edge_index.size(1), generator=g) + 0.1
    conv = ChebConv(c_in, c_out, k)
    torch.nn.init.normal_(conv.bias)
    ref = _pyg_copy(conv)
    x = torch.randn(n, c_in, generator=g)
    out = conv(x, edge_index, edge_weight, lambda_max=lambda_max)
    sym_index, sym_weight = _symmetrised(edge_index, edge_weight, n)
    expected = ref(x, sym_index, sym_weight, lambda_max=lambda_max)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # already-symmetric input: the same edge list for both
    torch.testing.assert_close(conv(x, sym_index, sym_weight, lambda_max=lambda_max), expected, rtol=0, atol=1e-5)


def test_self_loops_are_where_stgraph_and_pyg_differ():
    """stgraph counts a self-loop as an entry of W (the official ST-GCN's dense W would); PyG's
    ChebConv removes self-loops first. Without self-loops (stgraph's kNN graphs have none) they agree."""
    conv = ChebConv(3, 2, 3)
    ref = _pyg_copy(conv)
    x = torch.randn(N, 3)
    loops = torch.cat([EDGES, torch.tensor([[2], [2]])], dim=1)
    weights = torch.cat([WEIGHTS, torch.tensor([0.9])])
    sym_index, sym_weight = _symmetrised(EDGES, WEIGHTS, N)
    assert not (conv(x, loops, weights) - ref(x, *_symmetrised(loops, weights, N))).abs().max() < 1e-3
    torch.testing.assert_close(conv(x, EDGES, WEIGHTS), ref(x, sym_index, sym_weight), rtol=0, atol=1e-5)


def test_large_sparse_laplacian_stays_sparse():
    n = 1000
    src = torch.arange(n)
    ring = torch.stack([src, (src + 1) % n])  # 0.2 % dense once symmetrised
    lap = scaled_laplacian(ring, None, n)
    assert fast_laplacian(lap) is lap
