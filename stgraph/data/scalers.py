"""Per-channel standardisation fitted only on what training may see."""

from __future__ import annotations

import numpy as np
import torch

from stgraph.data.station_data import StationData

FIT_BLOCK_CELLS = 1 << 24  # cells per block of steps while fitting (a 128 MB float64 block)


class MaskedStandardScaler:
    """Standardise each channel with a mean and std computed over observed cells of the
    train-role stations in the train period only. Unobserved cells never enter the statistics."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, data: StationData, stations: np.ndarray, time_mask: np.ndarray | None = None) -> MaskedStandardScaler:
        """Args:
        data: the dataset.
        stations: node indices of the train-role stations.
        time_mask: (T,) bool of the train period (default: all steps).
        """
        t_idx = np.arange(data.num_steps) if time_mask is None else np.flatnonzero(time_mask)
        stations = np.asarray(stations)
        # float64 sums over blocks of steps (two passes: mean, then variance), so no float64 copy of
        # the whole (T', N', C) series is ever held; a series under FIT_BLOCK_CELLS is one block
        rows = max(1, FIT_BLOCK_CELLS // max(1, len(stations) * data.num_channels))
        blocks = [t_idx[lo : lo + rows] for lo in range(0, len(t_idx), rows)]

        def block(t):
            return data.values[np.ix_(t, stations)].astype(np.float64), data.mask[np.ix_(t, stations)]  # (T_b, N', C)

        count = np.zeros(data.num_channels, dtype=np.int64)
        total = np.zeros(data.num_channels)
        for t in blocks:
            x, m = block(t)
            count += m.sum(axis=(0, 1))
            total += (x * m).sum(axis=(0, 1))
        empty = [data.channels[c] for c in np.flatnonzero(count < 2)]
        if empty:
            raise ValueError(f"channels {empty} have fewer than 2 observed training values: cannot scale")
        mean = total / count
        var = np.zeros(data.num_channels)
        for t in blocks:
            x, m = block(t)
            var += (((x - mean) * m) ** 2).sum(axis=(0, 1))
        var = var / count
        std = np.sqrt(var)
        flat = [data.channels[c] for c in np.flatnonzero(std == 0)]
        if flat:
            raise ValueError(f"channels {flat} are constant on the training stations: cannot scale")
        self.mean, self.std = mean, std
        return self

    def _check(self) -> None:
        if self.mean is None:
            raise RuntimeError("MaskedStandardScaler is not fitted")

    def transform(self, x):
        """x: (..., C) numpy array or tensor in original units -> standardised."""
        self._check()
        mean, std = self._like(x)
        return (x - mean) / std

    def transform_(self, x: np.ndarray) -> np.ndarray:
        """Standardise a float numpy array in place (the same numbers as :meth:`transform`, no
        temporary copy: at 10^5 stations x 1 year one float32 copy is 3.5 GB); returns it."""
        self._check()
        mean, std = self._like(x)
        x -= mean
        x /= std
        return x

    def inverse_transform(self, x):
        """x: (..., C) standardised -> original units."""
        self._check()
        mean, std = self._like(x)
        return x * std + mean

    def _like(self, x):
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
            )
        return self.mean.astype(x.dtype, copy=False), self.std.astype(x.dtype, copy=False)

    def state_dict(self) -> dict:
        self._check()
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state_dict(cls, d: dict) -> MaskedStandardScaler:
        return cls(np.array(d["mean"]), np.array(d["std"]))
