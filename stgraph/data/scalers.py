"""Per-channel standardisation fitted only on what training may see."""

from __future__ import annotations

import numpy as np
import torch

from stgraph.data.station_data import StationData


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
        x = data.values[np.ix_(t_idx, stations)].astype(np.float64)  # (T', N', C)
        m = data.mask[np.ix_(t_idx, stations)]
        count = m.sum(axis=(0, 1))
        empty = [data.channels[c] for c in np.flatnonzero(count < 2)]
        if empty:
            raise ValueError(f"channels {empty} have fewer than 2 observed training values: cannot scale")
        mean = (x * m).sum(axis=(0, 1)) / count
        var = (((x - mean) * m) ** 2).sum(axis=(0, 1)) / count
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
