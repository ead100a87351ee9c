"""AQI-36: 36 Beijing stations, hourly PM2.5, with the official evaluation mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.data.readers import assemble_station_data, read_stations
from stgraph.data.station_data import StationData
from stgraph.datasets.cards import DatasetCard


def _read_wide(path: Path, stations: pd.DataFrame, card: DatasetCard) -> StationData:
    wide = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "datetime" not in wide.columns:
        raise ValueError(f"{path}: no 'datetime' column; expected datetime + one column per sensor")
    wide["_line"] = np.arange(len(wide)) + 2
    long = wide.melt(id_vars=["datetime", "_line"], var_name="station", value_name="PM2.5")
    long["time"] = pd.to_datetime(long["datetime"], format="%Y/%m/%d %H:%M:%S", errors="coerce")
    long["PM2.5"] = long["PM2.5"].replace("", np.nan)
    long["_file"] = str(path)
    return assemble_station_data(
        long[["station", "time", "PM2.5", "_file", "_line"]],
        stations,
        ["PM2.5"],
        units={"PM2.5": card.variables[0]["unit"]},
        source=str(path),
        freq="1h",
        name=card.name,
    )


def load(card: DatasetCard, files: dict[str, Path]) -> StationData:
    coords = pd.read_csv(files["pm25_latlng.txt"], dtype={"sensor_id": str})
    stations = read_stations(coords, station_column="sensor_id")
    ground = _read_wide(files["pm25_ground.txt"], stations, card)
    released = _read_wide(files["pm25_missing.txt"], stations, card)
    if not np.array_equal(ground.times, released.times):
        raise ValueError("pm25_ground.txt and pm25_missing.txt cover different time stamps")
    extra = released.mask & ~ground.mask
    if extra.any():
        raise ValueError(f"pm25_missing.txt has {int(extra.sum())} values where pm25_ground.txt has none")
    ground.eval_mask = ground.mask & ~released.mask
    ground.meta["protocol"] = dict(card.protocol)
    ground.meta["released_mask_missing_rate"] = float(1 - released.mask.mean())
    return ground
