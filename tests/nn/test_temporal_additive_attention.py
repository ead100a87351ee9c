"""SPIN's attention layer: the additive attention against a loop over pairs, and the sparse
edges (a never-observed node does not speak while the spatial mask is on)."""

import torch

from stgraph.nn.temporal_additive_attention import AdditiveTemporalAttention, SparseSpatiotemporalAttention


def test_additive_attention_matches_a_loop_over_pairs():
    torch.manual_seed(0)
    att = AdditiveTemporalAttention(4, msg_layers=1)
    b, t, s, e = 2, 3, 5, 2
    tgt, src = torch.randn(b, t, e, 4), torch.randn(b, s, e, 4)
    keys = torch.rand(b, s, e) > 0.3
    keys[1, :, 1] = False  # one pair with no key at all
    pair = torch.rand(t, s) > 0.2
    out = att(tgt, src, keys, pair)
    want = torch.zeros(b, t, e, 4)
    for bi in range(b):
        for ti in range(t):
            for ei in range(e):
                ok = [si for si in range(s) if keys[bi, si, ei] and pair[ti, si]]
                if not ok:
                    continue
                msgs = torch.stack([att.msg(att.lin_tgt(tgt[bi, ti, ei]) + att.lin_src(src[bi, si, ei])) for si in ok])
                alpha = torch.softmax(att.gate(msgs).squeeze(-1), 0)
                want[bi, ti, ei] = (alpha[:, None] * msgs).sum(0)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert (out[1, :, 1] == 0).all()


def test_a_never_observed_node_is_silent_while_the_spatial_mask_is_on():
    torch.manual_seed(1)
    layer = SparseSpatiotemporalAttention(8).eval()
    h = torch.randn(2, 6, 4, 8)
    observed = torch.rand(2, 6, 4) > 0.3
    observed[:, :, 3] = False  # node 3 is never observed (a target station)
    edge_index = torch.tensor([[3, 3, 0, 1, 2], [0, 1, 2, 0, 1]])  # node 3 sends to 0 and 1
    moved = h.clone()
    moved[:, :, 3] += 5.0
    a = layer(h, observed, edge_index, mask_spatial=True)
    b = layer(moved, observed, edge_index, mask_spatial=True)
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3])  # its neighbours hear nothing from it
    c = layer(moved, observed, edge_index, mask_spatial=False)
    assert not torch.allclose(a[:, :, :2], c[:, :, :2])  # once it may speak, they do
