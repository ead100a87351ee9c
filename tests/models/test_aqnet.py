import torch

from stgraph.models import AQNet, AQNetParams, DataSizes
from tests.models.test_contract import make_batch

SIZES = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)


def small(**kw):
    return AQNetParams(**{"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0, **kw})


def test_cyclic_encoding_is_used_only_when_on():
    batch, _ = make_batch(False)
    shifted = make_batch(False)[0]
    shifted.x_time = batch.x_time + 1.0
    for ce, should_change in ((True, True), (False, False)):
        torch.manual_seed(0)
        m = AQNet(SIZES, small(cyclic_encoding=ce)).eval()
        assert m.encoder.inp.in_features == 2 * 2 + (6 if ce else 0)
        changed = not torch.allclose(m(batch).src, m(shifted).src)
        assert changed == should_change


def test_neural_knn_gradients_reach_query_and_key_networks():
    torch.manual_seed(0)
    m = AQNet(SIZES, small())
    batch, _ = make_batch(False)
    m(batch).tgt.pow(2).sum().backward()
    for net in (m.interp.query_net, m.interp.key_net, m.interp.geo_score):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert m.interp.log_temperature.grad.abs() > 0
    assert m.encoder.inp.weight.grad.abs().sum() > 0  # and through the keys into the encoder


def test_edges_are_rebuilt_in_the_learned_space():
    torch.manual_seed(0)
    m = AQNet(SIZES, small(k=2)).eval()
    batch, _ = make_batch(False)
    m(batch)
    edges_a, alpha = m.interp.last_edges
    assert edges_a.shape == (2, 4 * 1 * 2) and torch.allclose(alpha.view(4, 2).sum(1), torch.ones(4))
    with torch.no_grad():
        for p in m.interp.key_net.parameters():
            p.normal_()
    m(batch)
    edges_b, _ = m.interp.last_edges
    assert not torch.equal(edges_a, edges_b)  # new keys, new neighbours


def test_several_k_at_inference_are_averaged_and_kept():
    torch.manual_seed(0)
    m = AQNet(SIZES, small(k_eval=[1, 3, 5])).eval()
    batch, _ = make_batch(False)
    out = m(batch)
    assert sorted(m.last_k_estimates) == [1, 3, 5]
    mean = torch.stack(list(m.last_k_estimates.values())).mean(0)  # (B, N_tgt, H*C)
    torch.testing.assert_close(out.tgt[:, :, 0, 0], mean[:, 0, :])


def test_attention_weights_are_retrievable():
    m = AQNet(SIZES, small()).eval()
    batch, _ = make_batch(False)
    m(batch)
    att = m.attention_weights()
    assert att.shape == (4, 5, 2, 12, 12)  # (B, N_src, heads, query step, key step)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 5, 2, 12))
