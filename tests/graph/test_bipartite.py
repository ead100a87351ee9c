import pytest
import torch

from stgraph._optional import has_torch_cluster
from stgraph.geo import geodesic_km, haversine_km
from stgraph.graph.bipartite import BipartiteAttention, bipartite_knn, carry_to_fine, idw_edge_weights

BACKENDS = ["torch"] + (["torch_cluster"] if has_torch_cluster() else [])


def positions(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([39.5 + torch.rand(n, generator=g), 115.8 + 1.2 * torch.rand(n, generator=g)], -1).double()


@pytest.mark.parametrize("backend", BACKENDS)
def test_edges_are_each_fine_nodes_k_nearest_coarse_nodes(backend):
    pc, pf, k = positions(40, 0), positions(70, 1), 5
    ei, dist = bipartite_knn(pc, pf, k, backend=backend)
    assert ei.shape == (2, 70 * k) and ei.dtype == torch.long and dist.shape == (70 * k,)
    brute = haversine_km(pf[:, None, 0], pf[:, None, 1], pc[None, :, 0], pc[None, :, 1])  # (Nf, Nc)
    want = brute.topk(k, dim=1, largest=False).indices
    for f in range(70):
        assert set(ei[0, ei[1] == f].tolist()) == set(want[f].tolist())
    assert torch.equal(torch.bincount(ei[1], minlength=70), torch.full((70,), k))
    ref = geodesic_km(pc[ei[0], 0], pc[ei[0], 1], pf[ei[1], 0], pf[ei[1], 1])
    torch.testing.assert_close(dist.double(), ref, rtol=1e-5, atol=1e-4)


def test_k_is_capped_and_validated():
    ei, _ = bipartite_knn(positions(3, 0), positions(4, 1), 10)
    assert ei.shape == (2, 12)
    with pytest.raises(ValueError, match="k must be >= 1"):
        bipartite_knn(positions(3, 0), positions(4, 1), 0)


def test_idw_weights_sum_to_one_and_follow_distance():
    pc, pf = positions(20, 2), positions(30, 3)
    ei, dist = bipartite_knn(pc, pf, 4)
    w = idw_edge_weights(ei, dist, 30, power=2.0)
    sums = torch.zeros(30, dtype=w.dtype).index_add_(0, ei[1], w)
    torch.testing.assert_close(sums, torch.ones(30, dtype=w.dtype))
    raw = dist.double().pow(-2.0)
    for f in (0, 17):  # proportional to 1/d² within a fine node
        e = ei[1] == f
        torch.testing.assert_close(w[e].double(), raw[e] / raw[e].sum(), rtol=1e-5, atol=1e-7)


def test_fine_node_on_a_coarse_node_gets_its_features_with_idw():
    pc = positions(12, 4)
    pf = torch.cat([pc[5:6], positions(3, 5)])  # fine node 0 sits exactly on coarse node 5
    ei, dist = bipartite_knn(pc, pf, 4)
    w = idw_edge_weights(ei, dist, pf.size(0))
    h = torch.randn(2, 3, 12, 6, generator=torch.Generator().manual_seed(0))
    out = carry_to_fine(h, ei, w, pf.size(0))
    assert out.shape == (2, 3, 4, 6)
    torch.testing.assert_close(out[:, :, 0], h[:, :, 5], rtol=1e-3, atol=1e-3)
    assert not torch.allclose(out[:, :, 1], h[:, :, 5], atol=1e-2)


def dense_reference(h, ei, w, nf):
    """out[b, t, f] = sum_e w h[src] / sum_e w, built edge by edge."""
    b, t, _, d = h.shape
    w = w.expand(b, t, -1) if w.dim() == 3 else w.expand(b, t, w.numel())
    num, den = torch.zeros(b, t, nf, d, dtype=torch.float64), torch.zeros(b, t, nf, dtype=torch.float64)
    for e, (c, f) in enumerate(ei.T.tolist()):
        num[:, :, f] += w[:, :, e, None].double() * h[:, :, c].double()
        den[:, :, f] += w[:, :, e].double()
    return torch.where(den[..., None] > 0, num / den.clamp_min(1e-300)[..., None], 0.0)


def test_carry_to_fine_matches_reference_for_static_and_batched_weights():
    g = torch.Generator().manual_seed(1)
    ei = torch.tensor([[0, 2, 1, 2, 3, 0], [0, 0, 1, 1, 1, 3]])  # fine node 2 has no edge
    h = torch.randn(2, 3, 4, 5, generator=g)
    w_static = torch.rand(6, generator=g) + 0.1
    w_batched = torch.rand(2, 3, 6, generator=g) + 0.1
    for w in (w_static, w_batched, w_batched[:, :1]):
        out = carry_to_fine(h, ei, w, 4)
        assert out.shape == (2, 3, 4, 5)
        torch.testing.assert_close(out.double(), dense_reference(h, ei, w, 4), rtol=1e-5, atol=1e-6)
        assert (out[:, :, 2] == 0).all()


def test_carry_to_fine_gradients_and_errors():
    ei = torch.tensor([[0, 1, 1], [0, 0, 1]])
    h = torch.randn(1, 2, 2, 3, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 1.0], requires_grad=True)
    carry_to_fine(h, ei, w, 2).square().sum().backward()
    assert h.grad is not None and w.grad is not None and w.grad[:2].abs().sum() > 0
    with pytest.raises(ValueError, match="weights must be"):
        carry_to_fine(h, ei, torch.ones(4), 2)
    with pytest.raises(ValueError, match="row 1"):
        carry_to_fine(h, ei, torch.ones(3), 1)
    with pytest.raises(ValueError, match="row 0"):
        carry_to_fine(h[:, :, :1], ei, torch.ones(3), 2)


def test_attention_starts_as_idw_and_learns_from_features():
    torch.manual_seed(0)
    pc, pf = positions(15, 6).float(), positions(25, 7).float()
    ei, dist = bipartite_knn(pc, pf, 4)
    att = BipartiteAttention(channels=8, hidden=16, idw_power=2.0)
    h = torch.randn(2, 3, 15, 8)
    w = att(h, pc, pf, ei, dist)
    assert w.shape == (2, 3, ei.size(1))
    sums = torch.zeros(2, 3, 25).index_add_(2, ei[1], w)
    torch.testing.assert_close(sums, torch.ones(2, 3, 25))
    idw = idw_edge_weights(ei, dist, 25, power=2.0)
    torch.testing.assert_close(w, idw.expand_as(w), rtol=1e-4, atol=1e-6)

    torch.nn.init.normal_(att.query[-1].weight)  # a trained query: weights now depend on the features
    w1 = att(h, pc, pf, ei, dist)
    w2 = att(h + torch.randn_like(h), pc, pf, ei, dist)
    assert not torch.allclose(w1, w2)
    carry_to_fine(h, ei, w1, 25).sum().backward()
    assert att.key_feat.weight.grad is not None and att.key_feat.weight.grad.abs().sum() > 0
    assert att.log_power.grad is not None
