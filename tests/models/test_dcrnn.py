import copy
import math

import pytest
import torch

from stgraph.models import DataSizes, build_model
from stgraph.models.anchors import anchor_prediction
from stgraph.models.dcrnn import DCRNN, DCRNNParams, auto_decay_steps, lambert_w, sampling_probability
from stgraph.models.inductive import union_graph, union_inputs
from stgraph.nn.dcgru import DCGRUCell
from stgraph.nn.diffusion_conv import DiffusionSupports
from tests.models.contract import check_contract, make_batch

TINY = {"hidden_channels": 8, "num_layers": 1, "max_diffusion_step": 1, "k": 3}


def dense_terms(x, edges, n, K, recursion):
    """x (B, N, C) -> (B, N, (2K+1) C) with dense P_f = rownorm(W), P_b = rownorm(W^T), W[i, j] = w(j -> i)."""
    w = torch.zeros(n, n, dtype=x.dtype)
    for j, i, wt in edges:
        w[i, j] = wt
    terms = [x]
    for a in (w, w.T):
        p = a / a.sum(1, keepdim=True).clamp_min(1e-30)
        prev, cur = x, p @ x
        terms.append(cur)
        for _ in range(2, K + 1):
            prev, cur = cur, (p @ cur if recursion == "power" else 2 * p @ cur - prev)
            terms.append(cur)
    return torch.cat(terms, -1)


@pytest.mark.parametrize("recursion", ["power", "chebyshev"])
def test_dcgru_cell_matches_dense_reference(recursion):
    """The paper's cell: one diffusion convolution over [x, h] for both gates, one over [x, r*h]."""
    torch.manual_seed(0)
    edges = [(0, 1, 1.0), (2, 1, 0.4), (1, 0, 2.0), (3, 0, 0.5), (1, 2, 1.0), (4, 3, 0.8), (0, 4, 0.3), (2, 3, 1.1)]
    n, b, c, hid, K = 5, 2, 3, 4, 2
    cell = DCGRUCell(c, hid, K, recursion)
    with torch.no_grad():
        cell.x_proj.bias.normal_()
    x, h = torch.randn(n, b, c), torch.randn(n, b, hid)
    ei = torch.tensor([[j for j, _, _ in edges], [i for _, i, _ in edges]])
    ew = torch.tensor([e[2] for e in edges])
    got = cell(x, h, DiffusionSupports(ei, ew, n))

    # one weight over the diffusion terms of the concatenation [x, h]: per term, x's block then h's
    t = 2 * K + 1
    wx = cell.x_proj.weight.double().view(3 * hid, t, c)
    wh = torch.cat([cell.h_gates.weight, cell.h_cand.weight]).double().view(3 * hid, t, hid)
    w_full = torch.cat([wx, wh], dim=-1).reshape(3 * hid, t * (c + hid))
    bias = cell.x_proj.bias.double()
    xd, hd = x.transpose(0, 1).double(), h.transpose(0, 1).double()  # (B, N, .)

    def dc(z, rows):
        return dense_terms(z, edges, n, K, recursion) @ w_full[rows].T + bias[rows]

    gates = torch.sigmoid(dc(torch.cat([xd, hd], -1), slice(0, 2 * hid)))
    r, u = gates[..., :hid], gates[..., hid:]
    cand = torch.tanh(dc(torch.cat([xd, r * hd], -1), slice(2 * hid, 3 * hid)))
    ref = u * hd + (1 - u) * cand
    torch.testing.assert_close(got.transpose(0, 1).double(), ref, atol=1e-5, rtol=0)


def test_gate_biases_start_at_one():
    cell = DCGRUCell(3, 4)
    assert torch.equal(cell.x_proj.bias, torch.tensor([1.0] * 8 + [0.0] * 4))


