"""The central promise: hidden stations' values never reach a scaler or a training batch (graph
weights come from positions only). Poison them with absurd numbers; what training sees must not move a bit."""

from dataclasses import replace

import numpy as np
import torch

from stgraph.data import chronological_time_split, kfold_station_splits, spatial_block_split
from stgraph.data.pipeline import build_training_inputs


def poisoned(data, stations):
    values, mask = data.values.copy(), data.mask.copy()
    values[:, stations] = 1e9
    mask[:, stations] = True  # even pretend every poisoned cell was observed
    return replace(data, values=values, mask=mask)


def assert_identical(a, b):
    assert np.array_equal(a.scaler.mean, b.scaler.mean) and np.array_equal(a.scaler.std, b.scaler.std)
    assert torch.equal(a.windows.values, b.windows.values) and torch.equal(a.windows.mask, b.windows.mask)
    assert torch.equal(a.windows.starts, b.windows.starts)
    for wa, wb in zip(a.windows.batches(64), b.windows.batches(64), strict=True):
        assert torch.equal(wa.x, wb.x) and torch.equal(wa.y, wb.y) and torch.equal(wa.y_mask, wb.y_mask)


def test_poisoning_hidden_stations_changes_nothing_training_sees(uci12_slice):
    data = uci12_slice
    ts = chronological_time_split(data.num_steps, val=0.15, test=0.15, gap=48)
    for split in [kfold_station_splits(data, 4, seed=0)[1], spatial_block_split(data, test=3, val=2, seed=1)]:
        hidden = np.concatenate([split.indices(data, "test"), split.indices(data, "val")])
        clean = build_training_inputs(data, split, ts, window=24, horizon=24)
        dirty = build_training_inputs(poisoned(data, hidden), split, ts, window=24, horizon=24)
        assert_identical(clean, dirty)
        assert clean.windows.values.shape[1] == len(split.train)
        assert np.abs(clean.scaler.mean).max() < 1e5  # the poison would have dominated


def test_poisoning_visible_stations_does_change_training(uci12_slice):
    """The same check can fail: poisoning a training station moves the scaler."""
    data = uci12_slice
    ts = chronological_time_split(data.num_steps, val=0.15, test=0.15, gap=48)
    split = kfold_station_splits(data, 4, seed=0)[0]
    clean = build_training_inputs(data, split, ts, window=24, horizon=24)
    dirty = build_training_inputs(
        poisoned(data, split.indices(data, "train")[:1]), split, ts, window=24, horizon=24
    )
    assert not np.array_equal(clean.scaler.mean, dirty.scaler.mean)
