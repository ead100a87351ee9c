"""Anchors: the simple estimates learned models start from, checked by hand."""

import torch

from stgraph.models import DataSizes, GraphBatch
from stgraph.models.anchors import anchor_prediction
from stgraph.ops.idw import masked_idw
from stgraph.ops.lerp import lerp_in_time, lerp_knn

POS = torch.tensor([[39.90, 116.30], [39.95, 116.35], [40.00, 116.40], [39.92, 116.45]])


def test_masked_idw_ignores_missing_neighbours():
    x = torch.tensor([1.0, 5.0, 100.0]).view(1, 1, 3, 1)
    mask = torch.tensor([True, True, False]).view(1, 1, 3, 1)
    est, has = masked_idw(x, mask, POS[:3], POS[3:], power=2.0)
    from stgraph.ops.idw import idw_weights

    w = idw_weights(POS[:3], POS[3:], 2.0, None)[0, :2]
    expected = (w * torch.tensor([1.0, 5.0])).sum() / w.sum()  # renormalised over observed only
    torch.testing.assert_close(est.flatten(), expected.view(1))
    assert has.all()
    est, has = masked_idw(x, torch.zeros_like(mask), POS[:3], POS[3:])
    assert est.item() == 0.0 and not has.any()  # nothing observed: 0 and flagged


def test_masked_idw_excluding_self_uses_the_others():
    x = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1)
    est, _ = masked_idw(x, torch.ones_like(x, dtype=torch.bool), POS[:2], POS[:2], exclude_self=True)
    assert est.flatten().tolist() == [3.0, 1.0]


def test_lerp_in_time_by_hand():
    x = torch.tensor([0.0, 2.0, 0.0, 0.0, 8.0, 0.0]).view(1, 6, 1, 1)
    m = torch.tensor([False, True, False, False, True, False]).view(1, 6, 1, 1)
    filled, gap = lerp_in_time(x, m)
    assert filled.flatten().tolist() == [2.0, 2.0, 4.0, 6.0, 8.0, 8.0]  # NOCB, lerp, LOCF
    assert gap.flatten().tolist() == [1.0, 0.0, 2.0, 2.0, 0.0, 1.0]


def test_lerp_knn_weights_short_gaps_to_time_and_long_ones_to_space():
    w = 40
    x = torch.zeros(1, w, 2, 1)
    m = torch.ones(1, w, 2, 1, dtype=torch.bool)
    x[0, :, 0, 0] = 10.0  # station 0 flat at 10, station 1 flat at 0
    m[0, 5, 0, 0] = False  # a 1-step gap at station 0: interpolation (10) wins entirely
    m[0, 10:30, 0, 0] = False  # a 20-step gap: mostly the neighbour (0)
    out = lerp_knn(x, m, POS[:2], tau=2.0, k=1)
    assert out[0, 5, 0, 0] == 10.0
    assert out[0, 20, 0, 0] < 1e-2
    only_time = lerp_knn(x, m, POS[:2], tau=1e6, k=1)
    assert torch.allclose(only_time[0, :, 0, 0], torch.full((w,), 10.0), atol=1e-3)


def test_anchor_prediction_by_task():
    x = torch.randn(2, 6, 3, 2)
    m = torch.rand(2, 6, 3, 2) > 0.3
    m[:, -1, 0, 0] = True
    common = dict(x=x * m, x_mask=m, x_time=torch.zeros(2, 6, 6), pos_src=POS[:3], pos_tgt=POS[3:])
    fc = anchor_prediction(GraphBatch(**common, y_time=torch.zeros(2, 4, 6)), DataSizes(2, 1, (0,), 6, 4))
    assert fc.src.shape == (2, 4, 3, 1) and fc.tgt.shape == (2, 4, 1, 1)
    torch.testing.assert_close(fc.src[:, 0, 0, 0], x[:, -1, 0, 0])  # last observed value persists
    kr = anchor_prediction(GraphBatch(**common, y_time=torch.zeros(2, 6, 6)), DataSizes(2, 1, (0,), 6, 6, task="krige"))
    est, _ = masked_idw(x[..., :1], m[..., :1], POS[:3], POS[3:])
    torch.testing.assert_close(kr.tgt, est)
    none = anchor_prediction(
        GraphBatch(**common, y_time=torch.zeros(2, 6, 6)), DataSizes(2, 1, (0,), 6, 6, task="krige"), "none"
    )
    assert not none.src.any() and not none.tgt.any()


def test_forecast_anchor_of_an_unobserved_visible_station_is_what_a_target_gets():
    x = torch.randn(2, 6, 4, 1)
    m = torch.ones(2, 6, 4, 1, dtype=torch.bool)
    m[:, :, 3] = False  # station 3 has no observation in the window (hidden per sample, or an outage)
    common = dict(x=x * m, x_mask=m, x_time=torch.zeros(2, 6, 6), y_time=torch.zeros(2, 3, 6))
    sizes = DataSizes(1, 1, (0,), 6, 3)
    as_src = anchor_prediction(GraphBatch(**common, pos_src=POS, pos_tgt=POS[:0]), sizes)
    visible = GraphBatch(**{**common, "x": (x * m)[:, :, :3], "x_mask": m[:, :, :3]}, pos_src=POS[:3], pos_tgt=POS[3:])
    as_tgt = anchor_prediction(visible, sizes)
    torch.testing.assert_close(as_src.src[:, :, 3], as_tgt.tgt[:, :, 0])
