"""Regular latitude/longitude grids as station networks: every cell is a node.

A grid field is held as ``values`` (T, I, J, C) on cell centres ``lat`` (I,) and ``lon`` (J,). The
coordinates stay in the order they are stored (each strictly increasing or strictly decreasing;
ERA5 stores latitude north to south, so its row 0 is the northern-most row). Longitudes do not
wrap: a grid across the antimeridian must be given in one continuous range (e.g. 170..190).

:func:`grid_to_stations` turns a field into :class:`StationData` (node ``i * J + j`` is cell
``(i, j)``: row-major; station id ``r012c034``; ``pos`` at the cell centre; the grid in
``meta["grid"]``), :func:`stations_to_grid` turns it back. :func:`block_mean` builds the coarse grid
by f × f mean pooling, :func:`block_centres` its cell centres, :func:`coarse_fine_index` says which
coarse cell contains each fine cell (the containment graph), :func:`crop` cuts a sub-grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stgraph.data.station_data import StationData


def _pair(factor: int | tuple[int, int]) -> tuple[int, int]:
    fi, fj = (factor, factor) if np.isscalar(factor) else tuple(factor)
    if int(fi) != fi or int(fj) != fj or fi < 1 or fj < 1:
        raise ValueError(f"factor must be a positive integer or a pair of them, got {factor!r}")
    return int(fi), int(fj)


def _check_coord(name: str, c, lo: float, hi: float) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of cell centres, got shape {c.shape}")
    if not np.isfinite(c).all() or (c < lo).any() or (c > hi).any():
        raise ValueError(f"{name} must be finite degrees in [{lo}, {hi}]")
    if c.size > 1:
        d = np.diff(c)
        if not ((d > 0).all() or (d < 0).all()):
            raise ValueError(f"{name} must be strictly increasing or strictly decreasing (as stored)")
    return c


@dataclass(frozen=True, eq=False)
class GridSpec:
    """Cell centres of a regular lat/lon grid, in stored order.

    Attributes:
        lat: (I,) latitudes of the rows, degrees, strictly monotonic (either direction).
        lon: (J,) longitudes of the columns, degrees, strictly monotonic (either direction).
    """

    lat: np.ndarray
    lon: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "lat", _check_coord("lat", self.lat, -90.0, 90.0))
        object.__setattr__(self, "lon", _check_coord("lon", self.lon, -360.0, 360.0))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)

    @property
    def num_cells(self) -> int:
        return len(self.lat) * len(self.lon)

    def cell_latlon(self) -> np.ndarray:
        """(I * J, 2) latitude, longitude of every cell centre, row-major."""
        lat, lon = np.meshgrid(self.lat, self.lon, indexing="ij")
        return np.stack([lat.ravel(), lon.ravel()], axis=1)

    def crop(self, rows: slice, cols: slice) -> GridSpec:
        return GridSpec(self.lat[rows], self.lon[cols])

    def coarsen(self, factor: int | tuple[int, int]) -> GridSpec:
        """The grid of f × f blocks (see :func:`block_centres`)."""
        return GridSpec(*block_centres(self.lat, self.lon, factor))

    def to_meta(self) -> dict:
        return {"shape": self.shape, "lat": self.lat.tolist(), "lon": self.lon.tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> GridSpec:
        """From ``StationData.meta["grid"]``; the stored shape must match the coordinates."""
        spec = cls(np.asarray(meta["lat"]), np.asarray(meta["lon"]))
        if tuple(meta.get("shape", spec.shape)) != spec.shape:
            raise ValueError(f"meta['grid']: shape {tuple(meta['shape'])} does not match lat/lon {spec.shape}")
        return spec


def _check_values(values, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 4 or values.shape[1:3] != (len(lat), len(lon)):
        raise ValueError(f"values must be (T, I, J, C) with (I, J) = ({len(lat)}, {len(lon)}), got {values.shape}")
    if np.isinf(values).any():
        raise ValueError("values hold infinite numbers; missing cells must be NaN")
    return values


def crop(values, lat, lon, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-grid ``values[:, rows, cols]``.

    Args:
        values: (T, I, J, C); lat: (I,); lon: (J,). rows, cols: slices (or index arrays) of the grid.
    Returns:
        values (T, I', J', C), lat (I',), lon (J',).
    """
    spec = GridSpec(lat, lon)
    values = _check_values(values, spec.lat, spec.lon)
    sub = spec.crop(rows, cols)
    return values[:, rows][:, :, cols], sub.lat, sub.lon


