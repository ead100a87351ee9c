"""Grids as station networks: pooling, cropping, containment, node order and positions."""

import numpy as np
import pandas as pd
import pytest

from stgraph.data.grid import (
    GridSpec,
    block_centres,
    block_mean,
    coarse_fine_index,
    coarsen_grid,
    crop,
    grid_to_stations,
    stations_to_grid,
)

TIMES = pd.date_range("2024-01-01", periods=2, freq="1h").to_numpy()


def test_block_mean_by_hand_with_nan():
    # one step, a 2 x 4 grid, two 2 x 2 blocks; the right block has one missing cell
    v = np.array([[1.0, 2.0, 10.0, np.nan], [3.0, 4.0, 20.0, 30.0]])[None, :, :, None]
    coarse, mask = block_mean(v, 2)
    assert coarse.shape == mask.shape == (1, 1, 2, 1)
    assert coarse[0, 0, :, 0].tolist() == [2.5, 20.0]  # (1+2+3+4)/4, (10+20+30)/3
    assert mask.all()
    # a block with no observed cell is NaN and unmasked; an explicit mask hides cells too
    v2 = v.copy()
    v2[0, :, 2:] = np.nan
    coarse, mask = block_mean(v2, 2, mask=np.array([[1, 0, 1, 1], [1, 1, 1, 1]], bool)[None, :, :, None])
    assert coarse[0, 0, 0, 0] == pytest.approx(8 / 3) and np.isnan(coarse[0, 0, 1, 0])
    assert mask[0, 0, :, 0].tolist() == [True, False]


def test_block_mean_rectangular_factor_and_channels():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 4, 6, 2))
    coarse, mask = block_mean(v, (2, 3))
    assert coarse.shape == (3, 2, 2, 2) and mask.all()
    assert coarse[1, 1, 0, 1] == pytest.approx(v[1, 2:4, 0:3, 1].mean())
    assert coarse.dtype == v.dtype
    with pytest.raises(ValueError, match="not a multiple"):
        block_mean(v, 4)
    with pytest.raises(ValueError, match="infinite"):
        block_mean(np.full((1, 2, 2, 1), np.inf), 2)


def test_block_centres_and_crop():
    lat, lon = np.array([58.0, 57.75, 57.5, 57.25, 57.0]), np.array([-10.0, -9.75, -9.5, -9.25])
    v = np.arange(2 * 5 * 4, dtype=float).reshape(2, 5, 4, 1)
    cv, clat, clon = crop(v, lat, lon, slice(0, 4), slice(0, 4))
    assert cv.shape == (2, 4, 4, 1) and np.array_equal(cv, v[:, :4, :4])
    assert clat.tolist() == [58.0, 57.75, 57.5, 57.25] and clon.tolist() == lon.tolist()
    blat, blon = block_centres(clat, clon, 2)
    assert blat.tolist() == [57.875, 57.375] and blon.tolist() == [-9.875, -9.375]
    with pytest.raises(ValueError, match=r"\(T, I, J, C\)"):
        crop(v[0], lat, lon, slice(0, 2), slice(0, 2))


def test_coarse_fine_index_is_the_containment_graph():
    idx = coarse_fine_index((4, 6), 2)
    expected = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]).ravel()
    assert idx.dtype == np.int64 and np.array_equal(idx, expected)
    # consistent with block_mean: averaging fine cells by their coarse index gives the coarse field
    v = np.random.default_rng(1).normal(size=(1, 4, 6, 1))
    coarse, _ = block_mean(v, 2)
    sums = np.bincount(idx, weights=v.ravel(), minlength=6) / np.bincount(idx)
    assert np.allclose(sums, coarse.ravel())


def test_grid_to_stations_order_ids_positions_and_roundtrip():
    lat, lon = np.array([51.0, 50.0]), np.array([0.0, 1.0, 2.0])
    v = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3, 1)
    v[1, 1, 2, 0] = np.nan
    data = grid_to_stations(v, lat, lon, TIMES, channels=["x"], units=["K"], name="toy")
    assert data.num_nodes == 6 and data.station_ids[:4] == ["r000c000", "r000c001", "r000c002", "r001c000"]
    assert data.latlon.tolist() == [[51, 0], [51, 1], [51, 2], [50, 0], [50, 1], [50, 2]]
    assert data.stations["row"].tolist() == [0, 0, 0, 1, 1, 1] and data.stations["col"].tolist() == [0, 1, 2] * 2
    assert data.values[0, 4, 0] == v[0, 1, 1, 0]  # node i * J + j
    assert not data.mask[1, 5, 0] and data.mask.sum() == 11
    assert data.meta["grid"] == {"shape": (2, 3), "lat": [51.0, 50.0], "lon": [0.0, 1.0, 2.0]}
    back, mask, spec = stations_to_grid(data)
    assert np.array_equal(back, v, equal_nan=True) and spec.shape == (2, 3) and mask.sum() == 11


def test_coarsen_grid_keeps_grid_meta():
    v = np.random.default_rng(2).normal(280, 3, size=(2, 4, 4, 1)).astype(np.float32)
    data = grid_to_stations(v, [53.0, 52.0, 51.0, 50.0], [0.0, 1.0, 2.0, 3.0], TIMES, channels=["t"], units=["K"])
    coarse = coarsen_grid(data, 2)
    assert coarse.num_nodes == 4 and coarse.meta["grid"]["shape"] == (2, 2)
    assert coarse.latlon[0].tolist() == [52.5, 0.5] and coarse.meta["coarsened_from"]["factor"] == (2, 2)
    assert coarse.values[1, 3, 0] == pytest.approx(v[1, 2:, 2:, 0].mean(), rel=1e-6)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        GridSpec(np.array([50.0, 51.0, 50.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="lat must be finite degrees"):
        GridSpec(np.array([95.0]), np.array([0.0]))
    with pytest.raises(ValueError, match=r"\(I, J\) = \(2, 2\)"):
        grid_to_stations(np.zeros((1, 2, 3, 1)), [1.0, 0.0], [0.0, 1.0], TIMES[:1], channels=["x"], units=["u"])
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        coarse_fine_index((4, 4), 0)
    plain = grid_to_stations(np.zeros((1, 1, 2, 1)), [1.0], [0.0, 1.0], TIMES[:1], channels=["x"], units=["u"])
    plain.meta.pop("grid")
    with pytest.raises(ValueError, match="not a grid dataset"):
        stations_to_grid(plain)
