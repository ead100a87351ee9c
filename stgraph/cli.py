"""Command line: ``stgraph train|evaluate``, ``stgraph benchmark SUITE.yaml``, ``stgraph datasets
list|info|add``, ``stgraph summary``, ``stgraph reanalyse``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stgraph.data.readers import read_long_table
from stgraph.datasets import get_card, list_datasets, load_dataset
from stgraph.summary import run_summary


def _reader_options(args) -> dict:
    """The reader's options given on the command line (those not given are left to the reader)."""
    units = None
    if args.units:
        pairs = [u.split("=", 1) for u in _csv(args.units)]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--units {args.units!r}: expected VARIABLE=UNIT pairs separated by commas (pm25=ug/m3)")
        units = dict(pairs)
    return {
        "variables": _csv(args.variables), "units": units, "freq": args.freq, "irregular": args.irregular,
        "negative": args.negative, "nonnegative": _csv(args.nonnegative),
        "duplicate_coordinates": args.duplicate_coordinates, "station_column": args.station_column,
        "time_column": args.time_column, "encoding": args.encoding,
    }  # fmt: skip


def _datasets(args) -> int:
    from stgraph.datasets.user_cards import add_user_dataset, user_cards_dir

    if args.action == "add":
        if not args.name or not args.long:
            print("stgraph datasets add NAME --long FILE [--stations FILE]: give a name and the long table")
            return 2
        opts = {k: v for k, v in _reader_options(args).items() if v is not None}
        card, data = add_user_dataset(args.name, args.long, args.stations, title=args.title or "", force=args.force,
                                      **opts)  # fmt: skip
        print(f"added dataset '{card.name}': {data.num_nodes} stations, {data.num_steps} steps, channels "
              f"{list(data.channels)}; card {card.path}")  # fmt: skip
        report = data.meta.get("report") or {}
        for what, count in report.get("counts", {}).items():
            print(f"  reader: {what}: {count}")
        for note in report.get("notes", []):
            print(f"  reader: {note}")
        return 0
    from stgraph.datasets.user_cards import read_user_cards

    users, broken = read_user_cards()
    if args.action == "list":
        for name in list_datasets():
            if name in users:
                print(f"{name:16s} {users[name].title}  [yours: {users[name].path}]")
            else:
                print(f"{name:16s} {get_card(name).title}")
        for path, error in broken.items():
            print(f"broken card {path}: {error}", file=sys.stderr)
        return 0
    if not args.name:
        print("stgraph datasets info NAME: give a dataset name; choices: " + ", ".join(list_datasets()))
        return 2
    key = args.name.strip().lower()
    if key in users and key.replace("_", "-") not in set(list_datasets()) - set(users):
        u = users[key]
        print(f"{u.name}: {u.title}  (your dataset, card {u.path}, added {u.created})")
        print(f"long       {u.long}  sha256 {u.long_sha256[:16]}…")
        if u.stations:
            print(f"stations   {u.stations}  sha256 {u.stations_sha256[:16]}…")
        print(f"reader     {u.reader or 'defaults'}")
        return 0
    if key not in list_datasets():
        raise KeyError(f"unknown dataset '{args.name}'; available: {list_datasets()} (your cards: {user_cards_dir()})")
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
        opts = {k: v for k, v in _reader_options(args).items() if v is not None}
        data = read_long_table(args.long, args.stations, **opts)
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


def _tune(args) -> int:
    from stgraph.bench.tune import BEST_FILE, tune
    from stgraph.engine.config import load_config

    cfg = load_config(args.config, args.set)
    result = tune(cfg, args.out, trials=args.trials, steps=args.budget, seed=args.seed)
    print(
        f"{result['trials']} trials ({result['pruned']} pruned), {result['steps_per_trial']} steps each; best "
        f"validation {result['best_value']:.4f} (trial {result['best_trial']}): {result['best_params']}"
    )
    print(f"best config: {Path(args.out) / BEST_FILE}; study: {Path(args.out) / 'study.db'}")
    return 0


