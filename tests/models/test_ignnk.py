import copy

import pytest
import torch

from stgraph.models import DataSizes, build_model
from stgraph.models.anchors import anchor_prediction
from stgraph.models.ignnk import IGNNK, IGNNKParams
from stgraph.models.inductive import union_graph, union_inputs
from tests.models.contract import check_contract, make_batch

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


def dense_transitions(pos, k):
    ei, ew = union_graph(pos, k)
    n = pos.size(0)
    adj = torch.zeros(n, n, dtype=torch.float64)
    adj[ei[1], ei[0]] = ew.double()  # adj[i, j]: weight of the edge j -> i
    p_f = adj / adj.sum(1, keepdim=True)  # every node has k in-neighbours
    out_deg = adj.T.sum(1, keepdim=True)
    p_b = torch.where(out_deg > 0, adj.T / out_deg.clamp_min(1e-30), torch.zeros_like(adj))
    return p_f, p_b


def dense_masked_first_terms(x, m, p_f, p_b):
    """order 1: [X, masked P_f X, masked P_b X], masked P X = P(m X) / P m (0 where P m = 0)."""
    terms = [x * m]
    for p in (p_f, p_b):
        num, den = p @ (x * m), p @ m
        terms.append(torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)))
    return torch.cat(terms, -1)


@pytest.mark.parametrize("task", ["forecast", "krige"])
def test_forward_matches_dense_recomputation(task):
    """The earlier variant, all channels and masks as inputs, plain transitions, no anchor."""
    batch, sizes = make_batch(task)
    torch.manual_seed(0)
    params = IGNNKParams(hidden_channels=8, order=2, k=3, inputs="all", anchor="none", masked_mean=False)
    model = IGNNK(sizes, params).eval()
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


@pytest.mark.parametrize("task", ["forecast", "krige"])
def test_paper_inputs_with_masked_mean_match_dense_recomputation(task):
    """Default inputs: the target channel's window (W values per node, hidden nodes zero); the
    first layer averages observed neighbours only; the output is a residual over the anchor."""
    batch, sizes = make_batch(task)
    batch.x_mask[1, :, 2] = False  # a visible station hidden in one sample (sample node masking)
    torch.manual_seed(0)
    model = IGNNK(sizes, IGNNKParams(hidden_channels=8, order=1, k=3)).eval()
    with torch.no_grad():
        model.gnn3.lin.weight.normal_()  # as if trained: the residual is not zero
        model.gnn3.lin.bias.normal_()
    noisy = copy.copy(batch)
    noisy.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e6))
    pred = model(noisy)

    b, w, n = 4, 12, 6
    x = torch.zeros(b, n, w, dtype=torch.float64)  # node features: the target channel's window
    m = torch.zeros(b, n, w, dtype=torch.float64)
    x[:, :5] = (batch.x[..., 0] * batch.x_mask[..., 0]).transpose(1, 2).double()
    m[:, :5] = batch.x_mask[..., 0].transpose(1, 2).double()
    p_f, p_b = dense_transitions(torch.cat([batch.pos_src, batch.pos_tgt]), 3)

    def layer(conv, z, mask=None):
        terms = dense_masked_first_terms(z, mask, p_f, p_b) if mask is not None else dense_cheb_terms(z, p_f, p_b, 1)
        return terms @ conv.lin.weight.double().T + conv.lin.bias.double()

    h1 = torch.relu(layer(model.gnn1, x, m))
    h2 = torch.relu(layer(model.gnn2, h1)) + h1
    y = layer(model.gnn3, h2).view(b, n, sizes.horizon, 1).permute(0, 2, 1, 3)
    anchor = anchor_prediction(batch, sizes)
    want = anchor.src.double() + y[:, :, :5]
    if sizes.aligned:  # keep_observed: the observed input cells are output unchanged
        want = torch.where(batch.x_mask[..., :1], batch.x[..., :1].double(), want)
    torch.testing.assert_close(pred.src.double(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pred.tgt.double(), anchor.tgt.double() + y[:, :, 5:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", ["forecast", "krige", "impute"])
@pytest.mark.parametrize("inputs", ["target", "all"])
def test_untrained_model_is_its_anchor(task, inputs):
    batch, sizes = make_batch(task)
    batch.x_mask[2, :, 0] = False  # a station with no input at all in one sample still gets its anchor
    batch.x = batch.x * batch.x_mask
    torch.manual_seed(0)
    model = build_model("ignnk", sizes, {**TINY, "inputs": inputs})
    model.reset_parameters()  # the zero init survives a reset
    pred = model(batch)
    ref = anchor_prediction(batch, sizes, "auto")
    torch.testing.assert_close(pred.src, ref.src)
    torch.testing.assert_close(pred.tgt, ref.tgt)


@pytest.mark.parametrize("task", ["forecast", "krige", "impute"])
def test_variants_pass_the_contract(task):
    check_contract("ignnk", {**TINY, "anchor": "none", "masked_mean": False}, task)  # the paper, from scratch
    check_contract("ignnk", {**TINY, "inputs": "all"}, task, overfit=False)


def test_targets_learn_from_neighbours():
    batch, sizes = make_batch("krige")
    torch.manual_seed(0)
    model = build_model("ignnk", sizes, {**TINY, "anchor": "none"}).eval()
    ref = model(batch)
    moved = copy.copy(batch)
    moved.x = batch.x + batch.x_mask * 1.0
    assert not torch.allclose(model(moved).tgt, ref.tgt)  # a target hears its visible neighbours


def test_output_size_follows_the_task():
    for task, h in (("forecast", 5), ("krige", 12)):
        sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=h, task=task)
        model = IGNNK(sizes, IGNNKParams(**TINY))
        assert model.gnn1.lin.in_features == 3 * 12 * 1  # (2K+1) terms of the W target values (the paper)
        assert model.gnn3.lin.out_features == h
        model = IGNNK(sizes, IGNNKParams(**TINY, inputs="all"))
        assert model.gnn1.lin.in_features == 3 * 12 * 2 * 2  # (2K+1) terms of W * 2 C_in features
    with pytest.raises(ValueError, match="order"):
        IGNNK(sizes, IGNNKParams(order=-1))
    with pytest.raises(ValueError, match="inputs"):
        IGNNK(sizes, IGNNKParams(inputs="some"))
