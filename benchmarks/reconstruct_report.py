"""Compact tables of a reconstruct suite: one row per pattern, one column per model.

    python benchmarks/reconstruct_report.py configs/bench/aqi36_reconstruct.yaml --out outputs/bench/aqi36_reconstruct \
        --result benchmarks/results/aqi36_reconstruct_tables.md

Reads the suite's finished runs (``runs.csv``, rewritten from the run folders first) and writes the
MAE at the hidden (fine) stations, the MAE at the removed (coarse) cells, and the CRPS and 90 %
coverage of the models that sample, each in original units; a cell with no finished run is "—".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite, write_leaderboard  # noqa: E402


def pivot(runs: pd.DataFrame, suite, metric: str, models: list[str]) -> str:
    if metric not in runs.columns:
        return "(no run reports it)\n"
    table = runs.groupby(["task", "model"])[metric].mean().unstack("model")
    lines = ["| pattern | " + " | ".join(f"`{m}`" for m in models) + " |", "|---|" + "---:|" * len(models)]
    for task in suite.tasks:
        cells = []
        row = table.loc[task] if task in table.index else None
        values = {m: (row.get(m) if row is not None else None) for m in models}
        finite = [v for v in values.values() if v is not None and pd.notna(v)]
        best = min(finite) if finite and not metric.endswith("coverage90") else None
        for m in models:
            v = values[m]
            if v is None or pd.isna(v):
                cells.append("—")
            else:
                cells.append(f"**{v:.2f}**" if best is not None and v == best else f"{v:.2f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_table(out: Path, runs: pd.DataFrame) -> list[str]:
    """Per run: training seconds, evaluation (sampling) seconds per window, peak resident memory of
    its worker (``bench.json``; runs from before these were recorded show —), epochs and convergence."""
    rows = []
    for path in sorted(out.glob("runs/*/*/*/bench.json")):
        rec = json.loads(path.read_text())
        task, model = path.parts[-4], path.parts[-3]
        r = runs[(runs.task == task) & (runs.model == model)]
        fmt = lambda v, f: "—" if v is None or v != v else format(v, f)  # noqa: E731
        trained = len(r) and r.epochs.notna().any() and int(r.epochs.iloc[0]) > 0
        epochs = f"{int(r.epochs.iloc[0])} (best {int(r.best_epoch.iloc[0])})" if trained else "—"
        conv = ("still improving" if bool(r.still_improving.iloc[0]) else "no") if trained else "—"
        rows.append(f"| {task} | `{model}` | {fmt(rec.get('train_seconds'), '.0f')} | "
                    f"{fmt(rec.get('eval_seconds_per_window'), '.2f')} | {fmt(rec.get('peak_rss_gb'), '.2f')} | "
                    f"{epochs} | {conv} |")  # fmt: skip
    if not rows:
        return []
    return [
        "## Cost of every run (one CPU thread)",
        "",
        "Training seconds (fit or gradient training), evaluation seconds per test window (for sampling models: "
        "their sampling time), peak resident memory of the run's worker process (data included), epochs run "
        "(best epoch; 0 = the untrained model was kept), whether the run spent its budget with its best "
        "validation in the last quarter (still improving).",
        "",
        "| pattern | model | train s | eval s/window | peak GB | epochs | still improving |",
        "|---|---|---:|---:|---:|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    suite = load_suite(args.suite)
    write_leaderboard(suite, args.out)
    runs = pd.read_csv(Path(args.out) / "runs.csv")
    models = [m for m in suite.models if m in set(runs.model)]
    sampling = [m for m in models if "crps" in runs.columns and runs[runs.model == m]["crps"].notna().any()]
    parts = [
        f"# {suite.name}: reconstruct, compact tables",
        "",
        f"Command: `python benchmarks/reconstruct_report.py {args.suite} --out {args.out} --result {args.result}`",
        "",
        (suite.description or "").strip(),
        "",
        "Mean over the suite's folds and seeds; best per row in bold. Full leaderboard: "
        f"`{args.out}/leaderboard.md` (not committed); per-run numbers: `runs.csv` there.",
        "",
        "## MAE at the hidden (fine) stations",
        "",
        pivot(runs, suite, "mae", models),
        "## MAE at the removed (coarse) cells",
        "",
        pivot(runs, suite, "removed_mae", models),
    ]
    if sampling:
        parts += [
            "## CRPS (models that sample)",
            "",
            "Hidden stations:",
            "",
            pivot(runs, suite, "crps", sampling),
            "Removed cells:",
            "",
            pivot(runs, suite, "removed_crps", sampling),
            "## Coverage of the central 90 % interval (nominal 0.90)",
            "",
            "Hidden stations:",
            "",
            pivot(runs, suite, "coverage90", sampling),
            "Removed cells:",
            "",
            pivot(runs, suite, "removed_coverage90", sampling),
        ]
    walls = runs.groupby("model")["wall_seconds"].mean()
    parts += ["## Wall time per run (s, fit or train + evaluate)", ""]
    parts += [" | ".join(f"`{m}` {walls[m]:.0f}" for m in models), ""]
    parts += cost_table(Path(args.out), runs)
    Path(args.result).write_text("\n".join(parts) + "\n", encoding="utf-8")
    print("wrote", args.result)


if __name__ == "__main__":
    main()
