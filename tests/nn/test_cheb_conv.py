import pytest
import torch

from stgraph.nn.cheb_conv import ChebConv, scaled_laplacian

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
