"""China's national monitoring station list: coordinates only (T = 0, C = 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.data.errors import ValidationReport
from stgraph.data.readers import read_stations
from stgraph.data.station_data import StationData
from stgraph.datasets.cards import DatasetCard


def load(card: DatasetCard, files: dict[str, Path]) -> StationData:
    path = files["station_info.csv"]
    stations = read_stations(
        pd.read_csv(path, dtype={"ID": str}),
        station_column="ID",
        lat_column="lat",
        lon_column="lon",
        name_column="stations_en_name",
        duplicate_coordinates="keep",
    )
    report = ValidationReport(source=str(path))
    shared = stations.duplicated(["latitude", "longitude"], keep=False)
    report.add("stations sharing coordinates with another (kept)", int(shared.sum()))
    n = len(stations)
    return StationData(
        values=np.zeros((0, n, 0), np.float32),
        mask=np.zeros((0, n, 0), bool),
        times=np.zeros(0, "datetime64[ns]"),
        stations=stations,
        channels=(),
        units=(),
        name=card.name,
        meta={"report": report.to_dict()},
    )
