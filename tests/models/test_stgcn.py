import copy

import pytest
import torch

from stgraph.models import DataSizes
from stgraph.models.anchors import anchor_prediction
from stgraph.models.inductive import union_graph
from stgraph.models.stgcn import STGCN, STConvBlock, STGCNParams, temporal_reach
from stgraph.nn.cheb_conv import scaled_laplacian
from stgraph.ops.idw import masked_idw
from tests.models.contract import POS, check_contract, make_batch

TINY = {"hidden_channels": 16, "bottleneck_channels": 8, "kt": 3, "ks": 3, "k": 3, "dropout": 0.0}


# --- dense reference of one ST-Conv block ----------------------------------------------------


def ref_align(x, proj, c_out):
    if proj is not None:
        return x @ proj.weight.T.double()
    return torch.cat([x, x.new_zeros(*x.shape[:-1], c_out - x.size(-1))], -1)


def ref_temporal(layer, x):
    """GLU (P + residual) * sigmoid(Q) or ReLU(conv + residual), the dilated convolution written
    out tap by tap."""
    kt, c_out, d = layer.kt, layer.c_out, layer.dilation
    w, b = layer.conv.weight.detach().double()[..., 0], layer.conv.bias.detach().double()  # (O or 2O, C, kt)
    res = ref_align(x, layer.align.proj, c_out)
    if layer.same:
        left = d * (kt - 1) // 2
        pad = lambda n: x.new_zeros(x.size(0), n, *x.shape[2:])  # noqa: E731
        x = torch.cat([pad(left), x, pad(d * (kt - 1) - left)], 1)
    else:
        res = res[:, kt - 1 :]
    steps = x.size(1) - d * (kt - 1)
    pq = b + sum(torch.einsum("btnc,oc->btno", x[:, s * d : s * d + steps], w[:, :, s]) for s in range(kt))
    if layer.act == "relu":
        return torch.relu(pq + res)
    return (pq[..., :c_out] + res) * torch.sigmoid(pq[..., c_out:])


def dense_cheb_terms(edge_index, edge_weight, n, k):
    a = torch.zeros(n, n, dtype=torch.float64)
    for (j, i), v in zip(edge_index.T.tolist(), edge_weight.double().tolist(), strict=True):
        a[i, j] = a[j, i] = max(a[i, j], v)
    dinv = a.sum(1).pow(-0.5)
    lt = -dinv[:, None] * a * dinv[None, :]  # (2 / 2) (I - D^-1/2 W D^-1/2) - I
    terms = [torch.eye(n, dtype=torch.float64), lt]
    while len(terms) < k:
        terms.append(2 * lt @ terms[-1] - terms[-2])
    return terms[:k]


@pytest.mark.parametrize(
    ("same", "kt", "dilations"), [(False, 3, (1, 1)), (True, 3, (1, 1)), (True, 3, (2, 3)), (True, 2, (1, 3))]
)
def test_st_conv_block_matches_dense_reference(same, kt, dilations):
    """GLU first temporal conv, ChebConv + residual + ReLU, ReLU second temporal conv (the official
    activations), dilated 'same' padding, LayerNorm."""
    torch.manual_seed(0)
    # c_in > hidden (projected residual), hidden > bottleneck (projected), bottleneck < hidden (zero-padded)
    block = STConvBlock(5, 4, 2, kt=kt, ks=3, dropout=0.5, same=same, dilations=dilations).eval()
    assert (block.temporal1.act, block.temporal2.act) == ("glu", "relu")
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)  # biases and LayerNorm affine too, so every term shows
    edge_index, edge_weight = union_graph(POS, 3)
    x = torch.randn(2, 7, 6, 5)
    out = block(x, scaled_laplacian(edge_index, edge_weight, 6))
    assert out.shape == (2, 7 if same else 7 - 2 * (kt - 1), 6, 4)

    h = ref_temporal(block.temporal1, x.double())
    terms = dense_cheb_terms(edge_index, edge_weight, 6, 3)
    theta = block.graph.weight.detach().double()
    g = sum(torch.einsum("ij,btjc,cd->btid", t, h, theta[k]) for k, t in enumerate(terms))
    h = torch.relu(g + block.graph.bias.detach().double() + ref_align(h, block.graph_align.proj, 2))
    h = ref_temporal(block.temporal2, h)
    mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
    ln = block.norm
    ref = (h - mu) / (var + ln.eps).sqrt() * ln.weight.detach().double() + ln.bias.detach().double()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


