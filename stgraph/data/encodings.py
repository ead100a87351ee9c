"""Cyclic time encodings: sin/cos of hour/24, weekday/7 and month/12."""

from __future__ import annotations

import numpy as np
import pandas as pd

CYCLIC_FEATURES = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "month_sin", "month_cos")


def cyclic_time_encoding(times: np.ndarray | pd.DatetimeIndex) -> np.ndarray:
    """Encode timestamps on the unit circle so 23:00 sits next to 00:00 and December next to January.

    Args:
        times: (T,) timestamps.
    Returns:
        (T, 6) float32 in the order of :data:`CYCLIC_FEATURES`.
    """
    t = pd.DatetimeIndex(times)
    hour = (t.hour + t.minute / 60.0).to_numpy(np.float64) / 24.0
    weekday = t.day_of_week.to_numpy(np.float64) / 7.0
    month = (t.month.to_numpy(np.float64) - 1.0) / 12.0
    phases = 2.0 * np.pi * np.stack([hour, weekday, month], axis=1)  # (T, 3)
    out = np.empty((len(t), 6), dtype=np.float32)
    out[:, 0::2] = np.sin(phases)
    out[:, 1::2] = np.cos(phases)
    return out
