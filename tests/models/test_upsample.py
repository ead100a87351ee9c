import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stgraph.models import DataSizes, GraphBatch, build_model
from stgraph.models.baselines.upsample import bicubic_at, complete_map, grid_axes


def _grid(lat, lon):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return torch.tensor(np.stack([la.ravel(), lo.ravel()], 1), dtype=torch.float32)


COARSE_LAT, COARSE_LON = np.array([50.0, 51.0, 52.0, 53.0]), np.array([0.0, 1.0, 2.0, 3.0, 4.0])
# the 4 x 4 fine cells nested in each coarse cell: centres at +-0.125, +-0.375 of a coarse cell
FINE_LAT = (COARSE_LAT[:, None] + np.array([-0.375, -0.125, 0.125, 0.375])).ravel()
FINE_LON = (COARSE_LON[:, None] + np.array([-0.375, -0.125, 0.125, 0.375])).ravel()


def _batch(b=2, w=3, seed=0, missing=0.3):
    g = torch.Generator().manual_seed(seed)
    pos = _grid(COARSE_LAT, COARSE_LON)
    x = torch.randn(b, w, len(pos), 1, generator=g)
    m = torch.rand(b, w, len(pos), 1, generator=g) > missing
    batch = GraphBatch(x=x * m, x_mask=m, x_time=torch.zeros(b, w, 6), y_time=torch.zeros(b, w, 6),
                       pos_src=pos, pos_tgt=_grid(FINE_LAT, FINE_LON))
    return batch, DataSizes(1, 1, (0,), w, w, task="reconstruct")


def test_bicubic_of_a_nested_grid_is_torch_interpolate_with_scale_factor():
    batch, sizes = _batch(missing=0.0)
    pred = build_model("bicubic", sizes)(batch)
    maps = batch.x[..., 0].reshape(2 * 3, 1, 4, 5)
    ref = F.interpolate(maps, scale_factor=4, mode="bicubic", align_corners=False)  # (6, 1, 16, 20)
    np.testing.assert_allclose(pred.tgt[..., 0].reshape(6, 16, 20).numpy(), ref[:, 0].numpy(), atol=1e-5)
    torch.testing.assert_close(pred.src, batch.x)  # nothing to complete


def test_bicubic_interpolates_cell_centres_keeps_constants_and_ignores_node_order():
    lat, lon = np.linspace(40, 47, 8), np.linspace(-3, 8, 12)
    pos = _grid(lat, lon)
    g = torch.Generator().manual_seed(0)
    field = torch.randn(1, 2, len(pos), 1, generator=g)
    field[:, 1] = 7.0  # a constant map stays constant everywhere (Keys' kernel sums to one)
    perm = torch.randperm(len(pos), generator=g)
    targets = torch.cat([pos[:30], _grid(np.linspace(39.5, 47.5, 5), np.linspace(-3.5, 8.5, 6))])
    batch = GraphBatch(x=field[:, :, perm], x_mask=torch.ones_like(field, dtype=torch.bool),
                       x_time=torch.zeros(1, 2, 6), y_time=torch.zeros(1, 2, 6), pos_src=pos[perm], pos_tgt=targets)
    pred = build_model("bicubic", DataSizes(1, 1, (0,), 2, 2, task="reconstruct"))(batch)
    torch.testing.assert_close(pred.tgt[0, 0, :30, 0], field[0, 0, :30, 0], atol=1e-5, rtol=1e-5)  # at centres
    torch.testing.assert_close(pred.tgt[0, 1, :, 0], torch.full((60,), 7.0), atol=1e-5, rtol=1e-5)


def test_completion_uses_the_k_nearest_cells_observed_at_that_step():
    pos = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    x = torch.tensor([0.0, 10.0, 20.0, 40.0]).view(1, 1, 4, 1)
    m = torch.tensor([False, False, True, True]).view(1, 1, 4, 1)
    out = complete_map(x * m, m, pos, k=1, power=2.0)
    assert out[0, 0, :, 0].tolist() == pytest.approx([20.0, 20.0, 20.0, 40.0])  # nearest observed, not nearest
    out = complete_map(x * m, m, pos, k=2, power=1.0)
    assert out[0, 0, 0, 0].item() == pytest.approx((20 / 2 + 40 / 3) / (1 / 2 + 1 / 3))


@pytest.mark.parametrize("name", ["bicubic", "idw-upsample"])
def test_grid_contract_masked_cells_ignored_order_irrelevant_no_targets(name):
    batch, sizes = _batch()
    model = build_model(name, sizes)
    assert not list(model.parameters())
    ref = model(batch)
    assert ref.src.shape == (2, 3, 20, 1) and ref.tgt.shape == (2, 3, 320, 1) and torch.isfinite(ref.tgt).all()
    noisy = copy.copy(batch)
    noisy.x = torch.where(batch.x_mask, batch.x, torch.full_like(batch.x, 1e6))
    torch.testing.assert_close(model(noisy).tgt, ref.tgt)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = copy.copy(batch)
    shuffled.x, shuffled.x_mask, shuffled.pos_src = batch.x[:, :, perm], batch.x_mask[:, :, perm], batch.pos_src[perm]
    out = model(shuffled)
    torch.testing.assert_close(out.src, ref.src[:, :, perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.tgt, ref.tgt, rtol=1e-4, atol=1e-5)
    alone = copy.copy(batch)
    alone.pos_tgt = batch.pos_tgt[:0]
    assert model(alone).tgt.shape == (2, 3, 0, 1)


def test_bicubic_refuses_nodes_that_are_not_a_full_grid():
    with pytest.raises(ValueError, match="full regular grid"):
        grid_axes(_grid(COARSE_LAT, COARSE_LON)[:-1])
    with pytest.raises(ValueError, match="spacing varies"):
        grid_axes(_grid(np.array([0.0, 1.0, 3.0]), COARSE_LON))
    _ = bicubic_at  # imported for the module's public API