# --- construction and inductive use ---------------------------------------------------------


def test_too_short_window_is_an_error_that_says_how_long():
    sizes = DataSizes(2, 1, (0,), window=8, horizon=3)  # 2 blocks × 2 × (3 - 1) = 8 steps consumed
    with pytest.raises(ValueError, match="window 8 is too short.*at least 9"):
        STGCN(sizes, STGCNParams(**TINY))
    STGCN(DataSizes(2, 1, (0,), window=9, horizon=3), STGCNParams(**TINY))
    STGCN(DataSizes(2, 1, (0,), window=8, horizon=8, task="krige"), STGCNParams(**TINY))  # 'same' padding
    with pytest.raises(ValueError, match="kt must be >= 1"):
        STGCN(DataSizes(2, 1, (0,), window=12, horizon=3), STGCNParams(kt=0))


@pytest.mark.parametrize("task", ["forecast", "krige"])
def test_no_node_count_in_the_parameters(task):
    torch.manual_seed(0)
    batch, sizes = make_batch(task)  # built from 5 + 1 stations
    model = STGCN(sizes, STGCNParams(**TINY)).eval()
    first = model(batch)
    g = torch.Generator().manual_seed(2)
    big = copy.copy(batch)  # 7 visible + 2 targets
    big.x = torch.randn(4, 12, 7, 2, generator=g)
    big.x_mask = torch.ones(4, 12, 7, 2, dtype=torch.bool)
    big.pos_src = torch.cat([POS[:5], POS[:2] + 0.03])
    big.pos_tgt = torch.cat([POS[5:], POS[5:] - 0.04])
    out = model(big)
    h = sizes.horizon
    assert out.src.shape == (4, h, 7, 1) and out.tgt.shape == (4, h, 2, 1)
    assert torch.isfinite(out.src).all() and torch.isfinite(out.tgt).all()
    torch.testing.assert_close(model(batch).src, first.src)  # the cached graph follows the node set


@pytest.mark.parametrize("anchor", ["none", "auto"])
def test_targets_hear_the_visible_stations_and_the_time(anchor):
    torch.manual_seed(0)
    batch, sizes = make_batch("forecast")
    model = STGCN(sizes, STGCNParams(**TINY, anchor=anchor)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=0.1)  # as after some training
    ref = model(batch).tgt
    moved = copy.copy(batch)
    moved.x = batch.x + batch.x_mask  # observed values change
    assert (model(moved).tgt - ref).abs().max() > 1e-3
    shifted = copy.copy(batch)
    shifted.x_time = batch.x_time + 1.0
    assert (model(shifted).tgt - ref).abs().max() > 1e-3


# --- temporal reach in krige / impute -------------------------------------------------------


