"""Station-wise temporal forecasters (linear, LSTM, PatchTST), read out at targets by IDW."""

import copy

import pytest
import torch

from stgraph.models import DataSizes, build_model
from stgraph.models.baselines.patchtst import make_patches, num_patches
from stgraph.ops.observed import last_observed
from tests.models.contract import POS, make_batch
from tests.models.test_contract import TINY as CONTRACT_TINY

TINY = {name: CONTRACT_TINY[name] for name in ("linear", "lstm", "patchtst")}
NAMES = sorted(TINY)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("task", ["krige", "impute"])
def test_aligned_tasks_are_refused(name, task):
    with pytest.raises(ValueError, match=f"task '{task}'"):
        build_model(name, DataSizes(2, 1, (0,), 12, 12, task=task), TINY[name])


def test_linear_starts_as_persistence_of_the_last_observed_value():
    batch, sizes = make_batch("forecast")
    pred = build_model("linear", sizes)(batch)
    last, _ = last_observed(batch.x[..., :1], batch.x_mask[..., :1])  # (B, N, 1)
    assert (last != 0).any()
    torch.testing.assert_close(pred.src, last.unsqueeze(1).expand(-1, sizes.horizon, -1, -1))
    plain = build_model("linear", sizes, {"residual_last": False})(batch)
    assert plain.src.abs().max() == 0  # zero map, no residual: the standardised mean


def test_linear_readout_at_a_visible_station_is_its_forecast():
    batch, sizes = make_batch("forecast")
    batch.pos_tgt = POS[2:3]  # the target sits on visible station 2
    torch.manual_seed(0)
    model = build_model("linear", sizes, {"readout_k": 1})
    torch.nn.init.normal_(model.linear.weight, std=0.1)  # leave persistence: stations differ more
    pred = model(batch)
    torch.testing.assert_close(pred.tgt[:, :, 0], pred.src[:, :, 2])
    assert not torch.allclose(pred.tgt[:, :, 0], pred.src[:, :, 1])
    everyone = build_model("linear", sizes, {"readout_k": None})
    everyone.load_state_dict(model.state_dict())
    assert not torch.allclose(everyone(batch).tgt[:, :, 0], pred.src[:, :, 2])  # k=None blends the others in


def test_patch_count_and_layout():
    assert num_patches(24, 16, 8) == 3 and num_patches(336, 16, 8) == 42
    z = torch.randn(2, 24, 3)
    assert make_patches(z, 16, 8).shape == (2, 3, 16, 3)
    # by hand: W = 6, patch 4, stride 2; the end padded with 2 copies of the last step
    series = torch.arange(6.0).view(1, 6, 1)
    features = torch.cat([series, 10 * series], dim=-1)  # a second feature per step travels with its step
    got = make_patches(features, 4, 2)
    expected = torch.tensor([[0.0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 5, 5]])
    torch.testing.assert_close(got[0, :, :, 0], expected)
    torch.testing.assert_close(got[0, :, :, 1], 10 * expected)
    sizes = DataSizes(2, 1, (0,), window=24, horizon=4)
    model = build_model("patchtst", sizes)
    assert model.pos.shape == (3, 64)
    first, second = model.encoder.layers  # cloned by nn.TransformerEncoder, then initialised apart
    assert not torch.equal(first.self_attn.in_proj_weight, second.self_attn.in_proj_weight)


def test_patchtst_rejects_patches_longer_than_the_window():
    with pytest.raises(ValueError, match="patch_len=16 exceeds the window"):
        build_model("patchtst", DataSizes(2, 1, (0,), window=12, horizon=3))


@pytest.mark.parametrize("revin", [True, False])
def test_revin_makes_forecasts_scale_and_shift_with_the_series(revin):
    batch, sizes = make_batch("forecast")
    torch.manual_seed(0)
    model = build_model("patchtst", sizes, {**TINY["patchtst"], "revin": revin}).eval()
    moved = copy.copy(batch)
    moved.x = (10 * batch.x + 5) * batch.x_mask
    ref, out = model(batch), model(moved)
    equivariant = torch.allclose(out.src, 10 * ref.src + 5, rtol=1e-4, atol=1e-3)
    assert equivariant == revin
    if revin:
        torch.testing.assert_close(out.tgt, 10 * ref.tgt + 5, rtol=1e-4, atol=1e-3)


def test_lstm_station_sees_only_its_own_inputs():
    batch, sizes = make_batch("forecast")
    torch.manual_seed(0)
    model = build_model("lstm", sizes, TINY["lstm"]).eval()
    ref = model(batch)
    other = copy.copy(batch)
    other.x, other.x_mask = batch.x.clone(), batch.x_mask.clone()
    other.x[:, :, 3] = 3.0
    other.x_mask[:, :, 3] = True
    out = model(other)
    keep = [0, 1, 2, 4]
    torch.testing.assert_close(out.src[:, :, keep], ref.src[:, :, keep], rtol=0, atol=0)
    assert not torch.allclose(out.src[:, :, 3], ref.src[:, :, 3])
