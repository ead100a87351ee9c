"""Rerun single rows of a results file with the code as it is now, and compare their numbers.

A results file (``benchmarks/results/X.csv``) holds one row per run: task, model, fold, seed and
its metrics, from one code version. After a change meant to leave behaviour as it was (a
refactor), rerunning a few rows must give the same numbers:

    python benchmarks/reproduce_rows.py configs/bench/aqi36.yaml benchmarks/results/aqi36.csv \
        --row impute/lerp-knn/0/0 --out outputs/reproduce/aqi36 --result benchmarks/results/reproduce.md

Each ``--row TASK/MODEL/FOLD/SEED`` is run from the suite's own config into ``--out`` (a finished
run there is read, not rerun) and its ``mae``, ``rmse`` and ``count`` are compared with the
recorded ones; ``--result`` appends a table (code version of the rerun, of the row, both numbers,
the difference). Exit status 1 when a row differs by more than ``--tol`` (relative; default 1e-9).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite, run_suite  # noqa: E402
from stgraph.bench.leaderboard import collect_results  # noqa: E402

METRICS = ("mae", "rmse", "count")


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "stgraph"], cwd=ROOT, capture_output=True, text=True)
    return head[:10] + ("+dirty" if dirty.stdout.strip() else "")


def _row(text: str) -> tuple[str, str, int, int]:
    parts = text.split("/")
    if len(parts) != 4:
        raise SystemExit(f"--row {text!r}: expected TASK/MODEL/FOLD/SEED, e.g. impute/lerp-knn/0/0")
    return parts[0], parts[1], int(parts[2]), int(parts[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite")
    ap.add_argument("csv", type=Path)
    ap.add_argument("--row", action="append", required=True, help="TASK/MODEL/FOLD/SEED (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", type=Path)
    ap.add_argument("--tol", type=float, default=1e-9)
    args = ap.parse_args()
    recorded = pd.read_csv(args.csv)
    suite = load_suite(args.suite)
    lines, worst = [], 0.0
    for task, model, fold, seed in map(_row, args.row):
        sub = suite.select(models=[model], tasks=[task], folds=[fold], seeds=[seed])
        old = recorded[
            (recorded.task == task) & (recorded.model == model) & (recorded.fold == fold) & (recorded.seed == seed)
        ]
        if len(sub.runs) != 1 or len(old) != 1:
            raise SystemExit(f"{task}/{model}/{fold}/{seed}: {len(sub.runs)} suite runs, {len(old)} recorded rows")
        run_suite(sub, args.out, workers=0)
        new = collect_results(sub, args.out)[0].iloc[0]
        for m in METRICS:
            a, b = float(old.iloc[0][m]), float(new[m])
            rel = abs(a - b) / max(abs(a), 1e-12)
            worst = max(worst, rel)
            lines.append(
                f"| {task}/{model}/fold{fold}-seed{seed} | {m} | {a:.6f} | {b:.6f} | {rel:.2e} "
                f"| {str(old.iloc[0]['git_commit'])[:10]} |"
            )
    table = "\n".join(
        [
            f"### `{Path(args.suite).name}` rows rerun at {_commit()} "
            f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
            "",
            f"`python benchmarks/reproduce_rows.py {args.suite} {args.csv} "
            + " ".join(f"--row {r}" for r in args.row)
            + f" --out {args.out}`",
            "",
            "| run | metric | recorded | rerun | relative difference | recorded at |",
            "|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )
    print(table)
    if args.result:
        with args.result.open("a") as f:
            f.write(table + "\n")
    sys.exit(1 if worst > args.tol else 0)


if __name__ == "__main__":
    main()