def teacher_batch(seed=0):
    batch, sizes = make_batch("forecast", seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    batch.y_src = torch.randn(4, sizes.horizon, 5, 1, generator=g)
    batch.y_src_mask = torch.rand(4, sizes.horizon, 5, 1, generator=g) > 0.3
    return batch, sizes


def tiny_forecaster(sizes, **kw):
    torch.manual_seed(0)
    return DCRNN(sizes, DCRNNParams(**{**TINY, "num_layers": 2, "cl_decay_steps": 10**9, "anchor": "none", **kw}))


@pytest.mark.parametrize("anchor", ["auto", "none"])
def test_scheduled_sampling_feeds_observed_truth_to_visible_nodes_only(anchor):
    batch, sizes = teacher_batch()
    model = tiny_forecaster(sizes, anchor=anchor).train()  # n = 0, c = 1e9: p = c / (c + 1), the truth at every step
    if anchor == "auto":  # a trained-looking readout, so predictions are not just the anchor
        with torch.no_grad():
            model.readout.weight.normal_()
    inputs = []
    model.decoder[0].register_forward_hook(lambda mod, args, out: inputs.append(args[0].detach()))
    pred = model(batch)
    assert len(inputs) == sizes.horizon
    base = anchor_prediction(batch, sizes, anchor)
    go = torch.cat([base.src[:, 0], base.tgt[:, 0]], dim=1).transpose(0, 1)  # (N, B, C_out)
    torch.testing.assert_close(inputs[0][..., :1], go)  # GO symbol: the anchor's first step (zeros for "none")
    if anchor == "none":
        assert torch.equal(inputs[0][..., :1], torch.zeros(6, 4, 1))
    for t in range(1, sizes.horizon):
        fed = inputs[t][..., :1]  # (N, B, C_out)
        own_src = pred.src[:, t - 1].transpose(0, 1)
        truth = batch.y_src[:, t - 1].transpose(0, 1)
        seen = batch.y_src_mask[:, t - 1].transpose(0, 1)
        torch.testing.assert_close(fed[:5], torch.where(seen, truth, own_src))
        assert not seen.all() and seen.any()
        torch.testing.assert_close(fed[5:], pred.tgt[:, t - 1].transpose(0, 1))  # a target's own prediction


def test_truth_matters_only_in_training_with_curriculum_early_on():
    batch, sizes = teacher_batch()
    other = copy.copy(batch)
    other.y_src = batch.y_src + 1.0
    hidden = copy.copy(batch)  # unobserved truth is never read
    hidden.y_src = torch.where(batch.y_src_mask, batch.y_src, torch.full_like(batch.y_src, 1e6))
    for curriculum, train, seen_before, depends in (
        (True, True, 0, True),
        (True, False, 0, False),
        (False, True, 0, False),
        (True, True, 10**12, False),  # p = c / (c + exp(n / c)) ~ 0 late in training
    ):
        model = tiny_forecaster(sizes, use_curriculum=curriculum).train(train)
        outs = []
        for b in (batch, other, hidden):
            model.num_batches_seen.fill_(seen_before)
            torch.manual_seed(1)  # the same coins
            outs.append(model(b))
        ref, moved, masked = outs
        torch.testing.assert_close(masked.src, ref.src)
        torch.testing.assert_close(masked.tgt, ref.tgt)
        torch.testing.assert_close(moved.src[:, 0], ref.src[:, 0])  # step 0 starts from the GO symbol
        for a, b in ((moved.src, ref.src), (moved.tgt, ref.tgt)):
            assert (not torch.allclose(a, b)) == depends


def test_num_batches_seen_counts_training_forwards_and_is_saved():
    batch, sizes = teacher_batch()
    model = tiny_forecaster(sizes)
    model.train()
    model(batch)
    model(batch)
    model.eval()
    model(batch)
    assert int(model.num_batches_seen) == 2
    state = model.state_dict()
    assert int(state["num_batches_seen"]) == 2
    fresh = tiny_forecaster(sizes)
    assert int(fresh.num_batches_seen) == 0
    fresh.load_state_dict(state)
    assert int(fresh.num_batches_seen) == 2
    fresh.reset_parameters()
    assert int(fresh.num_batches_seen) == 0
    batch, sizes = make_batch("krige")
    aligned = DCRNN(sizes, DCRNNParams(**TINY))  # the counter exists, and counts, for every task
    aligned(batch)
    assert int(aligned.state_dict()["num_batches_seen"]) == 1


def test_sampling_probability():
    c = 2000
    assert sampling_probability(0, c) == pytest.approx(c / (c + 1))
    assert sampling_probability(round(c * math.log(c)), c) == pytest.approx(0.5, abs=1e-3)
    assert sampling_probability(10**9, c) < 1e-100  # no overflow


def test_aligned_output_is_bidirectional():
    batch, sizes = make_batch("krige")
    torch.manual_seed(0)
    model = build_model("dcrnn", sizes, {**TINY, "max_diffusion_step": 2, "anchor": "none"}).eval()
    changed = copy.copy(batch)
    changed.x = batch.x.clone()
    changed.x[:, 5] += batch.x_mask[:, 5] * 1.0  # observed values at step 5 only
    hid = TINY["hidden_channels"]
    for half, moved_steps in ((slice(hid, None), range(5, 12)), (slice(0, hid), range(0, 6))):
        # keep one direction's readout: forward states see steps <= t, backward states steps >= t
        one_way = copy.deepcopy(model)
        with torch.no_grad():
            one_way.readout.weight[:, half] = 0.0
        a, b = one_way(batch), one_way(changed)
        for t in range(12):
            for x, y in ((a.src, b.src), (a.tgt, b.tgt)):
                assert torch.allclose(x[:, t], y[:, t]) == (t not in moved_steps)


def test_bad_options():
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)
    with pytest.raises(ValueError, match="recursion"):
        build_model("dcrnn", sizes, {"recursion": "cheb"})
    with pytest.raises(ValueError, match="num_layers"):
        build_model("dcrnn", sizes, {"num_layers": 0})
    for bad in (0, "fast", -5):
        with pytest.raises(ValueError, match="cl_decay_steps"):
            build_model("dcrnn", sizes, {"cl_decay_steps": bad})
    with pytest.raises(ValueError, match="anchor"):
        build_model("dcrnn", sizes, {"anchor": "mean"})


