import copy

import pytest
import torch

from stgraph.models import AQNet, AQNetParams, AQNetRef, DataSizes, build_model
from stgraph.models.anchors import anchor_prediction
from stgraph.models.aqnet import AQNetRefParams
from stgraph.nn import local_km
from tests.models.contract import check_contract, make_batch

SIZES = DataSizes(in_channels=2, out_channels=1, target_channels=(0,), window=12, horizon=3)


def small(**kw):
    return AQNetParams(**{"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0, **kw})


def unanchored(**kw):
    """The paper's model (no anchor, no station-to-station path): what the IDW-start tests check."""
    return small(anchor="none", src_knn=False, **kw)


def test_cyclic_encoding_is_used_only_when_on():  # anchor off: an untrained anchored model is its anchor
    batch, _ = make_batch("forecast")
    shifted = make_batch("forecast")[0]
    shifted.x_time = batch.x_time + 1.0
    for ce, should_change in ((True, True), (False, False)):
        torch.manual_seed(0)
        m = AQNet(SIZES, unanchored(cyclic_encoding=ce)).eval()
        assert m.encoder.inp.in_features == 2 * 2 + (6 if ce else 0)
        changed = not torch.allclose(m(batch).src, m(shifted).src)
        assert changed == should_change


def test_neural_knn_gradients_reach_query_and_key_networks():
    torch.manual_seed(0)
    m = AQNet(SIZES, unanchored())
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
    m = AQNet(SIZES, unanchored(k=5, idw_power=2.0)).eval()
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
    m = AQNet(sizes, unanchored(k=5, idw_power=1.0)).eval()
    batch, _ = make_batch("krige")
    batch.x_mask[..., 0] = True  # every target-channel value observed: the layer is IDW of the inputs
    out = m(batch)
    origin = batch.pos_src.mean(0)
    d = (local_km(batch.pos_src, origin) - local_km(batch.pos_tgt, origin)).norm(dim=-1)
    w = (1 / d) / (1 / d).sum()
    torch.testing.assert_close(out.tgt[..., 0, 0], torch.einsum("s,bhs->bh", w, batch.x[..., 0]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.src[..., 0], batch.x[..., 0])  # the visible head still reconstructs


def _sizes(task: str, w: int = 12) -> DataSizes:
    return make_batch(task, w=w)[1]


def _train_a_little(m, batch, steps=5):
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        p = m(batch)
        loss = (p.src - 1.0).abs().mean() + (p.tgt - 1.0).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("task", ["forecast", "krige", "impute"])
def test_untrained_model_is_its_anchor_also_after_reset(task):
    torch.manual_seed(0)
    batch, sizes = make_batch(task)
    m = AQNet(sizes, small(k=4))
    expected = anchor_prediction(batch, sizes, "auto")
    for _ in range(2):  # as built, then trained and reset
        out = m(batch)
        torch.testing.assert_close(out.src, expected.src)
        torch.testing.assert_close(out.tgt, expected.tgt)
        _train_a_little(m, batch)
        assert not torch.allclose(m(batch).src, expected.src)  # training moves it
        m.reset_parameters()


def test_anchored_residual_scales_receive_gradient_at_init():
    torch.manual_seed(0)
    batch, sizes = make_batch("krige")
    m = AQNet(sizes, small(k=4))
    (m(batch).tgt.sum() + m(batch).src.sum()).backward()
    assert m.tgt_scale.grad.abs().sum() > 0 and m.src_scale.grad.abs().sum() > 0
    assert m.head.weight.grad.abs().sum() > 0


def _impute_case():
    """Impute batch where station 0 is missing at step 5 and its neighbour 2 is observed there."""
    batch, sizes = make_batch("impute")
    batch.pos_tgt = batch.pos_src[:0]  # impute: every station visible, no targets
    batch.x_mask[:, 5, 0, 0] = False
    batch.x_mask[:, 5, 2, 0] = True
    batch.x = batch.x * batch.x_mask
    return batch, sizes


def _neighbour_and_self_effects(m, batch):
    """Change of station 0's output at its missing step 5 when neighbour 2's observed value there
    moves, and when its own (held-out) value there is garbage."""
    ref = m(batch).src[:, 5, 0, 0]
    neighbour, itself = copy.copy(batch), copy.copy(batch)
    neighbour.x, itself.x = batch.x.clone(), batch.x.clone()
    neighbour.x[:, 5, 2, 0] += 3.0
    itself.x[:, 5, 0, 0] = 1e6
    return (m(neighbour).src[:, 5, 0, 0] - ref).abs().max(), (m(itself).src[:, 5, 0, 0] - ref).abs().max()


def test_impute_missing_cell_uses_neighbours_never_itself():
    batch, sizes = _impute_case()
    for src_knn in (True, False):  # the paper's model, with and without the station-to-station kNN
        torch.manual_seed(0)
        m = AQNet(sizes, small(k=4, src_knn=src_knn, anchor="none")).eval()
        neighbour, itself = _neighbour_and_self_effects(m, batch)
        assert itself == 0
        assert (neighbour > 1e-3) if src_knn else (neighbour == 0)  # without it: no spatial path at all
    torch.manual_seed(0)
    m = AQNet(sizes, small(k=4)).eval()  # anchored (lerp-knn): its kNN mean already sees neighbours
    anchor_only, _ = _neighbour_and_self_effects(m, batch)
    with torch.no_grad():  # open the zero-init terms, as training does
        m.src_scale.fill_(1.0)
        m.head.weight.normal_()
    neighbour, itself = _neighbour_and_self_effects(m, batch)
    assert itself == 0 and not torch.isclose(neighbour, anchor_only)


def test_station_to_station_knn_excludes_self():
    torch.manual_seed(0)
    batch, sizes = make_batch("impute")
    m = AQNet(sizes, small(k=3)).eval()
    z = torch.randn(4, 5, m.encoder.out_channels)
    values = torch.randn(4, 5, sizes.horizon)
    m.interp(z, values, batch.pos_src, batch.pos_src, k=3, exclude_self=True)
    edge_index, alpha = m.interp.last_edges
    assert edge_index.shape == (2, 4 * 5 * 3)
    assert not (edge_index[0] == edge_index[1]).any()  # query q is station q of its example
    torch.testing.assert_close(alpha.view(20, 3).sum(1), torch.ones(20))
    # gate off: the learned space is geography, so the neighbours are the 3 nearest others
    origin = batch.pos_src.mean(0)
    km = local_km(batch.pos_src, origin)
    d = torch.cdist(km, km).fill_diagonal_(float("inf"))
    nearest = d.topk(3, largest=False).indices.sort(1).values  # (5, 3)
    got = (edge_index[0, :15].view(5, 3)).sort(1).values
    assert torch.equal(got, nearest)
    with torch.no_grad():  # learned space dominates: self still never chosen
        m.interp.gate.fill_(50.0)
        for p in m.interp.key_net.parameters():
            p.normal_()
    m.interp(z, values, batch.pos_src, batch.pos_src, k=4, exclude_self=True)
    edge_index, _ = m.interp.last_edges
    assert edge_index.shape == (2, 4 * 5 * 4) and not (edge_index[0] == edge_index[1]).any()


def test_single_visible_station_has_no_neighbours_and_still_runs():
    torch.manual_seed(0)
    batch, sizes = make_batch("impute")
    batch.x, batch.x_mask, batch.pos_src = batch.x[:, :, :1], batch.x_mask[:, :, :1], batch.pos_src[:1]
    out = AQNet(sizes, small()).eval()(batch)
    torch.testing.assert_close(out.src, anchor_prediction(batch, sizes).src)


def test_forecast_head_sees_the_last_step_and_attention_pooling():
    torch.manual_seed(0)
    m = AQNet(SIZES, small())
    assert m.params.pooling == "last+attention" and m.head.in_features == 2 * 16
    batch, _ = make_batch("forecast")
    seq, z = m.encoder(batch.x, batch.x_mask, batch.x_time)
    torch.testing.assert_close(z[..., :16], seq[:, :, -1])  # the latest step's features, as they are
    mean = AQNet(SIZES, small(pooling="mean"))
    seq, z = mean.encoder(batch.x, batch.x_mask, batch.x_time)
    torch.testing.assert_close(z, seq.mean(2))  # the old behaviour
    for pooling in ("last", "attention"):
        out = AQNet(SIZES, small(pooling=pooling))(batch)
        assert out.src.shape == (4, 3, 5, 1)
    with pytest.raises(ValueError, match="pooling"):
        AQNet(SIZES, small(pooling="max"))


@pytest.mark.parametrize("params", [{"pooling": "mean"}, {"anchor": "none"}, {"src_knn": False}])
def test_contract_holds_for_the_variants(params):
    check_contract(
        "aqnet", {"hidden_channels": 16, "num_layers": 1, "heads": 2, "k": 3, "dropout": 0.0, **params}, "impute"
    )


def test_public_code_width_builds_and_trains():
    """3 LSTM layers x 128 hidden (the public code), 2 heads, on a 24 h window."""
    torch.manual_seed(0)
    batch, sizes = make_batch("forecast", w=24, h=6)
    m = build_model("aqnet", sizes, {"hidden_channels": 128, "num_layers": 3, "heads": 2, "k": 4})
    assert m.encoder.lstm.num_layers == 3 and m.encoder.lstm.hidden_size == 128
    assert m.interp.key_net[0].in_features == 2 * 128 + 2
    _train_a_little(m, batch, steps=2)
    out = m(batch)
    assert out.src.shape == (4, 6, 5, 1) and out.tgt.shape == (4, 6, 1, 1)
    assert torch.isfinite(out.src).all() and torch.isfinite(out.tgt).all()


def test_reference_keeps_the_public_code_defaults():
    torch.manual_seed(0)
    m = AQNetRef(SIZES, AQNetRefParams(hidden_channels=16, num_layers=1, heads=2, k=3, dropout=0.0))
    assert m.encoder.pool.mode == "mean" and not m.anchored
    assert sum(p.numel() for p in m.encoder.pool.parameters()) == 0
    batch, _ = make_batch("forecast")
    assert not torch.allclose(m(batch).src, anchor_prediction(batch, SIZES).src)  # from scratch
