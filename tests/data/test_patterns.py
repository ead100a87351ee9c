"""Sparse patterns: exact ratios, determinism per seed, the block's shape, save/load, bad input."""

import numpy as np
import pytest
import torch

from stgraph.data.patterns import STANDARD_RATIOS, SparsePattern, block_nodes, draw_removed


def stations(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(39.6, 40.4, n), rng.uniform(116.0, 117.0, n)], 1)


def grid(rows, cols, north_first=True):
    """Cell centres of a rows x cols lat/lon grid, row-major; row 0 is the north edge if ``north_first``."""
    lat = np.linspace(58.0, 50.0, rows) if north_first else np.linspace(50.0, 58.0, rows)
    lon = np.linspace(-6.0, 2.0, cols)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return np.stack([la.ravel(), lo.ravel()], 1)


@pytest.mark.parametrize("ratio", STANDARD_RATIOS)
def test_ratios_are_exact(ratio):
    pos = stations(23)
    k = round(ratio * 23)
    fixed = SparsePattern.draw("fixed", 50, pos, ratio=ratio, seed=1).removed
    assert fixed.shape == (50, 23) and (fixed == fixed[0]).all() and fixed[0].sum() == k  # same nodes every step
    rnd = SparsePattern.draw("random", 50, pos, ratio=ratio, seed=1).removed
    assert (rnd.sum(1) == k).all()  # per step
    assert len({tuple(r) for r in rnd}) > 40  # a new set each step


def test_random_pattern_covers_nodes_evenly():
    rnd = SparsePattern.draw("random", 4000, stations(10), ratio=0.4, seed=3).removed
    assert np.allclose(rnd.mean(0), 0.4, atol=0.04)


@pytest.mark.parametrize("kind", ["fixed", "random"])
def test_deterministic_per_seed_and_seeds_differ(kind):
    pos = stations(16)
    a = SparsePattern.draw(kind, 30, pos, ratio=0.4, seed=7)
    b = SparsePattern.draw(kind, 30, pos, ratio=0.4, seed=7)
    c = SparsePattern.draw(kind, 30, pos, ratio=0.4, seed=8)
    assert a.same_as(b) and np.array_equal(a.removed, b.removed)
    assert not np.array_equal(a.removed, c.removed) and not a.same_as(c)


def test_draw_from_a_generator_follows_it():
    pos = stations(12)
    a = draw_removed("random", 10, pos, ratio=0.2, gen=torch.Generator().manual_seed(0))
    b = draw_removed("random", 10, pos, ratio=0.2, gen=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    draw_removed("random", 10, pos, ratio=0.2, gen=gen)
    c = draw_removed("random", 10, pos, ratio=0.2, gen=gen)  # the generator moved on
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("rows,cols", [(8, 12), (32, 48), (5, 7)])
def test_block_on_a_grid_is_the_lower_right_quarter(rows, cols):
    p = SparsePattern.draw("block", 6, grid(rows, cols), grid_shape=(rows, cols), ratio=0.8)
    expect = np.zeros((rows, cols), dtype=bool)
    expect[rows - rows // 2 :, cols - cols // 2 :] = True
    assert p.ratio is None  # block ignores the ratio
    assert (p.removed == expect.ravel()).all()


def test_block_on_a_grid_reads_north_from_positions_and_takes_any_corner():
    rows, cols = 6, 8
    south_first = block_nodes(grid(rows, cols, north_first=False), "south-east", (rows, cols)).reshape(rows, cols)
    assert south_first[:3, 4:].all() and south_first.sum() == 12  # rows run south to north: the first rows
    nw = block_nodes(grid(rows, cols), "north-west", (rows, cols)).reshape(rows, cols)
    assert nw[:3, :4].all() and nw.sum() == 12


@pytest.mark.parametrize("corner", ["south-east", "north-west", "south-west", "north-east"])
def test_block_on_stations_is_the_quarter_nearest_the_corner(corner):
    pos = stations(20, seed=4)
    got = block_nodes(pos, corner)
    lat = pos[:, 0].min() if corner.startswith("south") else pos[:, 0].max()
    lon = pos[:, 1].max() if corner.endswith("east") else pos[:, 1].min()
    dist = np.hypot(pos[:, 0] - lat, (pos[:, 1] - lon) * np.cos(np.deg2rad(pos[:, 0].mean())))
    assert got.sum() == 5
    assert dist[got].max() < dist[~got].min()  # every removed station is nearer the corner than every kept one
    removed = SparsePattern.draw("block", 9, pos, corner=corner).removed
    assert (removed == got).all()


def test_block_on_stations_hand_made():
    # four stations at the corners of a square and four near its centre: SE quarter = 2 stations
    pos = np.array([[40.0, 116.0], [40.0, 117.0], [39.0, 116.0], [39.0, 117.0],
                    [39.5, 116.5], [39.4, 116.6], [39.6, 116.4], [39.5, 116.4]])  # fmt: skip
    assert np.flatnonzero(block_nodes(pos)).tolist() == [3, 5]


def test_save_and_load_round_trip(tmp_path):
    for kind in ("fixed", "random", "block"):
        p = SparsePattern.draw(kind, 40, stations(12), ratio=0.6, seed=2, nodes=np.arange(3, 15))
        q = SparsePattern.load(p.save(tmp_path / f"{kind}.npz"))
        assert p.same_as(q) and np.array_equal(p.pos, q.pos) and q.to_dict() == p.to_dict()
    g = SparsePattern.draw("block", 4, grid(4, 6), grid_shape=(4, 6))
    assert SparsePattern.load(g.save(tmp_path / "g.npz")).grid_shape == (4, 6)


def test_bad_input_is_refused():
    pos = stations(10)
    for ratio in (0.0, 1.0, -0.2, 1.5, True, "0.4"):
        with pytest.raises(ValueError, match="ratio"):
            SparsePattern.draw("fixed", 5, pos, ratio=ratio)
    with pytest.raises(ValueError, match="removes 0"):
        SparsePattern.draw("random", 5, stations(2), ratio=0.2)
    with pytest.raises(ValueError, match="kind must be one of"):
        SparsePattern.draw("stripes", 5, pos)
    with pytest.raises(ValueError, match="corner"):
        SparsePattern.draw("block", 5, pos, corner="lower-right")
    with pytest.raises(ValueError, match="grid_shape"):
        SparsePattern.draw("block", 5, grid(4, 6), grid_shape=(5, 5))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        SparsePattern.draw("fixed", 5, pos[:, :1])
    with pytest.raises(ValueError, match="at least 2"):
        SparsePattern.draw("block", 5, stations(1))
