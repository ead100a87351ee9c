import torch

from stgraph.models import AQNet, AQNetParams, DataSizes
from stgraph.nn import local_km
from tests.models.contract import make_batch

SIZES = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)


def small(**kw):
    return AQNetParams(**{"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0, **kw})


def test_cyclic_encoding_is_used_only_when_on():
    batch, _ = make_batch("forecast")
    shifted = make_batch("forecast")[0]
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
    batch, _ = make_batch("forecast")
    m(batch).tgt.pow(2).sum().backward()
    # at initialisation the learned space is gated off (the layer is plain IDW), but the gate,
    # the power and the offset score receive gradient, so training opens it
    assert m.interp.gate.grad.abs() > 0 and m.interp.log_power.grad.abs() > 0
    assert m.interp.geo_score[-1].weight.grad.abs().sum() > 0
    m.zero_grad()
    with torch.no_grad():
        m.interp.gate.fill_(0.5)  # as after some training
    m(batch).tgt.pow(2).sum().backward()
    for net in (m.interp.query_net, m.interp.key_net):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert m.interp.log_temperature.grad.abs() > 0
    assert m.encoder.inp.weight.grad.abs().sum() > 0  # and through the keys into the encoder


def test_neural_knn_starts_as_inverse_distance_weighting():
    torch.manual_seed(0)
    m = AQNet(SIZES, small(k=5, idw_power=2.0)).eval()
    batch, _ = make_batch("forecast")
    out = m(batch)
    origin = batch.pos_src.mean(0)
    d = (local_km(batch.pos_src, origin) - local_km(batch.pos_tgt, origin)).norm(dim=-1)  # (N_src,)
    w = d.pow(-2.0) / d.pow(-2.0).sum()
    torch.testing.assert_close(out.tgt[..., 0, :], torch.einsum("s,bhsc->bhc", w, out.src), rtol=1e-4, atol=1e-5)


def test_edges_are_rebuilt_in_the_learned_space():
    torch.manual_seed(0)
    m = AQNet(SIZES, small(k=2)).eval()
    batch, _ = make_batch("forecast")
    m(batch)
    geographic, alpha = m.interp.last_edges
    assert geographic.shape == (2, 4 * 1 * 2) and torch.allclose(alpha.view(4, 2).sum(1), torch.ones(4))
    with torch.no_grad():
        m.interp.gate.fill_(50.0)  # the learned embedding now dominates the kNN space
        for p in m.interp.key_net.parameters():
            p.normal_()
    m(batch)
    learned, _ = m.interp.last_edges
    assert not torch.equal(geographic, learned)  # new keys, new neighbours


def test_several_k_at_inference_are_averaged_and_kept():
    torch.manual_seed(0)
    m = AQNet(SIZES, small(k_eval=[1, 3, 5])).eval()
    batch, _ = make_batch("forecast")
    out = m(batch)
    assert sorted(m.last_k_estimates) == [1, 3, 5]
    mean = torch.stack(list(m.last_k_estimates.values())).mean(0)  # (B, N_tgt, H*C)
    torch.testing.assert_close(out.tgt[:, :, 0, 0], mean[:, 0, :])


def test_attention_weights_are_retrievable():
    m = AQNet(SIZES, small()).eval()
    batch, _ = make_batch("forecast")
    m(batch)
    att = m.attention_weights()
    assert att.shape == (4, 5, 2, 12, 12)  # (B, N_src, heads, query step, key step)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 5, 2, 12))


def test_krige_interpolates_observed_values_where_present():
    torch.manual_seed(0)
    sizes = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=12, task="krige")
    m = AQNet(sizes, small(k=5, idw_power=1.0)).eval()
    batch, _ = make_batch("krige")
    batch.x_mask[..., 0] = True  # every target-channel value observed: the layer is IDW of the inputs
    out = m(batch)
    origin = batch.pos_src.mean(0)
    d = (local_km(batch.pos_src, origin) - local_km(batch.pos_tgt, origin)).norm(dim=-1)
    w = (1 / d) / (1 / d).sum()
    torch.testing.assert_close(out.tgt[..., 0, 0], torch.einsum("s,bhs->bh", w, batch.x[..., 0]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.src[..., 0], batch.x[..., 0])  # the visible head still reconstructs
