import copy

import pytest
import torch

from stgraph.models import DataSizes, build_model
from stgraph.models.ignnk import IGNNK, IGNNKParams
from stgraph.models.inductive import union_graph, union_inputs
from tests.models.contract import make_batch

TINY = {"hidden_channels": 16, "order": 1, "k": 3}


def dense_cheb_terms(x, p_f, p_b, order):
    """x (B, N, F) -> (B, N, (2K+1) F): [X, T_1(P_f) X, ..., T_1(P_b) X, ...], T_k(P) X = 2 P T_{k-1} - T_{k-2}."""
    terms = [x]
    for p in (p_f, p_b):
        prev, cur = x, p @ x
        terms.append(cur)
        for _ in range(2, order + 1):
            prev, cur = cur, 2 * p @ cur - prev
            terms.append(cur)
    return torch.cat(terms, -1)


@pytest.mark.parametrize("task", ["forecast", "krige"])
def test_forward_matches_dense_recomputation(task):
    batch, sizes = make_batch(task)
    torch.manual_seed(0)
    model = IGNNK(sizes, IGNNKParams(hidden_channels=8, order=2, k=3)).eval()
    pred = model(batch)

    x, pos, n_src = union_inputs(batch)
    b, w, n, c = x.shape
    feats = torch.zeros(b, n, w * c, dtype=torch.float64)  # node features: the window, step by step
    for t in range(w):
        feats[:, :, t * c : (t + 1) * c] = x[:, t].double()
    ei, ew = union_graph(pos, 3)
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj[ei[1], ei[0]] = ew.double()  # adj[i, j]: weight of the edge j -> i
    p_f = adj / adj.sum(1, keepdim=True)  # every node has k in-neighbours
    out_deg = adj.T.sum(1, keepdim=True)
    p_b = torch.where(out_deg > 0, adj.T / out_deg.clamp_min(1e-30), torch.zeros_like(adj))

    def layer(conv, z):
        return dense_cheb_terms(z, p_f, p_b, 2) @ conv.lin.weight.double().T + conv.lin.bias.double()

    h1 = torch.relu(layer(model.gnn1, feats))
    h2 = torch.relu(layer(model.gnn2, h1)) + h1
    y = layer(model.gnn3, h2)  # (B, N, H * C_out), step-major
    ref = y.view(b, n, sizes.horizon, 1).permute(0, 2, 1, 3)
    torch.testing.assert_close(pred.src.double(), ref[:, :, :n_src], atol=1e-5, rtol=0)
    torch.testing.assert_close(pred.tgt.double(), ref[:, :, n_src:], atol=1e-5, rtol=0)


def test_targets_learn_from_neighbours():
    batch, sizes = make_batch("krige")
    torch.manual_seed(0)
    model = build_model("ignnk", sizes, TINY).eval()
    ref = model(batch)
    moved = copy.copy(batch)
    moved.x = batch.x + batch.x_mask * 1.0
    assert not torch.allclose(model(moved).tgt, ref.tgt)  # a target hears its visible neighbours


def test_output_size_follows_the_task():
    for task, h in (("forecast", 5), ("krige", 12)):
        sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=h, task=task)
        model = IGNNK(sizes, IGNNKParams(**TINY))
        assert model.gnn1.lin.in_features == 3 * 12 * 2 * 2  # (2K+1) terms of W * 2 C_in features
        assert model.gnn3.lin.out_features == h
    with pytest.raises(ValueError, match="order"):
        IGNNK(sizes, IGNNKParams(order=-1))
