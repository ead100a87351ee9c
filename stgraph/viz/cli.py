"""``stgraph plot map|series|error-distance|leaderboard|curves|attention``."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a figure: map, series, error-distance, leaderboard, curves")
    kinds = p.add_subparsers(dest="kind", required=True)
    m = kinds.add_parser("map", help="a reanalysis NetCDF at one time, stations on top")
    m.add_argument("nc")
    m.add_argument("--time", help="a time step of the file (default: its first)")
    m.add_argument("--variable", help="default: the first estimate")
    s = kinds.add_parser("series", help="a hidden station of a run: truth, estimate, uncertainty band")
    s.add_argument("run_dir")
    s.add_argument("--station", required=True)
    s.add_argument("--start")
    s.add_argument("--end")
    e = kinds.add_parser("error-distance", help="hidden-station error against distance to the nearest visible one")
    e.add_argument("bench_out", help="a `stgraph benchmark --out` folder")
    e.add_argument("--task", required=True)
    b = kinds.add_parser("leaderboard", help="a task's metric per model with error bars")
    b.add_argument("bench_out")
    b.add_argument("--task", required=True)
    b.add_argument("--metric", default="mae")
    c = kinds.add_parser("curves", help="a run's learning curves")
    c.add_argument("run_dir")
    a = kinds.add_parser("attention", help="AQ-Net's attention and neural-kNN edges for one test window")
    a.add_argument("run_dir")
    a.add_argument("--window-start", help="a test window's first time (default: the first test window)")
    for k in (m, s, e, b, c, a):
        k.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=run)


def run(args) -> int:
    from stgraph.viz import figures as f

    if args.kind == "map":
        path = f.reanalysis_map(args.nc, args.out, time=args.time, variable=args.variable)
    elif args.kind == "series":
        path = f.station_series(args.run_dir, args.station, args.out, start=args.start, end=args.end)
    elif args.kind == "error-distance":
        path = f.error_vs_distance(args.bench_out, args.out, task=args.task)
    elif args.kind == "leaderboard":
        path = f.leaderboard_bars(args.bench_out, args.out, task=args.task, metric=args.metric)
    elif args.kind == "attention":
        from stgraph.viz.attention import aqnet_attention

        path = aqnet_attention(args.run_dir, args.out, window_start=args.window_start)
    else:
        path = f.learning_curves(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0
