"""The reanalysis as a CF-1.8 NetCDF4 file, written chunk by chunk (h5netcdf), readable with
``xarray.open_dataset``.

Layout: dims ``(time, lat, lon)`` for a grid or ``(time, point)`` for points; one variable per
target channel named by the channel with non-alphanumerics replaced by ``_`` (``PM2.5`` ->
``PM2_5``) with ``units``, ``long_name`` and ``standard_name`` where CF has one;
``<var>_std`` (Gaussian models) or ``<var>_q05/_q50/_q95`` (sampling models);
``distance_to_nearest_station`` (km, to the nearest input station); a ``crs`` variable (WGS84
latitude/longitude); global attributes ``model``, ``run_dir``, ``git_commit``, ``source_stations``,
``visible_stations_role``, ``created``, ``Conventions``.

The request is sized first (:mod:`stgraph.reanalysis.size`): above the output or memory budget,
or the disk's free space, it is refused before anything is written. Cell coordinates and distances
are made a chunk of cells at a time (:class:`GridCells`), HDF5 chunks are at most 24 steps x
128 x 128 cells, and memory holds one chunk, never the field. The file is written as
``OUT.partial`` and renamed when complete; a failed or interrupted write removes it (a leftover
from a killed process is replaced by the next run).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stgraph.data.grid import GridSpec
from stgraph.geo import EARTH_RADIUS_KM, latlon_to_xyz
from stgraph.graph.knn import knn
from stgraph.reanalysis.estimate import ReanalysisRun
from stgraph.reanalysis.size import check_size, plan_size

STANDARD_NAMES = {
    "pm2.5": "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",
    "pm25": "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",
    "pm10": "mass_concentration_of_pm10_ambient_aerosol_particles_in_air",
    "no2": "mass_concentration_of_nitrogen_dioxide_in_air",
    "so2": "mass_concentration_of_sulfur_dioxide_in_air",
    "o3": "mass_concentration_of_ozone_in_air",
    "co": "mass_concentration_of_carbon_monoxide_in_air",
    "t2m": "air_temperature",
    "temp": "air_temperature",
}


def variable_name(channel: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "_", channel)


def nearest_station_km(latlon: np.ndarray, stations: np.ndarray) -> np.ndarray:
    """(M,) great-circle km from each (M, 2) point to the nearest of (N, 2) stations (kNN on the
    unit sphere, chord converted to arc)."""
    import torch

    q = torch.as_tensor(np.asarray(latlon_to_xyz(latlon)), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(latlon_to_xyz(stations)), dtype=torch.float64)
    station, query = knn(s, q, 1)  # edge_index: row 0 indexes the stations, row 1 the queries
    chord = (q[query] - s[station]).norm(dim=1).clamp(max=2.0).numpy()
    out = np.empty(len(latlon))
    out[query.numpy()] = 2 * EARTH_RADIUS_KM * np.arcsin(chord / 2)
    return out


class GridCells:
    """The (I * J, 2) latitude/longitude of a grid's cells, row-major, made a slice at a time."""

    def __init__(self, grid: GridSpec):
        self.lat, self.lon = np.asarray(grid.lat, float), np.asarray(grid.lon, float)

    def __len__(self) -> int:
        return len(self.lat) * len(self.lon)

    def __getitem__(self, cells: slice) -> np.ndarray:
        idx = np.arange(*cells.indices(len(self)))
        i, j = np.divmod(idx, len(self.lon))
        return np.stack([self.lat[i], self.lon[j]], axis=1)


def write_reanalysis(
    rr: ReanalysisRun,
    out: str | Path,
    *,
    grid: GridSpec | None = None,
    points: pd.DataFrame | None = None,
    start: str | None = None,
    end: str | None = None,
    window_batch: int = 16,
    cell_chunk: int = 4096,
    progress: bool = True,
    max_output_gb: float = 4.0,
    max_memory_gb: float = 8.0,
) -> Path:
    """Estimate and write; exactly one of ``grid`` / ``points`` (``point, latitude, longitude``).

    Raises:
        ReanalysisTooLargeError: the request is above ``max_output_gb`` on disk, ``max_memory_gb``
            of working memory or the free disk space (nothing is written).
    """
    if (grid is None) == (points is None):
        raise ValueError("give exactly one of a grid or points")
    if cell_chunk < 1 or window_batch < 1:
        raise ValueError(f"--cell-chunk and --window-batch must be >= 1, got {cell_chunk} and {window_batch}")
    out = Path(out)
    steps = rr.steps(start, end)
    if grid is not None:
        latlon, spatial, shape = GridCells(grid), ("lat", "lon"), grid.shape
    else:
        latlon, spatial = points[["latitude", "longitude"]].to_numpy(float), ("point",)
        shape = (len(points),)
    size = plan_size(len(latlon), len(steps), len(rr.channels), window=rr.exp.cfg.data.window,
                     window_batch=window_batch, cell_chunk=cell_chunk, in_channels=rr.exp.data.num_channels,
                     visible=len(rr.visible))  # fmt: skip
    check_size(size, out, max_output_gb=max_output_gb, max_memory_gb=max_memory_gb)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".partial")
    try:
        _write(rr, tmp, latlon, spatial, shape, steps, grid, points, window_batch, cell_chunk, progress)
    except BaseException:  # an error, Ctrl-C or a full disk: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out


