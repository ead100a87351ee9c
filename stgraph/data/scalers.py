"""Per-channel standardisation fitted only on what training may see."""

from __future__ import annotations

import numpy as np
import torch

from stgraph.data.station_data import StationData

FIT_BLOCK_CELLS = 1 << 24  # cells per block of steps while fitting (a 128 MB float64 block)


class MaskedStandardScaler:
    """Standardise each channel with a mean and std computed over observed cells of the
    train-role stations in the train period only. Unobserved cells never enter the statistics.

    ``per_station=True`` keeps one mean and std per (station, channel) instead (CSDI's and PriSTI's
    normalisation on AQI-36): ``mean``/``std`` are then (N, C) over the dataset's nodes, fitted on
    each train-role station's own train-period cells; rows of other stations are NaN, so it only
    applies where every station a model reads is train-role (``impute``). Arrays passed to
    :meth:`transform` and :meth:`inverse_transform` then hold either every node on their
    second-to-last axis or the ``nodes`` given.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, per_station: bool = False):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.per_station = bool(per_station)

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
        axes = 0 if self.per_station else (0, 1)  # sums per (station, channel) or per channel

        def block(t):
            return data.values[np.ix_(t, stations)].astype(np.float64), data.mask[np.ix_(t, stations)]  # (T_b, N', C)

        count = 0
        total = 0.0
        for t in blocks:
            x, m = block(t)
            count = count + m.sum(axis=axes)
            total = total + (x * m).sum(axis=axes)
        count = np.broadcast_to(np.asarray(count, dtype=np.int64), np.shape(total))
        if self.per_station:
            few = np.argwhere(count < 2)
            if len(few):
                n, c = few[0]
                raise ValueError(
                    f"station '{data.station_ids[stations[n]]}' has fewer than 2 observed training values of "
                    f"channel '{data.channels[c]}': cannot scale it per station (use data.scaler: channel)"
                )
        else:
            empty = [data.channels[c] for c in np.flatnonzero(count < 2)]
            if empty:
                raise ValueError(f"channels {empty} have fewer than 2 observed training values: cannot scale")
        mean = total / count
        var = 0.0
        for t in blocks:
            x, m = block(t)
            var = var + (((x - mean) * m) ** 2).sum(axis=axes)
        std = np.sqrt(var / count)
        if self.per_station:
            flat = np.argwhere(std == 0)
            if len(flat):
                n, c = flat[0]
                raise ValueError(
                    f"channel '{data.channels[c]}' is constant at station '{data.station_ids[stations[n]]}' in the "
                    "training period: cannot scale it per station (use data.scaler: channel)"
                )
            full_mean = np.full((data.num_nodes, data.num_channels), np.nan)
            full_std = np.full((data.num_nodes, data.num_channels), np.nan)
            full_mean[stations], full_std[stations] = mean, std
            mean, std = full_mean, full_std
        else:
            flat = [data.channels[c] for c in np.flatnonzero(std == 0)]
            if flat:
                raise ValueError(f"channels {flat} are constant on the training stations: cannot scale")
        self.mean, self.std = mean, std
        return self

    def stats(self, channels=None, nodes=None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of ``channels`` (default all), broadcastable against (..., N', C'): (C',)
        per channel, (N', C') per station (``nodes``: the N' node indices, default every node)."""
        self._check()
        mean, std = self.mean, self.std
        if channels is not None:
            mean, std = mean[..., channels], std[..., channels]
        if self.per_station and nodes is not None:
            mean, std = mean[np.asarray(nodes)], std[np.asarray(nodes)]
        return mean, std

    def _check(self) -> None:
        if self.mean is None:
            raise RuntimeError("MaskedStandardScaler is not fitted")

    def transform(self, x, nodes=None):
        """x: (..., C) numpy array or tensor in original units -> standardised (per station:
        (..., N', C) with ``nodes`` the N' node indices, default every node)."""
        self._check()
        mean, std = self._like(x, nodes)
        return (x - mean) / std

    def transform_(self, x: np.ndarray, nodes=None) -> np.ndarray:
        """Standardise a float numpy array in place (the same numbers as :meth:`transform`, no
        temporary copy: at 10^5 stations x 1 year one float32 copy is 3.5 GB); returns it."""
        self._check()
        mean, std = self._like(x, nodes)
        x -= mean
        x /= std
        return x

    def inverse_transform(self, x, nodes=None):
        """x: (..., C) standardised -> original units (per station as :meth:`transform`)."""
        self._check()
        mean, std = self._like(x, nodes)
        return x * std + mean

    def _like(self, x, nodes=None):
        mean, std = self.stats(nodes=nodes)
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(std, dtype=x.dtype, device=x.device),
            )
        return mean.astype(x.dtype, copy=False), std.astype(x.dtype, copy=False)

    def state_dict(self) -> dict:
        self._check()
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "per_station": self.per_station}

    @classmethod
    def from_state_dict(cls, d: dict) -> MaskedStandardScaler:
        return cls(
            np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64), d.get("per_station", False)
        )
