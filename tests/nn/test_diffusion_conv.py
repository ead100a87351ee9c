import pytest
import torch

from stgraph.nn.diffusion_conv import (
    DenseSupports,
    DiffusionConv,
    DiffusionSupports,
    diffusion_features,
    fast_supports,
    make_supports,
    transition_weights,
)

# (sender j, receiver i, weight): node 4 has no in-edges, node 5 neither in- nor out-edges,
# node 3 has no out-edges; weights are uneven so normalising by the wrong degree shows
EDGES = [(0, 1, 1.0), (1, 0, 0.5), (2, 1, 2.0), (1, 2, 0.3), (0, 3, 1.5), (2, 3, 0.2), (4, 0, 0.7), (4, 2, 1.2)]
N = 6


def graph():
    ei = torch.tensor([[j for j, _, _ in EDGES], [i for _, i, _ in EDGES]])
    return ei, torch.tensor([w for _, _, w in EDGES])


def dense_transitions() -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: W[i, j] = weight of the edge j -> i; P_f row-normalises W, P_b row-normalises W^T."""
    w = torch.zeros(N, N, dtype=torch.float64)
    for j, i, wt in EDGES:
        w[i, j] = wt

    def rownorm(a):
        d = a.sum(1, keepdim=True)
        return torch.where(d > 0, a / d.clamp_min(1e-30), torch.zeros_like(a))

    return rownorm(w), rownorm(w.T)


def dense_terms(x: torch.Tensor, K: int, recursion: str) -> torch.Tensor:
    """x (B, N, C) float64 -> (B, N, (2K+1) C) = [X, P_f-terms..., P_b-terms...]."""
    terms = [x]
    for p in dense_transitions():
        prev, cur = x, p @ x
        terms.append(cur)
        for _ in range(2, K + 1):
            nxt = p @ cur if recursion == "power" else 2 * p @ cur - prev
            prev, cur = cur, nxt
            terms.append(cur)
    return torch.cat(terms, dim=-1)


def test_transitions_are_row_stochastic_with_zero_rows_for_isolated_nodes():
    pf, pb = dense_transitions()
    ei, ew = graph()
    w_fwd, w_bwd = transition_weights(ei, ew, N)
    got_f = torch.zeros(N, N, dtype=torch.float64).index_put_((ei[1], ei[0]), w_fwd.double(), accumulate=True)
    got_b = torch.zeros(N, N, dtype=torch.float64).index_put_((ei[0], ei[1]), w_bwd.double(), accumulate=True)
    torch.testing.assert_close(got_f, pf, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_b, pb, atol=1e-6, rtol=0)
    assert torch.allclose(got_f.sum(1), torch.tensor([1.0, 1, 1, 1, 0, 0], dtype=torch.float64))
    assert torch.allclose(got_b.sum(1), torch.tensor([1.0, 1, 1, 0, 1, 0], dtype=torch.float64))


@pytest.mark.parametrize("recursion", ["power", "chebyshev"])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_matches_dense_reference(K, recursion):
    torch.manual_seed(K)
    conv = DiffusionConv(3, 4, K=K, recursion=recursion)
    x = torch.randn(2, N, 3)
    ei, ew = graph()
    ref = dense_terms(x.double(), K, recursion) @ conv.lin.weight.double().T + conv.lin.bias.double()
    out = conv(x, ei, ew)
    assert out.shape == (2, N, 4)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    # precomputed supports give the same, sparse or dense; extra leading dims work
    sup = DiffusionSupports(ei, ew, N)
    torch.testing.assert_close(conv(x, supports=sup), out)
    torch.testing.assert_close(conv(x, supports=DenseSupports(sup)), out)
    x4 = torch.randn(2, 5, N, 3)
    ref4 = dense_terms(x4.double(), K, recursion) @ conv.lin.weight.double().T + conv.lin.bias.double()
    torch.testing.assert_close(conv(x4, supports=sup).double(), ref4, atol=1e-5, rtol=0)


def test_node_first_features_match_dense_terms():
    x = torch.randn(N, 2, 3)  # (N, B, C)
    ei, ew = graph()
    got = diffusion_features(x, DiffusionSupports(ei, ew, N), 2, "chebyshev")
    ref = dense_terms(x.transpose(0, 1).double(), 2, "chebyshev").transpose(0, 1)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_unit_weights_when_none():
    ei, _ = graph()
    conv = DiffusionConv(2, 3, K=1)
    x = torch.randn(1, N, 2)
    torch.testing.assert_close(conv(x, ei), conv(x, ei, torch.ones(ei.size(1))))
    assert not torch.allclose(conv(x, ei), conv(x, ei, graph()[1]))


def test_recursions_differ_from_two_hops_on():
    torch.manual_seed(0)
    x = torch.randn(2, N, 3)
    ei, ew = graph()
    for K, same in ((1, True), (2, False), (3, False)):
        power = DiffusionConv(3, 4, K=K, recursion="power")
        cheb = DiffusionConv(3, 4, K=K, recursion="chebyshev")
        cheb.load_state_dict(power.state_dict())
        assert torch.allclose(power(x, ei, ew), cheb(x, ei, ew)) == same


def test_isolated_nodes_and_zero_weights_stay_finite():
    ei, ew = graph()
    x = torch.randn(2, N, 3)
    for weights in (ew, torch.zeros_like(ew)):  # zero weights: edges present but every degree is 0
        for recursion in ("power", "chebyshev"):
            out = DiffusionConv(3, 4, K=3, recursion=recursion)(x, ei, weights)
            assert torch.isfinite(out).all()
    # node 5 has no edges: its output is its own Linear term, whatever the other nodes hold
    conv = DiffusionConv(3, 4, K=2)
    y = x.clone()
    y[:, :5] += 1.0
    torch.testing.assert_close(conv(y, ei, ew)[:, 5], conv(x, ei, ew)[:, 5])
    assert not torch.allclose(conv(y, ei, ew)[:, 4], conv(x, ei, ew)[:, 4])
    sup = DiffusionSupports(ei[:, :0], ew[:0], N)  # no edges at all
    assert torch.isfinite(conv(x, supports=sup)).all()


def test_gradient_reaches_input():
    ei, ew = graph()
    x = torch.randn(2, N, 3, requires_grad=True)
    DiffusionConv(3, 4, K=2)(x, ei, ew).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_options():
    with pytest.raises(ValueError, match="recursion"):
        DiffusionConv(3, 4, recursion="cheb")
    with pytest.raises(ValueError, match="K"):
        DiffusionConv(3, 4, K=-1)
    with pytest.raises(ValueError, match="edge_index or supports"):
        DiffusionConv(3, 4)(torch.zeros(1, N, 3))


# --- masked transitions: neighbours that are missing do not count as zeros -------------------


def test_masked_mean_is_the_mean_over_observed_neighbours_only():
    # node 0 hears from 1, 2, 3 (weights 1, 2, 3); node 4 hears from 0 only
    ei = torch.tensor([[1, 2, 3, 0], [0, 0, 0, 4]])
    ew = torch.tensor([1.0, 2.0, 3.0, 0.5])
    sup = DiffusionSupports(ei, ew, 5)
    x = torch.tensor([[10.0, 1.0, 1e6, 4.0, 7.0], [10.0, 1e6, 1e6, 1e6, 7.0]]).T.unsqueeze(-1)  # (N=5, B=2, 1)
    mask = torch.tensor([[True, True, False, True, True], [False, False, False, False, True]]).T.unsqueeze(-1)
    terms = diffusion_features(x, sup, 1, "power", mask)  # (N, B, 3): [X, P_f X, P_b X]
    fwd, bwd = terms[..., 1], terms[..., 2]
    # sample 0: node 2 is missing, so node 0 averages nodes 1 and 3 over their weights only
    assert fwd[0, 0].item() == pytest.approx((1 * 1.0 + 3 * 4.0) / (1 + 3))
    assert fwd[4, 0].item() == pytest.approx(10.0)
    # the ordinary transition would count node 2 (zeroed) in the denominator
    plain = diffusion_features(torch.where(mask, x, 0.0), sup, 1, "power")[..., 1]
    assert plain[0, 0].item() == pytest.approx(13.0 / 6)
    # sample 1: no observed in-neighbour -> 0 (never NaN), and garbage in unobserved cells is never read
    assert fwd[0, 1].item() == 0.0 and fwd[4, 1].item() == 0.0
    # backward: node 0 sends to node 4 only, observed in both samples
    assert bwd[0, 0].item() == pytest.approx(7.0) and bwd[0, 1].item() == pytest.approx(7.0)
    assert bwd[1, 0].item() == pytest.approx(10.0) and bwd[1, 1].item() == 0.0
    torch.testing.assert_close(terms[..., 0], torch.where(mask, x, 0.0)[..., 0])  # X itself, unobserved zeroed
    assert torch.isfinite(terms).all()


def dense_masked_terms(x: torch.Tensor, m: torch.Tensor, K: int, recursion: str) -> torch.Tensor:
    """Reference: Y_k = P^k (m x) / P^k m (0 where P^k m = 0); Chebyshev terms as polynomials in Y."""
    x0 = x * m
    terms = [x0]
    for p in dense_transitions():
        ys = [x0]
        num, den = x0, m
        for _ in range(K):
            num, den = p @ num, p @ den
            ys.append(torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)))
        if recursion == "chebyshev":  # T_2 = 2x^2 - 1, T_3 = 4x^3 - 3x
            cheb = ys[:2]
            if K >= 2:
                cheb.append(2 * ys[2] - ys[0])
            if K >= 3:
                cheb.append(4 * ys[3] - 3 * ys[1])
            ys = cheb
        terms.extend(ys[1:])
    return torch.cat(terms, dim=-1)


@pytest.mark.parametrize("recursion", ["power", "chebyshev"])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_masked_terms_match_dense_reference(K, recursion):
    torch.manual_seed(K)
    conv = DiffusionConv(3, 4, K=K, recursion=recursion)
    x = torch.randn(2, N, 3)
    mask = torch.rand(2, N, 3) > 0.4
    ei, ew = graph()
    ref = dense_masked_terms(x.double(), mask.double(), K, recursion) @ conv.lin.weight.double().T
    garbled = torch.where(mask, x, torch.full_like(x, 1e6))  # unobserved garbage is ignored
    for sup in (DiffusionSupports(ei, ew, N), DenseSupports(DiffusionSupports(ei, ew, N))):
        out = conv(garbled, supports=sup, mask=mask)
        torch.testing.assert_close(out.double(), ref + conv.lin.bias.double(), atol=1e-5, rtol=0)


def test_supports_are_dense_on_small_dense_graphs_and_sparse_on_large_sparse_ones():
    ei, ew = graph()
    assert isinstance(make_supports(ei, ew, N), DenseSupports)  # 8 edges on 6 nodes
    n, k = 1000, 4  # a ring-like kNN graph: 0.4 % dense
    src = torch.arange(n).repeat_interleave(k)
    dst = (src + torch.arange(1, k + 1).repeat(n)) % n
    big = make_supports(torch.stack([src, dst]), None, n)
    assert type(big) is DiffusionSupports and fast_supports(big) is big


@pytest.mark.parametrize("recursion", ["power", "chebyshev"])
def test_all_observed_mask_is_the_ordinary_transition(recursion):
    # every node has in- and out-edges, so no walk loses mass: P^k 1 = 1 in both directions
    ei = torch.tensor([[0, 1, 2, 3, 0, 2], [1, 2, 3, 0, 2, 0]])
    ew = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.7, 0.3])
    x = torch.randn(4, 2, 3)
    sup = DiffusionSupports(ei, ew, 4)
    torch.testing.assert_close(
        diffusion_features(x, sup, 3, recursion, torch.ones_like(x, dtype=torch.bool)),
        diffusion_features(x, sup, 3, recursion),
        atol=1e-5,
        rtol=0,
    )


def test_masked_gradient_reaches_observed_inputs_only():
    ei, ew = graph()
    x = torch.randn(2, N, 3, requires_grad=True)
    mask = torch.rand(2, N, 3) > 0.5
    out = DiffusionConv(3, 4, K=2)(x, ei, ew, mask=mask)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask] == 0).all() and x.grad[mask].abs().sum() > 0
    # K = 0: a plain Linear over the observed inputs
    conv0 = DiffusionConv(3, 4, K=0)
    torch.testing.assert_close(conv0(x, ei, ew, mask=mask), conv0(torch.where(mask, x, 0.0), ei, ew))
