"""Read station tables and long-format measurements into :class:`StationData`, validating as we go.

Long format: one row per (station, time) with one column per variable, in CSV or Parquet. The
stations table gives ``station, latitude, longitude`` (+ optional ``name`` and static covariates),
or the long file itself carries latitude/longitude columns.

Policy, stated once: structural problems are errors (missing columns, unparseable or duplicate
(station, time) rows, unknown stations, non-numeric values, coordinates out of range or shared by
two stations, time stamps off a regular grid unless ``irregular="resample"``). Empty cells are
missing values, which is normal. Negative values in non-negative channels are masked and counted
(``negative="raise"`` refuses them). Every repair is counted in ``data.meta["report"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.data.errors import DataValidationError, ValidationReport
from stgraph.data.station_data import StationData

LAT_NAMES = ("latitude", "lat")
# channels that cannot be negative by default: concentrations, counts, precipitation (matched on the name)
NONNEGATIVE_NAMES = re.compile(
    r"^(pm[_.]?(1|2[._]?5|10)|no[x2]?|so2|o3|co2?|nh3|bc|aqi|voc|benzene|pm\w*|rain\w*|precip\w*|humidity|rh)$",
    re.I,
)
LON_NAMES = ("longitude", "lon", "lng")


def read_table(path: str | Path, *, text_columns: tuple[str, ...] = (), encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV or Parquet file; the suffix decides.

    Args:
        path: The file.
        text_columns: Columns read as text whatever they look like (ids: ``007`` stays ``007``).
        encoding: Text encoding of a CSV (``--encoding latin-1`` for a file that is not UTF-8).

    Raises:
        DataValidationError: an empty file, a file with a header but no rows, a CSV that is not in
            ``encoding``, a file pandas cannot parse; each names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise DataValidationError("is a folder", file=str(path), expected="a .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".gz"):
        try:
            df = pd.read_csv(path, low_memory=False, dtype={c: str for c in text_columns}, encoding=encoding)
        except pd.errors.EmptyDataError:
            raise DataValidationError("the file is empty", file=str(path),
                                      expected="a header line and data rows") from None  # fmt: skip
        except UnicodeDecodeError as e:
            raise DataValidationError(
                f"not valid {encoding} text ({e.reason} at byte {e.start})", file=str(path),
                expected="a UTF-8 file, or the file's encoding given with --encoding (config: data.reader: "
                "{encoding: latin-1})",
            ) from None  # fmt: skip
        except LookupError:
            raise DataValidationError(f"unknown text encoding {encoding!r}", file=str(path),
                                      expected="an encoding such as utf-8, latin-1, cp1252, gbk") from None  # fmt: skip
        except (pd.errors.ParserError, ValueError) as e:
            raise DataValidationError(f"cannot parse the CSV: {str(e).strip()}", file=str(path),
                                      expected="comma-separated values with one header line") from None  # fmt: skip
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow's errors have no common base
            raise DataValidationError(f"cannot read the Parquet file: {e}", file=str(path),
                                      expected="a Parquet file") from None  # fmt: skip
        for c in text_columns:
            if c in df.columns and not pd.api.types.is_string_dtype(df[c]):
                df[c] = df[c].astype("string").astype(object)
    else:
        raise DataValidationError(
            f"unsupported file type '{suffix}'", file=str(path), expected="a .csv or .parquet file"
        )
    if len(df) == 0:
        raise DataValidationError("the file has a header but no data rows", file=str(path),
                                  expected=f"rows under the header {list(df.columns)}")  # fmt: skip
    return df


def default_nonnegative(variables: list[str]) -> list[str]:
    """The variables that cannot be negative by their name (pollutant concentrations, AQI,
    precipitation, humidity); temperatures, pressures, dew points and the rest may be."""
    return [v for v in variables if NONNEGATIVE_NAMES.match(str(v).strip().replace(" ", ""))]


def _lines(df: pd.DataFrame, bad: np.ndarray) -> tuple[str | None, list[int]]:
    """File and 1-based line numbers of the offending rows (the file of the first offender)."""
    idx = np.flatnonzero(bad)
    files = df["_file"].to_numpy() if "_file" in df else None
    lines = df["_line"].to_numpy() if "_line" in df else np.arange(len(df)) + 2
    if files is not None:
        idx = idx[files[idx] == files[idx[0]]]
    return (None if files is None else str(files[idx[0]])), [int(x) for x in lines[idx]]


def _fail(
    df: pd.DataFrame, bad: np.ndarray, what: str, *, source: str, column: str | None = None, expected: str | None = None
) -> None:
    file, lines = _lines(df, bad)
    raise DataValidationError(what, file=file or source, row=lines, column=column, expected=expected)


def _find_column(columns, names) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def read_stations(
    source: str | Path | pd.DataFrame,
    *,
    station_column: str = "station",
    lat_column: str | None = None,
    lon_column: str | None = None,
    name_column: str | None = None,
    duplicate_coordinates: str = "raise",
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read and validate a stations table.

    Args:
        source: path to a CSV/Parquet file or a DataFrame.
        station_column: column of unique station ids.
        lat_column, lon_column: coordinate columns in degrees (default: ``latitude``/``lat`` and
            ``longitude``/``lon``/``lng``).
        name_column: optional display-name column (default ``name`` if present, else the id).
        duplicate_coordinates: ``"raise"`` (default) refuses two stations at identical
            coordinates; ``"keep"`` accepts them (graphs then see zero distances).
    Returns:
        DataFrame with ``station, name, latitude, longitude`` first, then every other column as a
        static covariate, in file order.
    """
    label = "<stations DataFrame>" if isinstance(source, pd.DataFrame) else str(source)
    df = source.copy() if isinstance(source, pd.DataFrame) else read_table(source, text_columns=(station_column,),
                                                                            encoding=encoding)  # fmt: skip
    df = df.reset_index(drop=True)
    lat_column = lat_column or _find_column(df.columns, LAT_NAMES)
    lon_column = lon_column or _find_column(df.columns, LON_NAMES)
    for role, col in (("station id", station_column), ("latitude", lat_column), ("longitude", lon_column)):
        if col is None or col not in df.columns:
            raise DataValidationError(
                f"missing {role} column '{col or role}'",
                file=label,
                expected=f"columns including {station_column}, latitude, longitude; found {list(df.columns)}",
            )
    ids = df[station_column].astype("string").str.strip()
    empty = ids.isna() | (ids == "")
    if empty.any():
        _fail(df, empty.to_numpy(), "empty station id", source=label, column=station_column)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        _fail(
            df,
            dup,
            f"station id '{ids[dup].iloc[0]}' appears more than once",
            source=label,
            column=station_column,
            expected="one row per station",
        )
    coords = {}
    for col, lo, hi in ((lat_column, -90.0, 90.0), (lon_column, -180.0, 180.0)):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna().to_numpy()
        if bad.any():
            _fail(
                df,
                bad,
                f"coordinate '{df[col][bad].iloc[0]}' is not a number",
                source=label,
                column=col,
                expected=f"degrees in [{lo}, {hi}]",
            )
        out = ((num < lo) | (num > hi)).to_numpy()
        if out.any():
            _fail(
                df,
                out,
                f"coordinate {num[out].iloc[0]} out of range",
                source=label,
                column=col,
                expected=f"degrees in [{lo}, {hi}]",
            )
        coords[col] = num.astype(np.float64)
    same = pd.DataFrame(coords).duplicated(keep=False).to_numpy()
    if same.any() and duplicate_coordinates == "raise":
        lat0, lon0 = coords[lat_column][same].iloc[0], coords[lon_column][same].iloc[0]
        pair = (coords[lat_column] == lat0) & (coords[lon_column] == lon0)
        _fail(
            df,
            pair.to_numpy(),
            f"stations {ids[pair].tolist()} share the coordinates ({lat0}, {lon0})",
            source=label,
            expected=(
                "distinct coordinates (pass duplicate_coordinates='keep' to allow; command line: "
                "--duplicate-coordinates keep; config: data.reader: {duplicate_coordinates: keep})"
            ),
        )
    if duplicate_coordinates not in ("raise", "keep"):
        raise ValueError(f"duplicate_coordinates must be 'raise' or 'keep', got {duplicate_coordinates!r}")
    name_column = name_column or ("name" if "name" in df.columns else None)
    out = pd.DataFrame(
        {
            "station": ids.astype(str).to_numpy(),
            "name": df[name_column].astype(str).to_numpy() if name_column else ids.astype(str).to_numpy(),
            "latitude": coords[lat_column].to_numpy(),
            "longitude": coords[lon_column].to_numpy(),
        }
    )
    used = {station_column, lat_column, lon_column, name_column, "_file", "_line"}
    for col in df.columns:
        if col not in used:
            out[col] = df[col].to_numpy()
    return out


