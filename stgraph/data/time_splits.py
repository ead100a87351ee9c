"""Time periods: which time steps belong to train, val and test.

A :class:`TimeSplit` holds three boolean (T,) arrays. Steps in a gap belong to no period, so a
window never straddles two periods (see :func:`stgraph.data.windows.window_starts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class TimeSplit:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    method: str = "chronological"

    def __post_init__(self) -> None:
        stacked = np.stack([self.train, self.val, self.test]).astype(int)
        if (stacked.sum(0) > 1).any():
            raise ValueError("time periods overlap")

    def period(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ValueError(f"period must be train, val or test, got {name!r}")
        return getattr(self, name)

    def to_dict(self) -> dict:
        def runs(m: np.ndarray) -> list[list[int]]:
            edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
            return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], 1).tolist()

        return {
            "method": self.method,
            "num_steps": len(self.train),
            **{p: runs(self.period(p)) for p in ("train", "val", "test")},
        }


def chronological_time_split(num_steps: int, *, val: float = 0.1, test: float = 0.2, gap: int = 0) -> TimeSplit:
    """train | gap | val | gap | test, in time order. ``gap`` should be at least the window
    (plus horizon) so no input window of one period overlaps the targets of another."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test are fractions summing below 1, got {val}, {test}")
    n_test, n_val = int(round(test * num_steps)), int(round(val * num_steps))
    n_train = num_steps - n_test - n_val - 2 * gap
    if n_train <= 0:
        raise ValueError(f"{num_steps} steps leave no training period with gap={gap}")
    idx = np.arange(num_steps)
    train = idx < n_train
    val_m = (idx >= n_train + gap) & (idx < n_train + gap + n_val)
    test_m = idx >= num_steps - n_test
    return TimeSplit(train=train, val=val_m, test=test_m, method=f"chronological(gap={gap})")


def month_time_split(
    times: np.ndarray, *, test_months=(3, 6, 9, 12), val_fraction: float = 0.1, gap: int = 0
) -> TimeSplit:
    """Test = every step in ``test_months`` (AQI-36's standard months 3/6/9/12); val = the last
    ``val_fraction`` of each contiguous non-test run; ``gap`` steps are left out on both sides of
    each test run and between train and val."""
    month = pd.DatetimeIndex(times).month.to_numpy()
    test = np.isin(month, list(test_months))
    n = len(times)
    blocked = test.copy()
    if gap:  # dilate the test steps by `gap` on both sides
        blocked = np.convolve(test.astype(np.int64), np.ones(2 * gap + 1, dtype=np.int64), mode="same") > 0
    val = np.zeros(n, dtype=bool)
    free = ~blocked
    edges = np.diff(np.concatenate([[0], free.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    train = free.copy()
    for s, e in zip(starts, ends, strict=True):  # one iteration per contiguous run (a handful)
        n_val = int(round(val_fraction * (e - s)))
        if n_val:
            val[e - n_val : e] = True
            train[max(s, e - n_val - gap) : e] = False
    return TimeSplit(train=train, val=val, test=test & ~val, method=f"months{tuple(test_months)}(gap={gap})")
