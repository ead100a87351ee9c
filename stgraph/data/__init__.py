"""Station data, validation, roles, time splits, scalers and windows."""

from stgraph.data.coverage import connectivity_report
from stgraph.data.encodings import CYCLIC_FEATURES, cyclic_time_encoding
from stgraph.data.errors import DataValidationError, ValidationReport
from stgraph.data.grid import (
    GridSpec,
    block_centres,
    block_mean,
    coarse_fine_index,
    coarsen_grid,
    crop,
    grid_to_stations,
    stations_to_grid,
)
from stgraph.data.readers import read_long_table, read_stations
from stgraph.data.scalers import MaskedStandardScaler
from stgraph.data.splits import (
    StationSplit,
    bernoulli_station_split,
    explicit_split,
    kfold_station_splits,
    leave_one_station_out,
    load_split,
    random_station_split,
    save_split,
    spatial_block_split,
)
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit, chronological_time_split, month_time_split
from stgraph.data.windows import WindowDataset, Windows, window_starts

__all__ = [
    "StationData",
    "GridSpec",
    "grid_to_stations",
    "stations_to_grid",
    "block_mean",
    "block_centres",
    "crop",
    "coarse_fine_index",
    "coarsen_grid",
    "DataValidationError",
    "ValidationReport",
    "read_long_table",
    "read_stations",
    "StationSplit",
    "bernoulli_station_split",
    "random_station_split",
    "spatial_block_split",
    "explicit_split",
    "kfold_station_splits",
    "leave_one_station_out",
    "save_split",
    "load_split",
    "connectivity_report",
    "TimeSplit",
    "chronological_time_split",
    "month_time_split",
    "MaskedStandardScaler",
    "WindowDataset",
    "Windows",
    "window_starts",
    "cyclic_time_encoding",
    "CYCLIC_FEATURES",
]