def _train(args) -> int:
    from stgraph.engine import distributed
    from stgraph.engine.config import load_config
    from stgraph.engine.run import run_experiment

    distributed.init_from_env()  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
    cfg = load_config(args.config, args.set)
    run, metrics = run_experiment(cfg, args.out, name=args.name, progress=not args.quiet)
    if not distributed.is_main():
        return 0
    print(f"run folder {run.path}")
    if (run.path / "tensorboard").is_dir():
        print(f"training curves: tensorboard --logdir {run.path / 'tensorboard'}")
    _print_metrics(metrics)
    return 0


def _evaluate(args) -> int:
    from stgraph.engine.run import evaluate_run

    _print_metrics(evaluate_run(args.run_dir))
    return 0


def _csv(text: str | None, kind=str, what: str = "value"):
    if text is None:
        return None
    try:
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected comma-separated {kind.__name__} values, e.g. 0,1") from None


def _benchmark(args) -> int:
    import time

    from stgraph.bench import load_suite, run_suite, write_leaderboard
    from stgraph.bench.maps import write_error_maps

    full = load_suite(args.suite)
    suite = full.select(
        models=_csv(args.models, what="--models"), tasks=_csv(args.tasks, what="--tasks"),
        folds=_csv(args.folds, int, "--folds"), seeds=_csv(args.seeds, int, "--seeds"),
    )  # fmt: skip
    if not suite.runs:
        raise ValueError(f"{args.suite}: the selection holds no run (a model runs only on the tasks it supports)")
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

    from stgraph.bench.execute import is_finished

    todo = [r for r in suite.runs if not is_finished(args.out, r)]
    print(
        f"suite {suite.name}: {total} runs, {total - len(todo)} already finished, "
        f"{len(todo)} to run on {workers} worker(s)"
    )
    t0 = time.perf_counter()
    run_suite(suite, args.out, workers=workers, threads=args.threads, on_done=report, executor=args.executor,
              address=args.address)  # fmt: skip
    md, _ = write_leaderboard(full, args.out)  # every finished run of the suite, not only this selection's
    print(f"\n{md}")
    if not args.no_maps:
        for path in write_error_maps(full, args.out):
            print(f"map of per-station hidden errors: {path}")
    print(f"leaderboard: {args.out}/leaderboard.md  ({time.perf_counter() - t0:.0f} s)")
    if any(Path(args.out, "runs").glob("*/*/*/tensorboard")):
        print(f"training curves of every run: tensorboard --logdir {Path(args.out, 'runs')}")
    return 0