# --- curriculum scaled to the run's budget ---------------------------------------------------


def test_lambert_w():
    for a in (0.0, 1e-6, 0.5, 1.0, math.e, 100.0, 1e6):
        w = lambert_w(a)
        assert w * math.exp(w) == pytest.approx(a, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("total", [10, 128, 1000, 37_500, 10**6])
def test_auto_curriculum_reaches_half_at_40_percent_of_the_budget(total):
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)
    model = DCRNN(sizes, DCRNNParams(**TINY))  # cl_decay_steps defaults to "auto"
    assert float(model.cl_decay) == 2000.0  # the paper's value until the budget is known
    model.set_training_budget(total)
    c = float(model.cl_decay)
    assert sampling_probability(0.4 * total, c) == pytest.approx(0.5, abs=1e-9)
    assert sampling_probability(0, c) > sampling_probability(0.2 * total, c) > 0.5 > sampling_probability(total, c)
    assert c == pytest.approx(auto_decay_steps(total))
    state = model.state_dict()  # the scale travels with the checkpoint, beside the step counter
    fresh = DCRNN(sizes, DCRNNParams(**TINY))
    fresh.load_state_dict(state)
    assert float(fresh.cl_decay) == c
    fresh.reset_parameters()
    assert float(fresh.cl_decay) == c


