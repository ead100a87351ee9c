"""Leak-free training inputs: what a model may see while it trains.

Only train-role stations in the train period reach the scaler; only train-role stations'
values reach the training windows. The poisoning test (tests/data/test_poisoning.py) holds this to bit-identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stgraph.data.scalers import MaskedStandardScaler
from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit
from stgraph.data.windows import WindowDataset, window_starts


@dataclass
class TrainingInputs:
    """Attributes:
    stations: (N_train,) node indices of the training windows' columns: the train-role stations in
        split order (plus, for a protocol with seen targets, those targets after them).
    scaler: fitted on those stations in the train period.
    windows: standardised windows over those stations in the train period.

    No graph: a model builds its graphs from the positions in each batch (``pos_src``), which a
    hidden station reaches only as a target position, never with values.
    """

    stations: np.ndarray
    scaler: MaskedStandardScaler
    windows: WindowDataset


def build_training_inputs(
    data: StationData,
    split: StationSplit,
    time_split: TimeSplit,
    *,
    window: int,
    horizon: int,
    stride: int = 1,
    window_nodes: np.ndarray | None = None,
    per_station_scaler: bool = False,
) -> TrainingInputs:
    """``window_nodes``: nodes to cut training windows from (default: the train-role stations); a
    protocol whose targets are seen in the train period (the grid protocol's fine cells) adds them.
    The scaler always comes from the train-role stations (``per_station_scaler``:
    one mean and std per train-role station, see :class:`MaskedStandardScaler`)."""
    stations = split.indices(data, "train")
    period = time_split.period("train")
    scaler = MaskedStandardScaler(per_station=per_station_scaler).fit(data, stations, period)
    nodes = stations if window_nodes is None else np.asarray(window_nodes)
    scaled = scaler.transform_(data.values[:, nodes], nodes)  # (T, N_window, C): only these columns, one copy
    starts = window_starts(period, window, horizon, stride)
    windows = WindowDataset(scaled, data.mask[:, nodes], data.times, starts, window, horizon)
    return TrainingInputs(stations=nodes, scaler=scaler, windows=windows)
