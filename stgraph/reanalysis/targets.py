"""Where a reanalysis estimates: the cells of a regular lat/lon grid, or points from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.data.errors import DataValidationError
from stgraph.data.grid import GridSpec
from stgraph.data.readers import read_table

MAX_GRID_CELLS = 1e9


def grid_targets(spec: str) -> GridSpec:
    """``"LAT0,LAT1,LON0,LON1,RES"`` (degrees) -> the grid of cell centres LAT0 + RES/2, ... < LAT1."""
    try:
        lat0, lat1, lon0, lon1, res = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(
            f"--grid {spec!r}: expected LAT0,LAT1,LON0,LON1,RES in degrees, e.g. 39.6,40.4,115.9,116.8,0.01"
        ) from None
    if not all(np.isfinite([lat0, lat1, lon0, lon1, res])):
        raise ValueError(f"--grid {spec!r}: every value must be a finite number of degrees")
    if res <= 0:
        raise ValueError(f"--grid {spec!r}: the resolution must be > 0 degrees")
    if not (-90 <= lat0 <= 90 and -90 <= lat1 <= 90 and -180 <= lon0 <= 360 and -180 <= lon1 <= 360):
        raise ValueError(f"--grid {spec!r}: latitudes must lie in [-90, 90] and longitudes in [-180, 360]")
    cells = max(0.0, (lat1 - lat0) / res) * max(0.0, (lon1 - lon0) / res)
    if cells > MAX_GRID_CELLS:  # before any array is made; the size check then weighs steps and budgets
        raise ValueError(
            f"--grid {spec!r}: about {cells:.3g} cells, above the {MAX_GRID_CELLS:.0e} a reanalysis can address; "
            "coarsen the resolution or narrow the box"
        )
    lat = np.arange(lat0 + res / 2, lat1, res)
    lon = np.arange(lon0 + res / 2, lon1, res)
    if len(lat) == 0 or len(lon) == 0:
        raise ValueError(
            f"--grid {spec!r}: the grid has zero cells ({len(lat)} latitudes x {len(lon)} longitudes); "
            "need LAT0 < LAT1 and LON0 < LON1, each span at least one resolution step"
        )
    return GridSpec(lat, lon)


def read_points(path: str | Path) -> pd.DataFrame:
    """A CSV/Parquet of points: ``point`` (id; optional, default the row number), ``latitude``,
    ``longitude`` (or lat/lon). Bad rows are an error naming the file line."""
    df = read_table(path).reset_index(drop=True)
    cols = {c.lower(): c for c in df.columns}
    lat = next((cols[c] for c in ("latitude", "lat") if c in cols), None)
    lon = next((cols[c] for c in ("longitude", "lon", "lng") if c in cols), None)
    if lat is None or lon is None:
        raise DataValidationError(
            "missing latitude/longitude columns",
            file=str(path),
            expected=f"point,latitude,longitude; found {list(df.columns)}",
        )
    ids = df[cols["point"]].astype(str) if "point" in cols else pd.Series(np.arange(len(df)).astype(str))
    la, lo = pd.to_numeric(df[lat], errors="coerce"), pd.to_numeric(df[lon], errors="coerce")
    bad = ~(la.between(-90, 90) & lo.between(-360, 360))
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()[:10]
        raise DataValidationError(
            f"latitude/longitude missing, not numbers or out of range at lines {rows}", file=str(path),
            expected="latitude in [-90, 90] and longitude in [-360, 360] degrees on every row",
        )  # fmt: skip
    if ids.duplicated().any():
        raise DataValidationError(f"duplicate point ids {ids[ids.duplicated()].unique()[:5].tolist()}", file=str(path),
                                  expected="one row per point")  # fmt: skip
    if len(df) == 0:
        raise DataValidationError("no points", file=str(path), expected="at least one row")
    return pd.DataFrame({"point": ids.to_numpy(), "latitude": la.to_numpy(float), "longitude": lo.to_numpy(float)})