def read_long_table(
    path: str | Path,
    stations: str | Path | pd.DataFrame | None = None,
    *,
    station_column: str = "station",
    time_column: str = "time",
    variables: list[str] | None = None,
    units: dict[str, str] | None = None,
    freq: str | None = None,
    irregular: str = "raise",
    negative: str = "mask",
    nonnegative: list[str] | None = None,
    duplicate_coordinates: str = "raise",
    encoding: str = "utf-8",
    name: str | None = None,
) -> StationData:
    """Read long-format measurements (``station, time, <variables>``) into :class:`StationData`.

    Args:
        path: CSV or Parquet file.
        stations: stations table (path or DataFrame); if None, ``path`` must carry latitude and
            longitude columns, constant per station.
        variables: channels to read (default: every column but station, time and coordinates).
        units: unit per variable (default ``""``).
        freq: time step such as ``"1h"``; default: the most common step between time stamps.
        irregular: ``"raise"`` refuses time stamps off the regular grid; ``"resample"`` floors
            them onto it and averages rows that meet (counted in the report).
        negative: ``"mask"`` masks negative values of non-negative channels (counted);
            ``"raise"`` refuses them.
        nonnegative: channels that cannot be negative (default: those named like a concentration
            or a count, :func:`default_nonnegative`; the report says which).
        duplicate_coordinates: ``"raise"`` refuses two stations at identical coordinates;
            ``"keep"`` accepts them (as :func:`read_stations`).
        encoding: text encoding of CSV files.

    Station ids are read as text (``007`` stays ``007``). Time stamps with UTC offsets
    (``+08:00``) are converted to UTC (said in the report); a column that mixes offset and naive
    stamps is refused.
    """
    label = str(path)
    df = read_table(path, text_columns=(station_column,), encoding=encoding).reset_index(drop=True)
    for col in (station_column, time_column):
        if col not in df.columns:
            raise DataValidationError(
                f"missing required column '{col}'",
                file=label,
                expected=f"columns {station_column}, {time_column}, <variables>; found {list(df.columns)}",
            )
    lat_col, lon_col = _find_column(df.columns, LAT_NAMES), _find_column(df.columns, LON_NAMES)
    if stations is None:
        if lat_col is None or lon_col is None:
            raise DataValidationError(
                "no stations table given and no latitude/longitude columns",
                file=label,
                expected="a stations table or latitude and longitude columns",
            )
        per_station = df[[station_column, lat_col, lon_col]].drop_duplicates()
        conflict = per_station[station_column].duplicated(keep=False)
        if conflict.any():
            sid = per_station[station_column][conflict].iloc[0]
            _fail(
                df,
                (df[station_column] == sid).to_numpy(),
                f"station '{sid}' has more than one coordinate pair",
                source=label,
                column=lat_col,
                expected="constant latitude/longitude per station",
            )
        table = read_stations(
            per_station.assign(_line=per_station.index + 2),
            station_column=station_column,
            lat_column=lat_col,
            lon_column=lon_col,
            duplicate_coordinates=duplicate_coordinates,
        )
    else:
        table = read_stations(stations, duplicate_coordinates=duplicate_coordinates, encoding=encoding)
    skip = {station_column, time_column} | ({lat_col, lon_col} if stations is None else set())
    variables = list(variables) if variables is not None else [c for c in df.columns if c not in skip]
    missing = [v for v in variables if v not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing variable columns {missing}", file=label, expected=f"columns among {list(df.columns)}"
        )
    long = df[[station_column, time_column, *variables]].rename(
        columns={station_column: "station", time_column: "time"}
    )
    return assemble_station_data(
        long,
        table,
        variables,
        units=units,
        source=label,
        freq=freq,
        irregular=irregular,
        negative=negative,
        nonnegative=nonnegative,
        name=name or Path(path).stem,
    )


