import copy

import pytest
import torch

from stgraph.models import DataSizes
from stgraph.models.inductive import union_graph
from stgraph.models.stgcn import STGCN, STConvBlock, STGCNParams
from stgraph.nn.cheb_conv import scaled_laplacian
from tests.models.contract import POS, make_batch

TINY = {"hidden_channels": 16, "bottleneck_channels": 8, "kt": 3, "ks": 3, "k": 3, "dropout": 0.0}


# --- dense reference of one ST-Conv block ----------------------------------------------------


def ref_align(x, proj, c_out):
    if proj is not None:
        return x @ proj.weight.T.double()
    return torch.cat([x, x.new_zeros(*x.shape[:-1], c_out - x.size(-1))], -1)


def ref_temporal(layer, x):
    """(P + residual) * sigmoid(Q), the convolution written out tap by tap."""
    kt, c_out = layer.kt, layer.c_out
    w, b = layer.conv.weight.detach().double()[..., 0], layer.conv.bias.detach().double()  # (2O, C, kt)
    res = ref_align(x, layer.align.proj, c_out)
    if layer.same:
        left = (kt - 1) // 2
        pad = lambda n: x.new_zeros(x.size(0), n, *x.shape[2:])  # noqa: E731
        x = torch.cat([pad(left), x, pad(kt - 1 - left)], 1)
    else:
        res = res[:, kt - 1 :]
    steps = x.size(1) - kt + 1
    pq = b + sum(torch.einsum("btnc,oc->btno", x[:, s : s + steps], w[:, :, s]) for s in range(kt))
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


@pytest.mark.parametrize("same", [False, True])
def test_st_conv_block_matches_dense_reference(same):
    torch.manual_seed(0)
    # c_in > hidden (projected residual), hidden > bottleneck (projected), bottleneck < hidden (zero-padded)
    block = STConvBlock(5, 4, 2, kt=3, ks=3, dropout=0.5, same=same).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)  # biases and LayerNorm affine too, so every term shows
    edge_index, edge_weight = union_graph(POS, 3)
    x = torch.randn(2, 7, 6, 5)
    out = block(x, scaled_laplacian(edge_index, edge_weight, 6))
    assert out.shape == (2, 7 if same else 3, 6, 4)

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


def test_targets_hear_the_visible_stations_and_the_time():
    torch.manual_seed(0)
    batch, sizes = make_batch("forecast")
    model = STGCN(sizes, STGCNParams(**TINY)).eval()
    ref = model(batch).tgt
    moved = copy.copy(batch)
    moved.x = batch.x + batch.x_mask  # observed values change
    assert (model(moved).tgt - ref).abs().max() > 1e-3
    shifted = copy.copy(batch)
    shifted.x_time = batch.x_time + 1.0
    assert (model(shifted).tgt - ref).abs().max() > 1e-3
