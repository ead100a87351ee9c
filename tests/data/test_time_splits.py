import numpy as np
import pandas as pd

from stgraph.data import chronological_time_split, month_time_split, window_starts


def test_chronological_gap_keeps_windows_apart():
    ts = chronological_time_split(1000, val=0.1, test=0.2, gap=48)
    tr, va, te = (np.flatnonzero(ts.period(p)) for p in ("train", "val", "test"))
    assert tr.max() < va.min() - 48 and va.max() < te.min() - 48 + 1
    starts = window_starts(ts.train, 24, 24)
    assert (starts + 48 <= tr.max() + 1).all()
    assert ts.to_dict()["test"] == [[800, 1000]]


def test_month_split_matches_aqi36_protocol(aqi36):
    ts = month_time_split(aqi36.times, test_months=(3, 6, 9, 12), val_fraction=0.1, gap=24)
    months = pd.DatetimeIndex(aqi36.times).month
    assert set(months[ts.test]) == {3, 6, 9, 12}
    assert not set(months[ts.train]) & {3, 6, 9, 12}
    assert ts.val.sum() > 0 and not (ts.train & ts.val).any()
    test_idx = np.flatnonzero(ts.test)
    train_idx = np.flatnonzero(ts.train)
    assert np.abs(train_idx[:, None] - test_idx[None, ::50]).min() > 24  # the gap holds


def test_month_split_with_a_held_out_validation_month(aqi36):
    """CSDI's validation: a whole month, removed from training (not the tail of each run)."""
    ts = month_time_split(aqi36.times, test_months=(3, 6, 9, 12), gap=0, val_months=(2,))
    months = pd.DatetimeIndex(aqi36.times).month
    assert set(months[ts.val]) == {2} and ts.val.sum() == (months == 2).sum()
    assert set(months[ts.train]) == {1, 4, 5, 7, 8, 10, 11} and set(months[ts.test]) == {3, 6, 9, 12}
    gapped = month_time_split(aqi36.times, test_months=(3, 6, 9, 12), gap=24, val_months=(2,))
    assert gapped.val.sum() == ts.val.sum() and gapped.train.sum() < ts.train.sum()
    held = np.flatnonzero(gapped.val | gapped.test)
    assert np.abs(np.flatnonzero(gapped.train)[:, None] - held[None, ::40]).min() > 24
