"""ERA5 2 m temperature over the UK and Ireland (March 2019): the first grid dataset.

The GRIB file (card ``datasets/era5-uk-t2m.yaml``) holds 744 hourly fields on a regular 0.25°
grid of 33 x 49 cells, latitude stored north to south (58.0 .. 50.0° N), longitude west to east
(10.0° W .. 2.0° E). It is read through xarray's ``cfgrib`` engine with the index file disabled
(``indexpath=""``), so nothing is written beside the (possibly read-only) data file.

What the loader returns:

- fine grid: the 32 x 48 crop = rows 0..31 and columns 0..47 of the stored grid, i.e. the
  southern-most row (50.0° N) and the eastern-most column (2.0° E) are dropped, so the grid
  divides into 4 x 4 blocks. Row 0 is the northern-most row (58.0° N), as stored; column 0 the
  western-most (10.0° W). Node ``i * 48 + j`` is cell (i, j) (see :mod:`stgraph.data.grid`).
- one channel ``t2m`` in kelvin (kept in K, as stored; subtract 273.15 for °C).
- coarse grid (``load_era5_uk(coarse_factor=4)``): 8 x 12, each cell the mean of its 4 x 4 fine
  block, centred at the mean of the block's fine centres.
- time split: DiffRecon's 2:1:1 in time order (:func:`era5_uk_time_split`: first half train, next
  quarter validation, last quarter test = ``chronological_time_split(T, val=0.25, test=0.25)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stgraph.data.grid import coarsen_grid, grid_to_stations
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit, chronological_time_split
from stgraph.datasets.cards import DatasetCard, all_cards
from stgraph.datasets.resolve import provenance, resolve_files

NAME = "era5-uk-t2m"
GRIB_FILE = "era5-2mt-2019-03-uk.grib"
GRIB_INSTALL = "pip install 'cfgrib>=0.9.10' 'eccodes>=2.0' 'xarray>=2023.1'"


def read_grib_t2m(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole stored field of ``t2m``.

    Returns:
        values (T, I, J, 1) float32 in K (NaN where the GRIB marks a missing value), lat (I,),
        lon (J,) in stored order, times (T,) datetime64[ns] (the valid time of each field).
    """
    try:
        import xarray as xr
    except ImportError as e:
        raise ImportError(f"reading {path} needs xarray and cfgrib: {GRIB_INSTALL}") from e
    try:
        ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    except ValueError as e:  # xarray: "unrecognized engine cfgrib" when cfgrib/eccodes are absent
        raise ImportError(f"reading {path} needs the cfgrib engine ({e}); install: {GRIB_INSTALL}") from e
    with ds:
        if "t2m" not in ds.data_vars:
            raise ValueError(f"{path}: no variable 't2m'; found {sorted(ds.data_vars)}")
        da = ds["t2m"]
        if da.dims != ("time", "latitude", "longitude"):
            raise ValueError(f"{path}: t2m has dimensions {da.dims}; expected (time, latitude, longitude)")
        if da.attrs.get("units") != "K":
            raise ValueError(f"{path}: t2m is in {da.attrs.get('units')!r}; expected 'K'")
        times = ds["valid_time"] if "valid_time" in ds.coords and ds["valid_time"].dims == ("time",) else ds["time"]
        return (
            da.values.astype(np.float32)[..., None],
            ds["latitude"].values.astype(np.float64),
            ds["longitude"].values.astype(np.float64),
            times.values.astype("datetime64[ns]"),
        )


def load(card: DatasetCard, files: dict[str, Path]) -> StationData:
    """The fine grid (the card's ``protocol.fine_shape`` crop from the north-west corner)."""
    path = files[GRIB_FILE]
    values, lat, lon, times = read_grib_t2m(path)
    rows, cols = (int(s) for s in card.protocol["fine_shape"])
    stored = values.shape[1:3]
    if stored[0] < rows or stored[1] < cols:
        raise ValueError(f"{path}: grid {stored[0]} x {stored[1]} is smaller than the crop {rows} x {cols}")
    if not (lat[0] > lat[-1] and lon[0] < lon[-1]):
        raise ValueError(f"{path}: expected latitude stored north to south and longitude west to east")
    variable = card.variables[0]
    return grid_to_stations(
        values[:, :rows, :cols],
        lat[:rows],
        lon[:cols],
        times,
        channels=(variable["name"],),
        units=(variable["unit"],),
        name=card.name,
        meta={
            "source": str(path),
            "crop": {"stored_shape": list(stored), "rows": [0, rows], "cols": [0, cols], "row0": "north"},
            "protocol": dict(card.protocol),
        },
    )


def load_era5_uk(
    data_dir: str | Path | None = None, *, coarse_factor: int | None = None, download: bool = True
) -> StationData:
    """The fine 32 x 48 grid, or with ``coarse_factor=4`` the coarse 8 x 12 grid (4 x 4 block means).

    Files are found and verified as for every built-in dataset (:func:`stgraph.datasets.load_dataset`).
    """
    card = all_cards()[NAME]
    files = resolve_files(card, data_dir, download=download)
    data = load(card, files)
    data.meta.update(provenance(card, files))
    return data if coarse_factor in (None, 1) else coarsen_grid(data, coarse_factor)


def era5_uk_time_split(num_steps: int, *, gap: int = 0) -> TimeSplit:
    """DiffRecon's 2:1:1 split in time order: train = first half, val = next quarter, test = last
    quarter (fractions from the card's protocol); ``gap`` steps left out between periods."""
    protocol = all_cards()[NAME].protocol
    return chronological_time_split(num_steps, val=float(protocol["val"]), test=float(protocol["test"]), gap=gap)