def _add_reader_arguments(p: argparse.ArgumentParser) -> None:
    """read_long_table's options, for every command that reads a long table."""
    p.add_argument("--variables", help="comma-separated channels to read (default: every other column)")
    p.add_argument("--units", help="comma-separated VARIABLE=UNIT pairs, e.g. pm25=ug/m3,temp=degC")
    p.add_argument("--freq", help="time step such as 1h (default: the most common step)")
    p.add_argument("--irregular", choices=["raise", "resample"], help="time stamps off the grid (default raise)")
    p.add_argument("--negative", choices=["mask", "raise"], help="negative values of non-negative channels")
    p.add_argument("--nonnegative", help="comma-separated channels that cannot be negative (default: concentrations "
                   "and other quantities named like them: PM2.5, NO2, O3, AQI, rain, ...)")  # fmt: skip
    p.add_argument("--duplicate-coordinates", choices=["raise", "keep"], help="stations at identical coordinates")
    p.add_argument("--station-column", help="station id column of the long table (default station)")
    p.add_argument("--time-column", help="time column of the long table (default time)")
    p.add_argument("--encoding", help="text encoding of CSV files (default utf-8), e.g. latin-1, gbk")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stgraph", description=__doc__,
                                epilog="--debug (anywhere): print the traceback of an error")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and evaluate one experiment config (resumes a crashed run)")
    t.add_argument("config", help="YAML experiment config (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=3e-4")
    t.add_argument("--out", default="runs", help="parent folder of run folders (default: runs)")
    t.add_argument("--name", help="run folder name (default: the config's name)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)
    u = sub.add_parser("tune", help="tune a config's model on validation stations (Optuna, equal trial budgets)")
    u.add_argument("config", help="YAML experiment config")
    u.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (resumes)")
    u.add_argument("--budget", type=int, help="optimiser steps per trial (train.steps; default: the config's)")
    u.add_argument("--out", required=True, help="study folder: study.db, trials/, best.yaml")
    u.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    u.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.name=ignnk")
    u.set_defaults(func=_tune)
    e = sub.add_parser("evaluate", help="re-evaluate a run folder from its config and best checkpoint")
    e.add_argument("run_dir")
    e.set_defaults(func=_evaluate)
    b = sub.add_parser("benchmark", help="run a suite (models x tasks x folds x seeds) and write leaderboards")
    b.add_argument("suite", help="suite YAML (see configs/bench/)")
    b.add_argument("--out", required=True, help="output folder (runs/, leaderboard.md/.csv, maps/); reruns resume")
    b.add_argument("--workers", type=int, help="parallel worker processes (0: in this process; default: suite's)")
    b.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    b.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local: a pool of worker processes; dask: one Dask task per run (LocalCluster or --address)")
    b.add_argument("--address", help="with --executor dask: an existing scheduler, e.g. tcp://10.0.0.5:8786")
    b.add_argument("--models", help="comma-separated subset of the suite's model rows")
    b.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    b.add_argument("--folds", help="comma-separated subset of folds, e.g. 0,1")
    b.add_argument("--seeds", help="comma-separated subset of seeds")
    b.add_argument("--no-maps", action="store_true", help="skip the per-station error maps")
    b.set_defaults(func=_benchmark)
    d = sub.add_parser("datasets", help="list datasets (built-in and yours), show one, or add your own")
    d.add_argument("action", choices=["list", "info", "add"])
    d.add_argument("name", nargs="?")
    d.add_argument("--long", help="add: your long-format CSV/Parquet: station, time, <variables>")
    d.add_argument("--stations", help="add: stations table: station, latitude, longitude, ...")
    d.add_argument("--title", help="add: a one-line description")
    d.add_argument("--force", action="store_true", help="add: replace an existing card of that name")
    _add_reader_arguments(d)
    d.set_defaults(func=_datasets)
    s = sub.add_parser("summary", help="load a dataset, build its station graph, print a summary, draw a map")
    s.add_argument("dataset", nargs="?", help="built-in dataset name (see `stgraph datasets list`)")
    s.add_argument("--long", help="your own long-format CSV/Parquet: station, time, <variables>")
    s.add_argument("--stations", help="stations table for --long: station, latitude, longitude, ...")
    _add_reader_arguments(s)
    s.add_argument("--data-dir", help="folder holding <dataset folder>/<files> (else $STGRAPH_DATA_DIR, mirror, cache)")
    s.add_argument("--offline", action="store_true", help="never download")
    s.add_argument("--k", type=int, default=4, help="neighbours per station in the kNN graph")
    s.add_argument("--backend", choices=["torch_cluster", "torch"], default=None)
    s.add_argument("--map", help="write a PNG map of stations and edges here")
    s.add_argument("--json", action="store_true", help="also print the summary as JSON")
    s.set_defaults(func=_summary)
    from stgraph.reanalysis.cli import add_parser as add_reanalyse

    add_reanalyse(sub)
    from stgraph.viz.cli import add_parser as add_plot

    add_plot(sub)
    return p


VALUE_OPTIONS = ("--grid", "--start", "--end", "--set")  # values that may start with '-' (a southern latitude)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--grid -89,...`` -> ``--grid=-89,...``: argparse would take ``-89,...`` for an option."""
    out, i = [], 0
    while i < len(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if argv[i] in VALUE_OPTIONS and value.startswith("-") and value[1:2].isdigit():
            out.append(f"{argv[i]}={value}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run a command. A user error prints ``stgraph: error: ...`` and returns 1 (``--debug``: the
    traceback too); Ctrl-C prints how to resume and returns 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = _join_negative_values([a for a in argv if a != "--debug"])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\nstgraph: interrupted — rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  every error a user can cause ends here, named, without a traceback
        if debug:
            import traceback

            traceback.print_exc()
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        kind = "" if isinstance(e, (KeyError, OSError, ValueError, RuntimeError)) else f"{type(e).__name__}: "
        hint = "" if debug else " (rerun with --debug for the traceback)"
        print(f"stgraph: error: {kind}{text}" + (hint if kind else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
