"""SPIN-H's layer: the sigmoid-gated attention with root weight and norm against a loop over pairs,
and the hierarchical layer's sparse spatial keys (a never-observed node does not speak while the
spatial mask is on) and its per-node locality."""

import torch

from stgraph.nn.hierarchical_attention import HierarchicalSpatiotemporalAttention
from stgraph.nn.temporal_additive_attention import AdditiveTemporalAttention


def test_sigmoid_gated_attention_with_root_weight_and_norm_matches_a_loop_over_pairs():
    torch.manual_seed(0)
    att = AdditiveTemporalAttention(4, msg_layers=1, src_channels=3, tgt_channels=5, reweigh=None,
                                    root_weight=True, norm=True)  # fmt: skip
    att.reset_parameters()
    b, t, s, e = 2, 3, 4, 2
    tgt, src = torch.randn(b, t, e, 5), torch.randn(b, s, e, 3)
    keys = torch.rand(b, s, e) > 0.3
    out = att(tgt, src, keys)
    want = torch.zeros(b, t, e, 4)
    for bi in range(b):
        for ti in range(t):
            for ei in range(e):
                acc = att.skip(tgt[bi, ti, ei])
                for si in range(s):
                    if keys[bi, si, ei]:
                        msg = att.msg(att.lin_tgt(tgt[bi, ti, ei]) + att.lin_src(src[bi, si, ei]))
                        acc = acc + torch.sigmoid(att.gate(msg)) * msg  # independent gates, no softmax
                want[bi, ti, ei] = att.norm(acc)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def _layer_inputs(seed=1):
    torch.manual_seed(seed)
    h, z = torch.randn(2, 6, 4, 8), torch.randn(2, 3, 4, 5)
    observed = torch.rand(2, 6, 4) > 0.3
    observed[:, :, 3] = False  # node 3 is never observed (a target station)
    edge_index = torch.tensor([[3, 3, 0, 1, 2], [0, 1, 2, 0, 1]])  # node 3 sends to 0 and 1
    return h, z, observed, edge_index


def test_a_never_observed_node_is_silent_while_the_spatial_mask_is_on():
    layer = HierarchicalSpatiotemporalAttention(8, 5).eval()
    h, z, observed, edge_index = _layer_inputs()
    moved = h.clone()
    moved[:, :, 3] += 5.0
    a = layer(h, z, observed, edge_index, mask_spatial=True)
    b = layer(moved, z, observed, edge_index, mask_spatial=True)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x[:, :, :3], y[:, :, :3])  # its neighbours hear nothing from it
    c = layer(moved, z, observed, edge_index, mask_spatial=False)
    assert not torch.allclose(a[0][:, :, :2], c[0][:, :, :2])  # once it may speak, they do


def test_a_node_hears_only_its_in_neighbours_and_shapes_hold():
    layer = HierarchicalSpatiotemporalAttention(8, 5, update_z_cross=False).eval()
    h, z, observed, _ = _layer_inputs(2)
    edge_index = torch.tensor([[3, 3, 0, 1], [0, 1, 2, 0]])  # node 2 receives from 0, sends to nobody
    out_h, out_z = layer(h, z, observed, edge_index, mask_spatial=False)
    assert out_h.shape == h.shape and out_z.shape == z.shape
    moved = h.clone()
    moved[:, :, 2] += 3.0  # node 2 sends to nobody
    h2, _ = layer(moved, z, observed, edge_index, mask_spatial=False)
    torch.testing.assert_close(out_h[:, :, [0, 1, 3]], h2[:, :, [0, 1, 3]])