def test_paper_scale_is_reproduced_and_an_explicit_scale_wins():
    # official: c = 2000 with 100 epochs x 375 batches on METR-LA: p = 0.5 at c ln c = 15.2k batches, ~40 %
    assert auto_decay_steps(37_500) == pytest.approx(2000, rel=0.02)
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)
    model = DCRNN(sizes, DCRNNParams(**{**TINY, "cl_decay_steps": 40}))
    model.set_training_budget(10**6)
    assert float(model.cl_decay) == 40.0
    assert float(build_model("dcrnn", sizes, {"cl_decay_steps": None}).cl_decay) == 2000.0


def test_decoder_uses_the_budgeted_scale():
    batch, sizes = teacher_batch()
    model = DCRNN(sizes, DCRNNParams(**{**TINY, "anchor": "none"})).train()
    model.set_training_budget(100)  # c ~ 12: after 10**4 batches p ~ 0, truth no longer matters
    model.num_batches_seen.fill_(10**4)
    other = copy.copy(batch)
    other.y_src = batch.y_src + 1.0
    torch.manual_seed(1)
    a = model(batch)
    model.num_batches_seen.fill_(10**4)
    torch.manual_seed(1)
    torch.testing.assert_close(model(other).src, a.src)


# --- anchor and masked aggregation -----------------------------------------------------------


@pytest.mark.parametrize("task", ["forecast", "krige", "impute"])
def test_untrained_model_is_its_anchor(task):
    batch, sizes = make_batch(task)
    torch.manual_seed(0)
    model = build_model("dcrnn", sizes, {**TINY, "num_layers": 2})
    model.reset_parameters()  # the zero init survives a reset
    ref = anchor_prediction(batch, sizes, "auto")
    for train in (False, True):
        pred = model.train(train)(batch)
        torch.testing.assert_close(pred.src, ref.src)
        torch.testing.assert_close(pred.tgt, ref.tgt)


@pytest.mark.parametrize("task", ["forecast", "krige"])
def test_paper_variant_passes_the_contract(task):
    check_contract("dcrnn", {**TINY, "anchor": "none", "masked_mean": False}, task)


def test_first_layer_averages_observed_neighbours_only():
    """The encoder's first diffusion: P_f of a value channel at node i is the weighted mean of its
    observed in-neighbours (hidden targets and missing cells do not count), per sample and step."""
    batch, sizes = make_batch("krige")
    batch.x_mask[:, :, 1] = False  # station 1 unobserved throughout
    batch.x_mask[0, :, 3] = False  # station 3 unobserved in sample 0 only (a per-sample hidden set)
    batch.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e6))
    x, pos, _ = union_inputs(batch)
    ei, ew = union_graph(pos, TINY["k"])
    adj = torch.zeros(6, 6, dtype=torch.float64)
    adj[ei[1], ei[0]] = ew.double()  # adj[i, j]: weight of j -> i
    m = torch.cat([batch.x_mask, torch.zeros(4, 12, 1, 2, dtype=torch.bool)], dim=2).double()  # (B, W, N, C)
    num = torch.einsum("ij,bwjc->bwic", adj, x[..., :2].double() * m)
    den = torch.einsum("ij,bwjc->bwic", adj, m)
    ref = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
    assert (den == 0).any() and (den > 0).any()
    for masked in (True, False):
        torch.manual_seed(0)
        model = build_model("dcrnn", sizes, {**TINY, "masked_mean": masked}).eval()
        feats = []
        model.encoder[0].x_proj.register_forward_hook(lambda mod, args, out, f=feats: f.append(args[0].detach()))
        pred = model(batch)
        assert torch.isfinite(pred.src).all() and torch.isfinite(pred.tgt).all()
        terms = feats[0].view(6, 12, 4, 3, 2 * 2 + 6).permute(2, 1, 0, 3, 4)  # (B, W, N, [X, P_f X, P_b X], C)
        got = terms[..., 1, :2].double()
        if masked:
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        else:  # the plain random walk divides by the total weight: hidden neighbours count as zeros
            assert not torch.allclose(got, ref, atol=1e-3)
