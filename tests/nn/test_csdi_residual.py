"""CSDI's residual body: shapes, ε̂ = 0 at initialisation, equivariance to the station order, the
gated residual algebra of one layer, and the one-step / one-station windows."""

from __future__ import annotations

import math

import pytest
import torch

from stgraph.nn.csdi_residual import CSDIBody, CSDIResidualLayer


def body(**kw) -> CSDIBody:
    torch.manual_seed(0)
    return CSDIBody(2, 1, **{"channels": 8, "side_channels": 5, "layers": 2, "heads": 2, "num_steps": 10,
                             "step_dim": 8, **kw}).eval()  # fmt: skip


def inputs(b=3, w=6, n=4):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(b, w, n, 2, generator=g),
        torch.randint(0, 10, (b,), generator=g),
        torch.randn(b, w, n, 5, generator=g),
    )


def test_shapes_and_zero_output_at_initialisation():
    net = body()
    x, t, side = inputs()
    out = net(x, t, side)
    assert out.shape == (3, 6, 4, 1) and torch.all(out == 0)  # CSDI zero-initialises its last projection


def test_output_is_equivariant_to_the_station_order_and_depends_on_every_input():
    net = body()
    torch.nn.init.normal_(net.out2.weight)
    x, t, side = inputs()
    perm = torch.tensor([2, 0, 3, 1])
    out = net(x, t, side)
    torch.testing.assert_close(net(x[:, :, perm], t, side[:, :, perm]), out[:, :, perm], rtol=1e-5, atol=1e-5)
    for changed in ((x + 1, t, side), (x, (t + 1) % 10, side), (x, t, side + 1)):
        assert not torch.allclose(net(*changed), out)
    # the time and station transformers mix cells: one cell's input reaches a cell at another time and station
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    assert not torch.allclose(net(x2, t, side)[:, -1, -1], out[:, -1, -1])


def test_one_layer_is_the_gated_residual_of_csdi():
    torch.manual_seed(0)
    layer = CSDIResidualLayer(8, 5, 6, heads=2).eval()
    h, step, side = torch.randn(2, 1, 1, 8), torch.randn(2, 6), torch.randn(2, 1, 1, 5)
    new, skip = layer(h, step, side)  # one step, one station: both transformers are skipped
    y = layer.mid_proj(h + layer.step_proj(step)[:, None, None]) + layer.cond_proj(side)
    gate, filt = y.chunk(2, -1)
    residual, want_skip = layer.out_proj(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, -1)
    torch.testing.assert_close(new, (h + residual) / math.sqrt(2))
    torch.testing.assert_close(skip, want_skip)


def test_bad_shapes_and_widths_are_named():
    net = body()
    x, t, side = inputs()
    with pytest.raises(ValueError, match="same cells"):
        net(x, t, side[:, :, :2])
    with pytest.raises(ValueError, match="divisible"):
        CSDIResidualLayer(10, 5, 6, heads=4)
    with pytest.raises(ValueError, match="layers"):
        CSDIBody(2, 1, layers=0)


def test_pristi_attention_takes_its_weights_from_the_condition_and_passes_messages_on_the_graph():
    """PriSTI's layer: the queries and keys come from the conditional feature, the state only enters
    as values (a value change moves the output by a fixed mixing of it); the station step adds a
    graph convolution."""
    torch.manual_seed(0)
    layer = CSDIResidualLayer(8, 5, 6, heads=2, conditional=True).eval()
    att = layer.time_layer
    v, cond = torch.randn(3, 6, 8), torch.randn(3, 6, 5)
    mix = att._attention(v, cond) - att._attention(torch.zeros_like(v), cond)
    mix2 = att._attention(2 * v, cond) - att._attention(torch.zeros_like(v), cond)
    torch.testing.assert_close(mix2, 2 * mix)  # linear in the values: the weights do not depend on them
    other = att._attention(v, cond + 1.0) - att._attention(torch.zeros_like(v), cond + 1.0)
    assert not torch.allclose(other, mix)  # the condition moves the weights
    net = body(conditional=True)
    torch.nn.init.normal_(net.out2.weight)
    x, t, side = inputs()
    lap = -0.5 * (torch.ones(4, 4) - torch.eye(4))  # a scaled Laplacian of the complete graph
    plain, with_graph = net(x, t, side), net(x, t, side, lap)
    assert plain.shape == (3, 6, 4, 1) and not torch.allclose(plain, with_graph)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        net(x[:, :, perm], t, side[:, :, perm], lap[perm][:, perm]), with_graph[:, :, perm], rtol=1e-5, atol=1e-5
    )
