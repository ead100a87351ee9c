"""Time periods: which time steps belong to train, val and test.

A :class:`TimeSplit` holds three boolean (T,) arrays. Steps in a gap belong to no period, so a
window never straddles two periods (see :func:`stgraph.data.windows.window_starts`).

Three ways to cut them: by fractions in time order (:func:`chronological_time_split`, forwards or
reversed — ``backcast``, AMLSG's temporal backcasting: train on the latest years, estimate the
earliest), by months (:func:`month_time_split`, AQI-36) and by explicit dates
(:func:`period_time_split`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stgraph.data.windows import window_starts

PERIODS = ("train", "val", "test")


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


def chronological_time_split(
    num_steps: int, *, val: float = 0.1, test: float = 0.2, gap: int = 0, backcast: bool = False
) -> TimeSplit:
    """train | gap | val | gap | test, in time order; with ``backcast`` the same split reversed,
    test | gap | val | gap | train (the test period is the earliest part of the series). ``gap``
    should be at least the window (plus horizon) so no input window of one period overlaps the
    targets of another."""
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
    if backcast:  # mirror the forward split: test first, train last
        return TimeSplit(train[::-1].copy(), val_m[::-1].copy(), test_m[::-1].copy(), method=f"backcast(gap={gap})")
    return TimeSplit(train=train, val=val_m, test=test_m, method=f"chronological(gap={gap})")


def _dilate(m: np.ndarray, gap: int) -> np.ndarray:
    """(T,) bool: steps within ``gap`` steps of a True step of ``m`` (m itself included)."""
    t = np.arange(len(m))
    count = np.concatenate([[0], np.cumsum(m, dtype=np.int64)])  # True steps before each index
    return count[np.minimum(t + gap + 1, len(m))] - count[np.maximum(t - gap, 0)] > 0


def period_time_split(
    times: np.ndarray, periods: Mapping[str, Sequence[str]], *, gap: int = 0, min_span: int = 1
) -> TimeSplit:
    """Periods from explicit dates: ``periods = {"train": [start, end], "val": [...], "test": [...]}``,
    each half-open ``start <= time < end`` (strings or timestamps pandas parses), in any order, e.g.
    train 2015-2017 and test 2013-2014 (backcasting). ``gap`` steps of train next to val or test,
    and of val next to test, are left out (as :func:`month_time_split` does), so no period's
    windows touch another's.

    Args:
        times: (T,) datetime64 of the series.
        periods: the three periods (the config's ``split.periods``).
        gap: steps left out at the borders, see above.
        min_span: each period must hold at least one run of this many consecutive steps (a
            window plus its horizon) after the gaps.

    Raises:
        ValueError: naming ``split.periods.<name>``: a missing or unknown period, a bound that is
            not a date or not two of them, an empty or inverted interval, two periods that overlap,
            a period without a whole window.
    """
    keys = list(periods)
    if sorted(keys) != sorted(PERIODS):
        raise ValueError(f"split.periods needs exactly the keys {list(PERIODS)}, got {keys}")
    index = pd.DatetimeIndex(times)
    bounds: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
    for name in PERIODS:
        value = periods[name]
        if isinstance(value, str) or len(value) != 2:
            raise ValueError(f"split.periods.{name}: expected [start, end], got {value!r}")
        try:
            start, end = (pd.Timestamp(v) for v in value)
        except (ValueError, TypeError) as e:
            raise ValueError(f"split.periods.{name}: {list(value)} are not dates pandas parses ({e})") from None
        if not start < end:
            raise ValueError(f"split.periods.{name}: start {value[0]!r} must be before end {value[1]!r}")
        bounds[name] = (start, end)
    for i, a in enumerate(PERIODS):
        for b in PERIODS[i + 1 :]:
            (sa, ea), (sb, eb) = bounds[a], bounds[b]
            if sa < eb and sb < ea:
                raise ValueError(
                    f"split.periods.{a} {periods[a]} and split.periods.{b} {periods[b]} overlap "
                    "(periods are half-open: start <= time < end)"
                )
    inside = {n: np.asarray((index >= s) & (index < e)) for n, (s, e) in bounds.items()}
    test = inside["test"]
    val = inside["val"] & ~_dilate(test, gap)
    train = inside["train"] & ~_dilate(test | val, gap)
    out = {"train": train, "val": val, "test": test}
    for name in PERIODS:
        if len(window_starts(out[name], min_span, 0)) == 0:
            raise ValueError(
                f"split.periods.{name} {list(periods[name])} holds {int(out[name].sum())} steps of the series "
                f"({times[0]} .. {times[-1]}) after gaps of {gap}, and no run of {min_span} consecutive steps "
                "(one window)"
            )
    shown = ", ".join(f"{n}=[{bounds[n][0]}, {bounds[n][1]})" for n in PERIODS)
    return TimeSplit(train=train, val=val, test=test, method=f"periods({shown}; gap={gap})")


def month_time_split(
    times: np.ndarray, *, test_months=(3, 6, 9, 12), val_fraction: float = 0.1, gap: int = 0, val_months=()
) -> TimeSplit:
    """Test = every step in ``test_months`` (AQI-36's standard months 3/6/9/12); val = every step
    in ``val_months`` (CSDI: a held-out month) or, without them, the last ``val_fraction`` of each
    contiguous non-test run; ``gap`` steps are left out on both sides of each test run and between
    train and val."""
    month = pd.DatetimeIndex(times).month.to_numpy()
    test = np.isin(month, list(test_months))
    if len(val_months):
        val = np.isin(month, list(val_months)) & ~test
        around = _dilate(test | val, gap)  # train keeps `gap` steps away from both
        method = f"months{tuple(test_months)}, val months{tuple(val_months)}(gap={gap})"
        return TimeSplit(train=~around, val=val, test=test, method=method)
    n = len(times)
    blocked = _dilate(test, gap)
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


def _dilate(steps: np.ndarray, gap: int) -> np.ndarray:
    """(T,) bool: ``steps`` widened by ``gap`` steps on both sides."""
    if not gap:
        return steps.copy()
    return np.convolve(steps.astype(np.int64), np.ones(2 * gap + 1, dtype=np.int64), mode="same") > 0