def assemble_station_data(
    df: pd.DataFrame,
    stations: pd.DataFrame,
    variables: list[str],
    *,
    units: dict[str, str] | None = None,
    source: str = "<table>",
    freq: str | pd.Timedelta | None = None,
    irregular: str = "raise",
    negative: str = "mask",
    nonnegative: list[str] | None = None,
    name: str = "custom",
) -> StationData:
    """Validate long rows (``station, time, *variables`` and optional ``_file``/``_line``) and
    place them on a (T, N, C) grid. Shared by :func:`read_long_table` and the built-in loaders."""
    if irregular not in ("raise", "resample"):
        raise ValueError(f"irregular must be 'raise' or 'resample', got {irregular!r}")
    if negative not in ("mask", "raise"):
        raise ValueError(f"negative must be 'mask' or 'raise', got {negative!r}")
    if freq is not None:
        try:
            step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) if isinstance(freq, str) else pd.Timedelta(freq)
        except (ValueError, TypeError):
            raise DataValidationError(f"time step {freq!r} is not a frequency", file=source, column="time",
                                      expected="a step such as 1h, 30min, 1D (--freq / data.reader.freq)") from None
        if step <= pd.Timedelta(0):
            raise DataValidationError(f"time step {freq!r} is not positive", file=source, expected="a step > 0")
        freq = step
    unknown_nonneg = sorted(set(nonnegative or []) - set(variables))
    if unknown_nonneg:
        raise DataValidationError(f"nonnegative names {unknown_nonneg}, which are not variables", file=source,
                                  expected=f"names among {list(variables)}")  # fmt: skip
    report = ValidationReport(source=source)
    df = df.reset_index(drop=True)

    # stations ---------------------------------------------------------------------------
    sid = df["station"].astype(str).str.strip()
    empty = (df["station"].isna() | (sid == "")).to_numpy()
    if empty.any():
        _fail(df, empty, "empty station id", source=source, column="station")
    node_of = {s: i for i, s in enumerate(stations["station"].astype(str))}
    node = sid.map(node_of)
    unknown = node.isna().to_numpy()
    if unknown.any():
        names = sorted(set(sid[unknown].tolist()))
        _fail(
            df,
            unknown,
            f"station ids {names[:5]} are not in the stations table",
            source=source,
            column="station",
            expected=f"one of {len(node_of)} known stations",
        )
    node = node.to_numpy(np.int64)

    # times ------------------------------------------------------------------------------
    raw_time = df["time"]
    if pd.api.types.is_datetime64_any_dtype(raw_time):
        time = pd.to_datetime(raw_time)
    else:
        text = raw_time.astype("string").str.strip()
        offset = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True, na=False).to_numpy()
        if offset.any() and not offset[raw_time.notna().to_numpy()].all():
            naive = ~offset & raw_time.notna().to_numpy()
            _fail(df, naive, f"time '{raw_time[naive].iloc[0]}' has no UTC offset while others have one "
                  f"('{raw_time[offset].iloc[0]}')", source=source, column="time",
                  expected="every time stamp with an offset (+08:00) or none")  # fmt: skip
        time = pd.to_datetime(text, errors="coerce", utc=bool(offset.any()), format="mixed" if offset.any() else None)
    if getattr(time.dt, "tz", None) is not None:
        time = time.dt.tz_convert("UTC").dt.tz_localize(None)
        report.notes.append("time stamps with UTC offsets converted to UTC")
    bad = time.isna().to_numpy()
    if bad.any():
        _fail(
            df,
            bad,
            f"cannot parse time '{raw_time[bad].iloc[0]}'",
            source=source,
            column="time",
            expected="a date-time such as 2014-05-01 13:00",
        )
    t_ns = time.to_numpy("datetime64[ns]")

    # values -----------------------------------------------------------------------------
    nonneg = set(default_nonnegative(variables) if nonnegative is None else nonnegative)
    if nonneg:
        report.notes.append(f"non-negative channels (negative values {'masked' if negative == 'mask' else 'refused'}): "
                            f"{sorted(nonneg)}; set nonnegative (--nonnegative) to change")  # fmt: skip
    arr = np.empty((len(df), len(variables)), dtype=np.float64)
    for j, var in enumerate(variables):
        col = df[var]
        if pd.api.types.is_numeric_dtype(col):
            num, bad = col.astype(np.float64), np.zeros(len(col), dtype=bool)
        else:  # text cells: empty / NA / NaN / NULL are missing, anything else must parse
            num = pd.to_numeric(col, errors="coerce").astype(np.float64)
            suspect = (num.isna() & col.notna()).to_numpy()
            bad = suspect.copy()
            if suspect.any():
                text = col[suspect].astype(str).str.strip().str.upper()
                bad[suspect] = ~text.isin(["", "NA", "NAN", "NULL", "N/A"]).to_numpy()
        if bad.any():
            _fail(
                df,
                bad,
                f"value '{col[bad].iloc[0]}' is not a number",
                source=source,
                column=var,
                expected="a number or an empty cell for missing",
            )
        v = num.to_numpy()
        inf = np.isinf(v)
        if inf.any():
            _fail(df, inf, "infinite value", source=source, column=var, expected="a finite number")
        huge = np.abs(v) > np.finfo(np.float32).max
        if huge.any():
            _fail(df, huge, f"value {v[huge][0]:g} is beyond single precision", source=source, column=var,
                  expected=f"a magnitude below {np.finfo(np.float32).max:.3g} (values are stored as float32)")
        if var in nonneg:
            neg = v < 0
            if neg.any() and negative == "raise":
                _fail(
                    df,
                    neg,
                    f"negative value {v[neg][0]}",
                    source=source,
                    column=var,
                    expected=(
                        "a value >= 0 (pass negative='mask' to mask and count them; command line: --negative mask; "
                        "config: data.reader: {negative: mask})"
                    ),
                )
            if neg.any():
                report.add(f"negative {var} values masked", int(neg.sum()))
                v = np.where(neg, np.nan, v)
        arr[:, j] = v

    # time grid --------------------------------------------------------------------------
    uniq = np.unique(t_ns)
    if freq is None and len(uniq) < 2:
        step = pd.Timedelta("1h")  # one time stamp: no grid to check, T = 1
    elif freq is None:  # the most common step between a station's consecutive rows (tie: smallest)
        by_station = np.lexsort((t_ns, node))
        d_t, same = np.diff(t_ns[by_station]), np.diff(node[by_station]) == 0
        diffs = d_t[same & (d_t > np.timedelta64(0))]
        steps, counts = np.unique(diffs if len(diffs) else np.diff(uniq), return_counts=True)
        step = pd.Timedelta(steps[np.argmax(counts)])
    else:
        step = pd.Timedelta(freq)
    step_ns = np.int64(step.value)
    t0 = uniq[0]
    offset = (t_ns - t0).astype(np.int64)
    off_grid = offset % step_ns != 0
    if off_grid.any():
        if irregular == "raise":
            _fail(
                df,
                off_grid,
                f"time '{pd.Timestamp(t_ns[off_grid][0])}' is off the regular {step} grid starting {pd.Timestamp(t0)}",
                source=source,
                column="time",
                expected=(
                    "time stamps on one regular step (pass irregular='resample' to average them onto the grid; "
                    "command line: --irregular resample; config: data.reader: {irregular: resample})"
                ),
            )
        report.add("rows moved onto the time grid (irregular='resample')", int(off_grid.sum()))
    t_idx = offset // step_ns

    order = np.lexsort((t_idx, node))
    if (np.diff(order) != 1).any():
        report.notes.append("rows were not in (station, time) order; placed by key")
    key = node * (int(t_idx.max()) + 1) + t_idx
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        if irregular == "raise" or not off_grid.any():
            k_dup = key[first[counts > 1][0]]
            dup_mask = key == k_dup
            _fail(
                df,
                dup_mask,
                f"duplicate rows for station '{sid[dup_mask].iloc[0]}' at "
                f"{pd.Timestamp(t0 + t_idx[dup_mask][0] * step_ns)}",
                source=source,
                expected="one row per (station, time)",
            )
        merged = pd.DataFrame(arr).groupby(key).mean()  # observed values averaged, NaN skipped
        report.add("rows averaged into one grid step", int(len(key) - len(merged)))
        key_u = merged.index.to_numpy(np.int64)
        node_u, t_u = key_u // (int(t_idx.max()) + 1), key_u % (int(t_idx.max()) + 1)
        arr, node, t_idx = merged.to_numpy(np.float64), node_u, t_u

    num_steps = int(t_idx.max()) + 1
    values = np.full((num_steps, len(stations), len(variables)), np.nan, dtype=np.float32)
    values[t_idx, node] = arr
    mask = ~np.isnan(values)
    report.add("time steps with no rows (inserted as missing)", num_steps - len(np.unique(t_idx)))
    rowless = np.setdiff1d(np.arange(len(stations)), node)
    report.add("stations in the table without rows (all missing)", len(rowless),
               note=f"stations without rows: {stations['station'].iloc[rowless].astype(str).tolist()[:20]}")
    times = t0 + np.arange(num_steps, dtype=np.int64) * step_ns
    units = units or {}
    return StationData(
        values=np.nan_to_num(values, nan=0.0),
        mask=mask,
        times=times.astype("datetime64[ns]"),
        stations=stations,
        channels=tuple(variables),
        units=tuple(units.get(v, "") for v in variables),
        name=name,
        meta={"report": report.to_dict()},
    )
