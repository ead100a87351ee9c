"""UCI Beijing Multi-Site Air-Quality Data: 12 per-station CSVs + a coordinates table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.data.readers import assemble_station_data, read_stations
from stgraph.data.station_data import StationData
from stgraph.datasets.cards import DatasetCard

COMPASS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")
WIND_DEGREES = {d: 22.5 * i for i, d in enumerate(COMPASS)}


def _read_station_file(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, low_memory=False)
    need = ["year", "month", "day", "hour", "station", "wd"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected the UCI PRSA layout")
    df["time"] = pd.to_datetime(df[["year", "month", "day", "hour"]], errors="coerce")
    wd = df["wd"].map(WIND_DEGREES)
    unknown = wd.isna() & df["wd"].notna()
    if unknown.any():
        line = int(np.flatnonzero(unknown)[0]) + 2
        raise ValueError(f"{path}: line {line}, column 'wd': '{df['wd'][unknown].iloc[0]}' is not one of {COMPASS}")
    rad = np.deg2rad(wd.to_numpy(np.float64))
    df["wd_sin"], df["wd_cos"] = np.sin(rad), np.cos(rad)
    df["_file"] = str(path)
    df["_line"] = np.arange(len(df)) + 2
    return df


def load(card: DatasetCard, files: dict[str, Path]) -> StationData:
    stations = read_stations(files["stations.csv"])
    frames = [_read_station_file(files[f.path]) for f in card.files if f.path.startswith("PRSA_Data_")]
    df = pd.concat(frames, ignore_index=True)
    variables = [v["name"] for v in card.variables]
    nonneg = [v["name"] for v in card.variables if not v.get("signed", False)]
    return assemble_station_data(
        df[["station", "time", *variables, "_file", "_line"]],
        stations,
        variables,
        units={v["name"]: v["unit"] for v in card.variables},
        source=card.folder,
        freq="1h",
        nonnegative=nonneg,
        name=card.name,
    )
