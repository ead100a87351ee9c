"""``stgraph reanalyse RUN_DIR (--grid LAT0,LAT1,LON0,LON1,RES | --points FILE) --out FILE.nc``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("reanalyse", help="estimate a run's targets on a grid or at points; write CF NetCDF")
    r.add_argument("run_dir", help="a run folder written by `stgraph train` (task krige, reconstruct or impute)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--grid", help="LAT0,LAT1,LON0,LON1,RES in degrees, e.g. 39.6,40.4,115.9,116.8,0.01")
    where.add_argument("--points", help="CSV/Parquet with point,latitude,longitude")
    r.add_argument("--start", help="first time (default: the data's start)")
    r.add_argument("--end", help="end time, exclusive (default: the data's end)")
    r.add_argument("--stations", choices=["train", "all"], default="train",
                   help="input stations: the run's visible ones (default) or every station")  # fmt: skip
    r.add_argument("--out", required=True, help="output NetCDF file (.nc)")
    r.add_argument("--csv", help="with --points: also write the estimates as CSV (or .parquet) here")
    r.add_argument("--cell-chunk", type=int, default=4096, help="targets per model call (memory)")
    r.add_argument("--window-batch", type=int, default=16, help="windows per model call (memory)")
    r.add_argument("--max-output-gb", type=float, default=4.0,
                   help="refuse a request whose output would exceed this size (default 4 GB)")  # fmt: skip
    r.add_argument("--max-memory-gb", type=float, default=8.0,
                   help="refuse a request whose working memory would exceed this (default 8 GB)")  # fmt: skip
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stgraph.reanalysis import grid_targets, load_reanalysis_run, read_points, write_reanalysis

    if args.csv and not args.points:
        raise ValueError("--csv writes point estimates: use it with --points")
    import signal

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: an OSError (and a clean-up), not a crash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    grid = grid_targets(args.grid) if args.grid else None
    points = read_points(args.points) if args.points else None
    rr = load_reanalysis_run(args.run_dir, stations=args.stations)
    path = write_reanalysis(rr, args.out, grid=grid, points=points, start=args.start, end=args.end,
                            window_batch=args.window_batch, cell_chunk=args.cell_chunk,
                            progress=not args.quiet, max_output_gb=args.max_output_gb,
                            max_memory_gb=args.max_memory_gb)  # fmt: skip
    print(f"wrote {path}")
    if args.csv:
        import xarray as xr

        with xr.open_dataset(path) as ds:
            df = ds.drop_vars(["crs"]).to_dataframe().reset_index()
        csv = Path(args.csv)
        df.to_parquet(csv, index=False) if csv.suffix == ".parquet" else df.to_csv(csv, index=False)
        print(f"wrote {csv}")
    return 0