def _write(rr: ReanalysisRun, tmp: Path, latlon, spatial: tuple, shape: tuple, steps: np.ndarray,
           grid: GridSpec | None, points: pd.DataFrame | None, window_batch: int, cell_chunk: int,
           progress: bool) -> None:  # fmt: skip
    import h5netcdf
    import h5py

    times = pd.DatetimeIndex(rr.exp.data.times[steps])
    m = len(latlon)
    env = rr.run.read_json("env.json") if (rr.run.path / "env.json").exists() else {}
    space_chunks = tuple(min(n, 128) for n in shape) if grid is not None else (min(shape[0], 16384),)
    with h5netcdf.File(tmp, "w") as f:
        f.dimensions = {"time": len(times), **dict(zip(spatial, shape, strict=True))}
        t = f.create_variable("time", ("time",), "f8")
        t[:] = (times - times[0]).total_seconds() / 3600.0
        t.attrs.update(units=f"hours since {times[0].isoformat(sep=' ')}", standard_name="time", calendar="standard")
        if grid is not None:
            for name, values, unit, long in (("lat", grid.lat, "degrees_north", "latitude"),
                                             ("lon", grid.lon, "degrees_east", "longitude")):  # fmt: skip
                v = f.create_variable(name, (name,), "f8")
                v[:] = values
                v.attrs.update(units=unit, standard_name=long, long_name=long)
        else:
            for name, col, unit in (("lat", "latitude", "degrees_north"), ("lon", "longitude", "degrees_east")):
                v = f.create_variable(name, ("point",), "f8")
                v[:] = points[col].to_numpy(float)
                v.attrs.update(units=unit, standard_name=col, long_name=col)
            pid = f.create_variable("point_id", ("point",), h5py.string_dtype())
            pid[:] = points["point"].astype(str).to_numpy()
        crs = f.create_variable("crs", (), "i4")
        crs.attrs.update(grid_mapping_name="latitude_longitude", semi_major_axis=6378137.0,
                         inverse_flattening=298.257223563, long_name="WGS84")  # fmt: skip
        dist = f.create_variable("distance_to_nearest_station", spatial, "f4", chunks=space_chunks)
        for lo in range(0, m, max(cell_chunk, 65536)):  # a chunk of cells at a time
            hi = min(m, lo + max(cell_chunk, 65536))
            km = nearest_station_km(latlon[lo:hi], rr.visible_latlon).astype(np.float32)
            if grid is not None:
                _write_cells(dist, None, lo, hi, shape, km[None])
            else:
                dist[lo:hi] = km
        dist.attrs.update(units="km", long_name="great-circle distance to the nearest input station")
        coords = "lat lon" if grid is None else None
        variables: dict[str, object] = {}

        def make(name: str, channel: str, unit: str, what: str):
            v = f.create_variable(name, ("time", *spatial), "f4", chunks=(min(len(times), 24), *space_chunks),
                                  fillvalue=np.float32(np.nan))  # fmt: skip
            std_name = STANDARD_NAMES.get(channel.lower())
            v.attrs.update(units=unit, long_name=f"{channel} {what}", grid_mapping="crs")
            if std_name and what == "estimate":
                v.attrs["standard_name"] = std_name
            if coords:
                v.attrs["coordinates"] = coords
            return v

        written: set[str] = set()
        bar = tqdm(total=len(steps) * m, unit="cell-step", desc="reanalyse", disable=not progress)
        offset = int(steps[0])
        for out_steps, lo, arrays in rr.estimate(latlon, steps, window_batch=window_batch, cell_chunk=cell_chunk):
            rows = out_steps - offset
            for key, values in arrays.items():
                for c, (channel, unit) in enumerate(zip(rr.channels, rr.units, strict=True)):
                    base = variable_name(channel)
                    name = base if key == "mean" else f"{base}_{key}"
                    if name not in variables:
                        what = {"mean": "estimate", "std": "posterior standard deviation"}.get(
                            key, f"{key[1:]} % quantile of samples"
                        )
                        variables[name] = make(name, channel, unit, what)
                    block = values[:, :, c].astype(np.float32)  # (T_c, M_c)
                    hi = lo + block.shape[1]
                    if grid is not None:  # cells lo..hi in row-major order: write row by row of the grid
                        _write_cells(variables[name], rows, lo, hi, shape, block)
                    else:
                        variables[name][rows[0] : rows[-1] + 1, lo:hi] = block
                    written.add(name)
            bar.update(len(rows) * (arrays["mean"].shape[1]))
        bar.close()
        f.attrs.update(
            Conventions="CF-1.8",
            title=f"stgraph reanalysis of {', '.join(rr.channels)}",
            model=rr.exp.cfg.model.name,
            run_dir=str(rr.run.path.resolve()),
            git_commit=str(env.get("git_commit") or "unknown"),
            source_stations=",".join(rr.exp.data.ids(rr.visible)),
            visible_stations_role=rr.role,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            history="stgraph reanalyse",
        )


def _write_cells(var, rows: np.ndarray | None, lo: int, hi: int, shape: tuple[int, int], block: np.ndarray) -> None:
    """Write cells lo..hi (row-major over ``shape``) of time rows ``rows`` (contiguous; None: a
    variable without a time axis, ``block`` (1, hi - lo))."""
    j_count = shape[1]
    cell = lo
    while cell < hi:
        i, j = divmod(cell, j_count)
        end = min(hi, (i + 1) * j_count)
        part = block[:, cell - lo : end - lo]
        if rows is None:
            var[i, j : j + (end - cell)] = part[0]
        else:
            var[int(rows[0]) : int(rows[-1]) + 1, i, j : j + (end - cell)] = part
        cell = end
