"""StationData: the measured signal of a monitoring network, small and typed.

It holds values, what was observed, when and where. It does not window, scale or build graphs;
those are separate steps (see ``stgraph.data.windows``, ``stgraph.data.scalers``,
``stgraph.graph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

STATION_COLUMNS = ("station", "name", "latitude", "longitude")


@dataclass(eq=False)
class StationData:
    """A network's measurements on a regular time grid.

    Attributes:
        values: (T, N, C) float32. Cells where ``mask`` is False hold 0 and carry no information.
        mask: (T, N, C) bool, True where a value was observed.
        times: (T,) ``datetime64[ns]``, strictly increasing with a constant step.
        stations: table with one row per node, in node order: ``station`` (str id), ``name``,
            ``latitude``, ``longitude`` (degrees, WGS84) and any static covariates.
        channels: C channel names.
        units: C units, one per channel.
        name: dataset name.
        eval_mask: optional (T, N, C) bool of the dataset's official evaluation targets
            (AQI-36: observed in the ground truth, hidden in the released input).
        meta: provenance: source files, checksums, reader report.
    """

    values: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    stations: pd.DataFrame
    channels: tuple[str, ...]
    units: tuple[str, ...]
    name: str = "custom"
    eval_mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.times = np.asarray(self.times, dtype="datetime64[ns]")
        self.channels, self.units = tuple(self.channels), tuple(self.units)
        if self.values.ndim != 3:
            raise ValueError(f"values must be (T, N, C), got shape {self.values.shape}")
        t, n, c = self.values.shape
        if self.mask.shape != self.values.shape:
            raise ValueError(f"mask shape {self.mask.shape} != values shape {self.values.shape}")
        if self.eval_mask is not None:
            self.eval_mask = np.asarray(self.eval_mask, dtype=bool)
            if self.eval_mask.shape != self.values.shape:
                raise ValueError(f"eval_mask shape {self.eval_mask.shape} != values shape {self.values.shape}")
        if self.times.shape != (t,):
            raise ValueError(f"times must have shape ({t},), got {self.times.shape}")
        if t > 1 and not (np.diff(self.times) > np.timedelta64(0)).all():
            raise ValueError("times must be strictly increasing")
        missing = [col for col in STATION_COLUMNS if col not in self.stations.columns]
        if missing:
            raise ValueError(f"stations table lacks columns {missing}; expected {list(STATION_COLUMNS)}")
        if len(self.stations) != n:
            raise ValueError(f"stations table has {len(self.stations)} rows for N={n} nodes")
        if len(self.channels) != c or len(self.units) != c:
            raise ValueError(f"{c} channels need {c} names and units, got {len(self.channels)} and {len(self.units)}")
        self.stations = self.stations.reset_index(drop=True)
        if self.stations["station"].duplicated().any():
            raise ValueError("station ids must be unique")
        self.values[~self.mask] = 0.0

    # sizes ---------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return self.values.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.values.shape[1]

    @property
    def num_channels(self) -> int:
        return self.values.shape[2]

    @property
    def station_ids(self) -> list[str]:
        return self.stations["station"].astype(str).tolist()

    def ids(self, nodes) -> np.ndarray:
        """(len(nodes),) str station ids of the node indices ``nodes``, in one vectorised lookup
        (``station_ids[i]`` in a loop rebuilds the whole list per station)."""
        return np.asarray(self.stations["station"].astype(str).to_numpy()[np.asarray(nodes, dtype=np.int64)], dtype=str)

    @property
    def latlon(self) -> np.ndarray:
        """(N, 2) float64 latitude, longitude in degrees."""
        return self.stations[["latitude", "longitude"]].to_numpy(np.float64)

    @property
    def freq(self) -> pd.Timedelta | None:
        return pd.Timedelta(self.times[1] - self.times[0]) if self.num_steps > 1 else None

    def channel_index(self, name: str) -> int:
        if name not in self.channels:
            raise KeyError(f"unknown channel '{name}'; available: {list(self.channels)}")
        return self.channels.index(name)

    def station_index(self, ids) -> np.ndarray:
        """Node indices of station ids, in the order given; unknown ids raise KeyError."""
        lookup = {s: i for i, s in enumerate(self.station_ids)}
        unknown = [s for s in ids if str(s) not in lookup]
        if unknown:
            raise KeyError(f"unknown station ids {unknown[:5]}; {self.name} has {self.num_nodes} stations")
        return np.array([lookup[str(s)] for s in ids], dtype=np.int64)

    # selections ----------------------------------------------------------------------------
    def select_stations(self, ids) -> StationData:
        """A copy restricted to the given station ids (in that order)."""
        idx = self.station_index(ids)
        return replace(
            self,
            values=self.values[:, idx].copy(),
            mask=self.mask[:, idx].copy(),
            stations=self.stations.iloc[idx].reset_index(drop=True),
            eval_mask=None if self.eval_mask is None else self.eval_mask[:, idx].copy(),
            meta=dict(self.meta),
        )

    def select_channels(self, names) -> StationData:
        """A copy restricted to the given channel names (in that order)."""
        idx = [self.channel_index(c) for c in names]
        return replace(
            self,
            values=self.values[:, :, idx].copy(),
            mask=self.mask[:, :, idx].copy(),
            channels=tuple(self.channels[i] for i in idx),
            units=tuple(self.units[i] for i in idx),
            eval_mask=None if self.eval_mask is None else self.eval_mask[:, :, idx].copy(),
            meta=dict(self.meta),
        )

    def select_times(self, start=None, end=None) -> StationData:
        """A copy restricted to ``start <= time < end`` (timestamps or strings)."""
        lo = 0 if start is None else int(np.searchsorted(self.times, np.datetime64(pd.Timestamp(start))))
        hi = self.num_steps if end is None else int(np.searchsorted(self.times, np.datetime64(pd.Timestamp(end))))
        sl = slice(lo, hi)
        return replace(
            self,
            values=self.values[sl].copy(),
            mask=self.mask[sl].copy(),
            times=self.times[sl].copy(),
            eval_mask=None if self.eval_mask is None else self.eval_mask[sl].copy(),
            meta=dict(self.meta),
        )

    # summaries -----------------------------------------------------------------------------
    def missing_rate(self) -> pd.Series:
        """Fraction of unobserved cells per channel."""
        if self.num_steps == 0:
            return pd.Series(dtype=float)
        rate = 1.0 - self.mask.mean(axis=(0, 1))
        return pd.Series(rate, index=list(self.channels), name="missing_rate")

    def __repr__(self) -> str:
        return (
            f"StationData(name={self.name!r}, num_steps={self.num_steps}, num_nodes={self.num_nodes}, "
            f"channels={list(self.channels)})"
        )