def test_temporal_reach_formula():
    assert temporal_reach(3, 2, 1) == (4, 4)  # the paper's undilated stack: ±4 steps
    assert temporal_reach(3, 2, 2) == (15, 15)  # 1 + 2 + 4 + 8
    assert temporal_reach(3, 3, 2) == (63, 63)
    assert temporal_reach(2, 1, 3) == (1 // 2 + 3 // 2, 1 + 3 - 1)  # even kt: the extra step after
    sizes = DataSizes(2, 1, (0,), window=36, horizon=36, task="impute")
    assert STGCN(sizes, STGCNParams(**TINY, num_blocks=3)).receptive_field == (63, 63)
    forecast = DataSizes(2, 1, (0,), window=24, horizon=6)
    assert STGCN(forecast, STGCNParams(**TINY)).receptive_field == (23, 0)  # the output layer spans it


def _input_gradient(model, batch, out_step):
    """|d outputs at ``out_step`` / d x| summed over everything but the input step: (W,)."""
    x = batch.x.clone().requires_grad_(True)
    moved = copy.copy(batch)
    moved.x = x
    out = model(moved)
    (out.src[:, out_step].sum() + out.tgt[:, out_step].sum()).backward()
    return x.grad.abs().sum(dim=(0, 2, 3))


@pytest.mark.parametrize(("num_blocks", "dilation", "kt", "window"), [(2, 2, 3, 40), (1, 3, 3, 12), (2, 2, 2, 40)])
def test_receptive_field_is_what_the_formula_says(num_blocks, dilation, kt, window):
    """Autograd: an output at step t depends on inputs t - R_left .. t + R_right and on nothing further."""
    torch.manual_seed(0)
    batch, sizes = make_batch("impute", w=window)
    batch.x_mask = torch.ones_like(batch.x_mask)  # every cell reaches the network
    batch.x = torch.randn_like(batch.x)
    hp = {**TINY, "hidden_channels": 32, "num_blocks": num_blocks, "dilation": dilation, "kt": kt}
    model = STGCN(sizes, STGCNParams(**hp, anchor="none", anchor_input=False)).eval()
    left, right = temporal_reach(kt, num_blocks, dilation)
    t = left + 1
    grad = _input_gradient(model, batch, t)
    assert (grad[t - left : t + right + 1] > 0).all()
    assert (grad[: t - left] == 0).all() and (grad[t + right + 1 :] == 0).all()


@pytest.mark.parametrize(("task", "window", "num_blocks"), [("impute", 36, 3), ("krige", 24, 3), ("impute", 24, 2)])
def test_recommended_settings_reach_across_the_window(task, window, num_blocks):
    """AQI-36 impute (W 36) and UCI-12 krige (W 24) with 3 blocks: step 0 hears the last step;
    the defaults (2 blocks, dilation 2, R = 15) let step 0 hear step 15 (the ±4 h of the paper's
    undilated stack is gone)."""
    torch.manual_seed(0)
    batch, sizes = make_batch(task, w=window)
    batch.x_mask = torch.ones_like(batch.x_mask)
    params = STGCNParams(**{**TINY, "hidden_channels": 32}, num_blocks=num_blocks, anchor="none", anchor_input=False)
    grad = _input_gradient(STGCN(sizes, params).eval(), batch, 0)
    far = window - 1 if num_blocks == 3 else 15
    assert grad[far] > 0
    if num_blocks == 2:
        assert grad[20] == 0


# --- anchoring ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["forecast", "krige", "impute"])
@pytest.mark.parametrize("anchor_input", [True, False])
def test_untrained_model_is_its_anchor_and_reset_keeps_it(task, anchor_input):
    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    model = STGCN(sizes, STGCNParams(**TINY, anchor_input=anchor_input))
    anchor = anchor_prediction(batch, sizes, "auto")
    out = model(batch)
    torch.testing.assert_close(out.src, anchor.src)
    torch.testing.assert_close(out.tgt, anchor.tgt)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    assert not torch.allclose(model(batch).tgt, anchor.tgt)
    model.reset_parameters()
    torch.testing.assert_close(model(batch).tgt, anchor.tgt)


def test_anchor_none_is_the_unanchored_model():
    torch.manual_seed(0)
    batch, sizes = make_batch("krige")
    model = STGCN(sizes, STGCNParams(**TINY, anchor="none", anchor_input=False, dilation=1))
    assert model.head.weight.abs().sum() > 0  # default initialisation, not zeroed
    assert model.blocks[0].temporal1.conv.in_channels == 2 * 2 + 6  # [values, mask, time]
    out = model(batch)
    assert not torch.allclose(out.tgt, anchor_prediction(batch, sizes, "auto").tgt, atol=1e-3)
    with pytest.raises(ValueError, match="anchor must be one of"):
        STGCN(sizes, STGCNParams(**TINY, anchor="mean"))


@pytest.mark.parametrize("task", ["forecast", "impute"])
def test_anchor_input_channel_gives_hidden_nodes_the_anchor(task):
    """The hidden target node's extra input is the masked IDW of the visible stations at each step
    (in forecast, the window's imputation anchor), not zeros."""
    batch, sizes = make_batch(task)
    model = STGCN(sizes, STGCNParams(**TINY))
    assert model.blocks[0].temporal1.conv.in_channels == 2 * 2 + 1 + 6
    _, channel = model._anchors(batch)
    assert channel.shape == (4, 12, 6, 1)
    x, m = batch.x[..., :1], batch.x_mask[..., :1]
    idw, _ = masked_idw(x, m, batch.pos_src, batch.pos_tgt)
    torch.testing.assert_close(channel[:, :, 5:], idw)
    observed = m[..., 0]
    torch.testing.assert_close(channel[:, :, :5][observed], x[observed])


@pytest.mark.parametrize("task", ["forecast", "impute"])
def test_contract_of_the_faithful_model(task):
    hp = {**TINY, "anchor": "none", "anchor_input": False, "dilation": 1}
    check_contract("stgcn", hp, task)