def _observed(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(T, I, J, C) bool: not NaN, and True in ``mask`` where one is given (same shape)."""
    observed = ~np.isnan(values)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"mask shape {mask.shape} != values shape {values.shape}")
        observed &= mask
    return observed


def block_mean(values, factor: int | tuple[int, int], mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Coarse grid by f × f mean pooling, ignoring unobserved cells.

    Args:
        values: (T, I, J, C); NaN marks an unobserved cell. I and J must be multiples of the factor.
        factor: f (square blocks) or (f_i, f_j).
        mask: optional (T, I, J, C) bool, True where observed (combined with the NaNs).
    Returns:
        coarse (T, I/f_i, J/f_j, C): the mean of the observed fine cells in each block (float64
        accumulation, returned in the input's float dtype), NaN where a block has none;
        coarse_mask (T, I/f_i, J/f_j, C) bool: True where the block had at least one observed cell.
    """
    fi, fj = _pair(factor)
    values = np.asarray(values)
    if values.ndim != 4:
        raise ValueError(f"values must be (T, I, J, C), got shape {values.shape}")
    t, i, j, c = values.shape
    if i % fi or j % fj:
        raise ValueError(f"grid {i} x {j} is not a multiple of the block {fi} x {fj}; crop it first")
    if np.isinf(values).any():
        raise ValueError("values hold infinite numbers; missing cells must be NaN")
    observed = _observed(values, mask)
    blocks = (t, i // fi, fi, j // fj, fj, c)
    total = np.where(observed, values, 0.0).astype(np.float64).reshape(blocks).sum(axis=(2, 4))
    count = observed.reshape(blocks).sum(axis=(2, 4))
    out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    with np.errstate(invalid="ignore", divide="ignore"):
        coarse = np.where(count > 0, total / count, np.nan).astype(out_dtype)
    return coarse, count > 0


def block_centres(lat, lon, factor: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of the f × f block grid: the mean of each block's fine centres.

    Args:
        lat: (I,), lon: (J,) fine cell centres; I, J multiples of the factor.
    Returns:
        lat (I/f_i,), lon (J/f_j,), in the fine grid's order.
    """
    fi, fj = _pair(factor)
    spec = GridSpec(lat, lon)
    (i, j) = spec.shape
    if i % fi or j % fj:
        raise ValueError(f"grid {i} x {j} is not a multiple of the block {fi} x {fj}; crop it first")
    return spec.lat.reshape(-1, fi).mean(axis=1), spec.lon.reshape(-1, fj).mean(axis=1)


def coarse_fine_index(fine_shape: tuple[int, int], factor: int | tuple[int, int]) -> np.ndarray:
    """(I * J,) int64: for each fine cell (row-major), the row-major index of the coarse cell
    that contains it. ``np.stack([index, arange(I * J)])`` is the coarse -> fine containment graph."""
    fi, fj = _pair(factor)
    i, j = (int(s) for s in fine_shape)
    if i % fi or j % fj:
        raise ValueError(f"grid {i} x {j} is not a multiple of the block {fi} x {fj}")
    rows, cols = np.divmod(np.arange(i * j, dtype=np.int64), j)
    return (rows // fi) * (j // fj) + cols // fj


def cell_ids(shape: tuple[int, int]) -> list[str]:
    """Station ids ``r{row}c{col}``, zero-padded to at least 3 digits, row-major."""
    i, j = shape
    width = max(3, len(str(max(i, j) - 1)))
    rows, cols = np.divmod(np.arange(i * j), j)
    pad = lambda k: pd.Series(k).astype(str).str.zfill(width)  # noqa: E731
    return ("r" + pad(rows) + "c" + pad(cols)).tolist()


def grid_to_stations(
    values,
    lat,
    lon,
    times,
    *,
    channels: tuple[str, ...] | list[str],
    units: tuple[str, ...] | list[str],
    mask=None,
    name: str = "grid",
    meta: dict | None = None,
) -> StationData:
    """A grid field as a station network, one node per cell.

    Args:
        values: (T, I, J, C); NaN marks an unobserved cell.
        lat: (I,), lon: (J,) cell centres in stored order. times: (T,).
        mask: optional (T, I, J, C) bool, True where observed (combined with the NaNs).
    Returns:
        StationData with N = I * J nodes in row-major order (node ``i * J + j`` = cell (i, j)),
        station ids ``r012c034``, latitude/longitude at the cell centre, integer ``row``/``col``
        columns, and ``meta["grid"] = {"shape": (I, J), "lat": [...], "lon": [...]}``.
    """
    spec = GridSpec(lat, lon)
    values = _check_values(values, spec.lat, spec.lon)
    t, i, j, c = values.shape
    observed = _observed(values, mask)
    ids = cell_ids((i, j))
    latlon = spec.cell_latlon()
    rows, cols = np.divmod(np.arange(i * j), j)
    stations = pd.DataFrame(
        {"station": ids, "name": ids, "latitude": latlon[:, 0], "longitude": latlon[:, 1], "row": rows, "col": cols}
    )
    return StationData(
        values=np.where(observed, values, 0.0).reshape(t, i * j, c),
        mask=observed.reshape(t, i * j, c),
        times=times,
        stations=stations,
        channels=tuple(channels),
        units=tuple(units),
        name=name,
        meta={**(meta or {}), "grid": spec.to_meta()},
    )


def stations_to_grid(data: StationData) -> tuple[np.ndarray, np.ndarray, GridSpec]:
    """The inverse of :func:`grid_to_stations`.

    Returns:
        values (T, I, J, C) float32 with NaN where unobserved, mask (T, I, J, C) bool, the GridSpec.
    """
    if "grid" not in data.meta:
        raise ValueError(f"{data.name}: meta['grid'] is missing; not a grid dataset (see grid_to_stations)")
    spec = GridSpec.from_meta(data.meta["grid"])
    i, j = spec.shape
    if data.num_nodes != i * j or data.station_ids != cell_ids((i, j)):
        raise ValueError(f"{data.name}: nodes are not the {i} x {j} grid's cells in row-major order")
    shape = (data.num_steps, i, j, data.num_channels)
    mask = data.mask.reshape(shape)
    return np.where(mask, data.values.reshape(shape), np.nan).astype(np.float32), mask, spec


def coarsen_grid(data: StationData, factor: int | tuple[int, int]) -> StationData:
    """A grid StationData pooled by :func:`block_mean` onto the f × f block grid.

    The result's ``meta["grid"]`` is the coarse grid; ``meta["coarsened_from"]`` keeps the fine
    grid's shape and the factor. ``eval_mask`` is not carried (it names fine cells).
    """
    fi, fj = _pair(factor)
    values, mask, spec = stations_to_grid(data)
    coarse, coarse_mask = block_mean(values, (fi, fj), mask)
    coarse_spec = spec.coarsen((fi, fj))
    out = grid_to_stations(
        coarse,
        coarse_spec.lat,
        coarse_spec.lon,
        data.times,
        channels=data.channels,
        units=data.units,
        mask=coarse_mask,
        name=f"{data.name}-coarse{fi}x{fj}",
        meta={k: v for k, v in data.meta.items() if k != "grid"},
    )
    out.meta["coarsened_from"] = {"shape": spec.shape, "factor": (fi, fj)}
    return out


def coarse_fine_network(fine: StationData, factor: int | tuple[int, int]) -> StationData:
    """One network of both resolutions: the f × f block means of a grid (the coarse cells, first)
    followed by the grid's own cells (the fine ones), for DiffRecon's grid protocol.

    Returns:
        StationData with N = I_c * J_c + I * J nodes: coarse cells (ids ``coarse-r000c000``,
        row-major) then fine cells (the input's ids and order); a ``level`` column (``coarse`` /
        ``fine``); ``meta["grid"]`` the fine grid, ``meta["coarse_grid"]`` the coarse one,
        ``meta["coarse_factor"]`` the factor. Values and masks are the inputs' and their block means.
    """
    coarse = coarsen_grid(fine, factor)
    cs = coarse.stations.assign(station="coarse-" + coarse.stations["station"], level="coarse")
    cs["name"] = cs["station"]
    fs = fine.stations.assign(level="fine")
    return StationData(
        values=np.concatenate([coarse.values, fine.values], axis=1),
        mask=np.concatenate([coarse.mask, fine.mask], axis=1),
        times=fine.times,
        stations=pd.concat([cs, fs], ignore_index=True),
        channels=fine.channels,
        units=fine.units,
        name=f"{fine.name}-coarse-fine",
        meta={**fine.meta, "coarse_grid": coarse.meta["grid"], "coarse_factor": list(_pair(factor))},
    )
