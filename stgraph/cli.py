"""Command line: ``stgraph train|evaluate``, ``stgraph benchmark SUITE.yaml``, ``stgraph datasets
list|info NAME``, ``stgraph summary``."""

from __future__ import annotations

import argparse
import json
import sys

from stgraph.data.readers import read_long_table
from stgraph.datasets import get_card, list_datasets, load_dataset
from stgraph.summary import run_summary


def _datasets(args) -> int:
    if args.action == "list":
        for name in list_datasets():
            card = get_card(name)
            print(f"{name:16s} {card.title}")
        return 0
    if not args.name:
        print("stgraph datasets info NAME: give a dataset name; choices: " + ", ".join(list_datasets()))
        return 2
    card = get_card(args.name)
    print(f"{card.name}: {card.title}\n")
    print(" ".join(card.description.split()) + "\n")
    print(f"source     {card.url}\nhomepage   {card.homepage}\nlicence    {card.licence}")
    print(f"citation   {' '.join(card.citation.split())}\nfolder     {card.folder}")
    print("files:")
    for f in card.files:
        print(f"  {f.path:48s} sha256 {f.sha256[:16]}…" + ("" if f.in_archive or f.url else "  (not downloadable)"))
    if card.variables:
        print("variables: " + ", ".join(f"{v['name']} [{v['unit']}]" for v in card.variables))
    return 0


def _summary(args) -> int:
    if args.long:
        data = read_long_table(args.long, args.stations, irregular=args.irregular)
    elif args.dataset:
        data = load_dataset(args.dataset, args.data_dir, download=not args.offline)
    else:
        print("stgraph summary: give a dataset name or --long FILE [--stations FILE]")
        return 2
    info = run_summary(data, k=args.k, map_path=args.map, backend=args.backend)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    return 0


def _print_metrics(metrics: dict) -> None:
    test = metrics["test"]
    for group in ("hidden", "visible"):
        o = test[group]["overall"]
        line = f"{group:8s} ({test['unit']}) MAE {o['mae']:.3f}  RMSE {o['rmse']:.3f}  R2 {o['r2']:.3f}  n={o['count']}"
        if "crps" in o:  # probabilistic models
            line += f"  CRPS {o['crps']:.3f}  coverage90 {o['coverage90']:.3f}"
        at = test[group].get("at_steps") or {}
        line += "".join(f"  | step {s}: MAE {m['mae']:.3f}" for s, m in at.items())
        print(line)


def _train(args) -> int:
    from stgraph.engine.config import load_config
    from stgraph.engine.run import run_experiment

    cfg = load_config(args.config, args.set)
    run, metrics = run_experiment(cfg, args.out, name=args.name, progress=not args.quiet)
    print(f"run folder {run.path}")
    _print_metrics(metrics)
    return 0


def _evaluate(args) -> int:
    from stgraph.engine.run import evaluate_run

    _print_metrics(evaluate_run(args.run_dir))
    return 0


def _csv(text: str | None, kind=str):
    return None if text is None else [kind(x) for x in text.split(",") if x.strip()]


def _benchmark(args) -> int:
    import time

    from stgraph.bench import load_suite, run_suite, write_leaderboard
    from stgraph.bench.maps import write_error_maps

    suite = load_suite(args.suite).select(
        models=_csv(args.models), tasks=_csv(args.tasks), folds=_csv(args.folds, int), seeds=_csv(args.seeds, int)
    )
    workers = args.workers if args.workers is not None else (suite.workers or 1)
    total = len(suite.runs)
    done = [0]

    def report(spec, info):
        done[0] += 1
        what = (
            f"skipped: {info['skipped']}"
            if "skipped" in info
            else f"MAE {info['mae']:8.3f}  {info['wall_seconds']:6.1f} s"
        )
        print(f"[{done[0]}/{len(todo)}] {spec.name:42s} {what}", flush=True)

    from stgraph.bench.runner import is_finished

    todo = [r for r in suite.runs if not is_finished(args.out, r)]
    print(
        f"suite {suite.name}: {total} runs, {total - len(todo)} already finished, "
        f"{len(todo)} to run on {workers} worker(s)"
    )
    t0 = time.perf_counter()
    run_suite(suite, args.out, workers=workers, threads=args.threads, on_done=report)
    md, _ = write_leaderboard(suite, args.out)
    print(f"\n{md}")
    if not args.no_maps:
        for path in write_error_maps(suite, args.out):
            print(f"map of per-station hidden errors: {path}")
    print(f"leaderboard: {args.out}/leaderboard.md  ({time.perf_counter() - t0:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stgraph", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and evaluate one experiment config (resumes a crashed run)")
    t.add_argument("config", help="YAML experiment config (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=3e-4")
    t.add_argument("--out", default="runs", help="parent folder of run folders (default: runs)")
    t.add_argument("--name", help="run folder name (default: the config's name)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="re-evaluate a run folder from its config and best checkpoint")
    e.add_argument("run_dir")
    e.set_defaults(func=_evaluate)
    b = sub.add_parser("benchmark", help="run a suite (models x tasks x folds x seeds) and write leaderboards")
    b.add_argument("suite", help="suite YAML (see configs/bench/)")
    b.add_argument("--out", required=True, help="output folder (runs/, leaderboard.md/.csv, maps/); reruns resume")
    b.add_argument("--workers", type=int, help="parallel worker processes (0: in this process; default: suite's)")
    b.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    b.add_argument("--models", help="comma-separated subset of the suite's model rows")
    b.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    b.add_argument("--folds", help="comma-separated subset of folds, e.g. 0,1")
    b.add_argument("--seeds", help="comma-separated subset of seeds")
    b.add_argument("--no-maps", action="store_true", help="skip the per-station error maps")
    b.set_defaults(func=_benchmark)
    d = sub.add_parser("datasets", help="list the built-in datasets or show one's card")
    d.add_argument("action", choices=["list", "info"])
    d.add_argument("name", nargs="?")
    d.set_defaults(func=_datasets)
    s = sub.add_parser("summary", help="load a dataset, build its station graph, print a summary, draw a map")
    s.add_argument("dataset", nargs="?", help="built-in dataset name (see `stgraph datasets list`)")
    s.add_argument("--long", help="your own long-format CSV/Parquet: station, time, <variables>")
    s.add_argument("--stations", help="stations table for --long: station, latitude, longitude, ...")
    s.add_argument("--irregular", choices=["raise", "resample"], default="raise")
    s.add_argument("--data-dir", help="folder holding <dataset folder>/<files> (else $STGRAPH_DATA_DIR, mirror, cache)")
    s.add_argument("--offline", action="store_true", help="never download")
    s.add_argument("--k", type=int, default=4, help="neighbours per station in the kNN graph")
    s.add_argument("--backend", choices=["torch_cluster", "torch"], default=None)
    s.add_argument("--map", help="write a PNG map of stations and edges here")
    s.add_argument("--json", action="store_true", help="also print the summary as JSON")
    s.set_defaults(func=_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, FileNotFoundError, ValueError) as e:
        print(f"stgraph: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
