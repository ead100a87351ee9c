"""Leaderboards from a suite's finished runs: mean ± std over folds × seeds, rank per column,
wall time per model, and per-station errors at hidden stations (for maps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stgraph.bench.execute import BENCH_FILE, is_finished, run_root
from stgraph.bench.suite import Suite
from stgraph.bench.tune import tuned_rows, tuned_suite

METRICS = ("mae", "rmse")  # every run has them
PROBABILISTIC = ("crps", "coverage90")  # runs of probabilistic models add them
COVERAGE_TARGET = 0.9  # coverage is ranked by its distance to the nominal level


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The metric columns of a runs table, in display order: hidden stations' MAE, RMSE (CRPS and
    coverage where a model has samples), then each extra group's (``removed_mae``, ...)."""
    names = [*METRICS, *PROBABILISTIC]
    groups = sorted({c.split("_", 1)[0] for c in runs.columns if any(c.endswith(f"_{m}") for m in names)})
    cols = [m for m in names if m in runs.columns]
    cols += [f"{g}_{m}" for g in groups for m in names if f"{g}_{m}" in runs.columns and not m.startswith("mae@")]
    return cols


STILL_IMPROVING_TAIL = 0.25  # best validation in the last quarter of a spent budget
NEAR_ANCHOR = 0.01  # a learned row within 1 % of its untrained self


def still_improving(training: dict) -> bool:
    """True when a trained run spent its whole budget (no early stop) and its best validation came in
    the budget's last quarter (in steps, or epochs for records without steps): more training would
    likely have helped, so the row is not the model's level. Parameter-free models (no training
    record) are never marked."""
    if "epochs_run" not in training:
        return False
    if training.get("early_stopped", training.get("converged", False)):  # `converged`: older records
        return False
    steps, best = training.get("steps") or 0, training.get("best_step")
    if not steps or best is None:
        steps, best = training.get("epochs_run", 0), training.get("best_epoch", 0)
    return bool(steps) and best >= (1 - STILL_IMPROVING_TAIL) * steps


def near_anchor(training: dict) -> bool:
    """True when a trained model's test error is within 1 % of the same model untrained (for an
    anchored model, its anchor): training bought nothing that shows on test. Needs the run to have
    scored its untrained model (``training.score_initial``); else False."""
    gain = training.get("test_gain_over_initial")
    return gain is not None and abs(gain) < NEAR_ANCHOR


def _env(folder: Path) -> dict:
    path = folder / "env.json"
    return json.loads(path.read_text()) if path.exists() else {}


def collect_results(suite: Suite, out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished run, one row per run × hidden station) from ``out/runs``.

    Runs not finished yet are left out here and counted in the leaderboard's ``n`` column.
    """
    rows, stations = [], []
    if suite.tune:  # the runs carry their tuned hyper-parameters
        suite = tuned_suite(suite, out, run_trials=False)
    for spec in suite.runs:
        if not is_finished(out, spec):
            continue
        parent, name = run_root(out, spec)
        folder = parent / name
        metrics = json.loads((folder / "metrics.json").read_text())
        bench = json.loads((folder / BENCH_FILE).read_text())
        env = _env(folder)
        hidden = metrics["test"]["hidden"]
        key = {"task": spec.task, "model": spec.model, "fold": spec.fold, "seed": spec.seed}
        training = metrics.get("training") or {}
        extra = {m: hidden["overall"][m] for m in PROBABILISTIC if m in hidden["overall"]}
        if "per_window" in hidden:  # aligned tasks: SPIN's per-window scoring beside the per-cell one
            extra.update({f"window_{m}": hidden["per_window"][m] for m in METRICS})
        for group, summary in metrics["test"].items():  # a task's extra groups (reconstruct: removed)
            if group in ("hidden", "visible", "unit") or not isinstance(summary, dict):
                continue
            got = summary["overall"]
            extra.update({f"{group}_{m}": got[m] for m in (*METRICS, *PROBABILISTIC) if m in got})
        rows.append(
            {
                **key,
                **{m: hidden["overall"][m] for m in METRICS},
                **extra,
                "count": hidden["overall"]["count"],
                "samples": hidden["overall"].get("samples"),
                "wall_seconds": bench["wall_seconds"],
                "epochs": training.get("epochs_run", 0),
                "best_epoch": training.get("best_epoch", 0),
                "steps": training.get("steps", 0),
                "best_step": training.get("best_step", 0),
                "steps_per_second": training.get("steps_per_second"),
                "stopped": training.get("stopped", ""),
                "val_gain": training.get("val_gain_over_initial"),
                "test_gain": training.get("test_gain_over_initial"),
                "git_commit": env.get("git_commit"),
                "git_dirty": env.get("git_dirty"),
                "still_improving": still_improving(training),
                "near_anchor": near_anchor(training),
                **{f"mae@{k}": v["mae"] for k, v in (hidden.get("at_steps") or {}).items()},
            }
        )
        for station, m in hidden["per_station"].items():
            stations.append({**key, "station": station, "mae": m["mae"], "count": m["count"]})
    return pd.DataFrame(rows), pd.DataFrame(stations)


def summarise(suite: Suite, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: task, model, metric, mean, std, n (finished), expected, rank (1 = best)."""
    out = []
    metrics = metric_columns(runs) if len(runs) else list(METRICS)
    for task in suite.tasks:
        for model in suite.models:
            expected = sum(1 for r in suite.runs if r.task == task and r.model == model)
            if not expected:
                continue
            sel = runs[(runs.task == task) & (runs.model == model)] if len(runs) else runs
            for metric in metrics:
                v = sel[metric].dropna().to_numpy(float) if len(sel) else np.zeros(0)
                if metric not in METRICS and not len(v):
                    continue  # e.g. CRPS of a point model
                out.append(
                    {
                        "task": task,
                        "model": model,
                        "metric": metric,
                        "mean": float(v.mean()) if len(v) else np.nan,
                        "std": float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else np.nan),
                        "n": len(v),
                        "expected": expected,
                        "wall_seconds": float(sel["wall_seconds"].mean()) if len(sel) else np.nan,
                        "still_improving": int(sel["still_improving"].astype(bool).sum()) if len(sel) else 0,
                        "near_anchor": int(sel["near_anchor"].astype(bool).sum()) if len(sel) else 0,
                    }
                )
    table = pd.DataFrame(out)
    if len(table):
        score = table["mean"].where(~table.metric.str.endswith("coverage90"), (table["mean"] - COVERAGE_TARGET).abs())
        table["rank"] = score.groupby([table.task, table.metric]).rank(method="min").astype("Int64")
    return table


def leaderboard_table(suite: Suite, table: pd.DataFrame, runs: pd.DataFrame) -> str:
    """Markdown: one row per model, ``mean ± std (rank)`` per task × metric, wall time per run."""
    metrics = list(dict.fromkeys(table.metric)) if len(table) else list(METRICS)
    cols = [(t, m) for t in suite.tasks for m in metrics if ((table.task == t) & (table.metric == m)).any()]
    sampled = len(runs) and "samples" in runs and runs["samples"].notna().any()  # a probabilistic row
    head = ["model"] + [f"{t} {m.replace('_', ' ').upper()}" for t, m in cols] + ["samples"] * bool(sampled)
    head += ["wall s/run", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for model in suite.models:
        cells = [f"`{model}`"]
        for t, m in cols:
            r = table[(table.task == t) & (table.metric == m) & (table.model == model)]
            if not len(r) or r.n.iloc[0] == 0:
                cells.append("—")
                continue
            r = r.iloc[0]
            best = "**" if r["rank"] == 1 else ""
            partial = "" if r.n == r.expected else f" [{r.n}/{r.expected}]"
            marks = f" ↗ {r.still_improving}/{r.n}" if r.still_improving else ""
            marks += f" ≈ anchor {r.near_anchor}/{r.n}" if r.near_anchor else ""
            cells.append(f"{best}{r['mean']:.2f} ± {r['std']:.2f}{best} ({r['rank']}){partial}{marks}")
        mine = runs[runs.model == model] if len(runs) else runs
        if sampled:  # how many samples the point estimate (median), CRPS and interval came from
            counts = sorted({int(v) for v in mine["samples"].dropna()})
            cells.append(" / ".join(map(str, counts)) if counts else "—")
        cells.append(f"{mine['wall_seconds'].mean():.1f}" if len(mine) else "—")
        cells.append(str(len(mine)))
        lines.append("| " + " | ".join(cells) + " |")
    for task, refs in suite.reference.items():
        lines.append("")
        lines.append(
            f"Published {task} MAE for comparison (not run here): " + ", ".join(f"{k} {v:.2f}" for k, v in refs.items())
        )
    return "\n".join(lines) + "\n"


def station_errors(stations: pd.DataFrame) -> pd.DataFrame:
    """Mean hidden-station MAE per task × model × station over folds and seeds."""
    if not len(stations):
        return stations
    return stations.groupby(["task", "model", "station"], as_index=False)["mae"].mean()


def write_leaderboard(suite: Suite, out: str | Path) -> tuple[str, pd.DataFrame]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``runs.csv`` and ``station_errors.csv`` into
    ``out``; returns the markdown and the long table."""
    out = Path(out)
    runs, stations = collect_results(suite, out)
    table = summarise(suite, runs)
    md = f"# {suite.name}\n\n" + (suite.description.strip() + "\n\n" if suite.description else "")
    md += "Hidden-station error in original units, mean ± std over station folds × seeds; (rank) per column, "
    md += "best in bold (COVERAGE90: closest to 0.90); CRPS and coverage of the 90 % interval for models that sample; "
    md += "REMOVED: a task's removed coarse cells (reconstruct); [n/N] marks a cell with unfinished runs; "
    md += "↗ k/n: k of its runs spent their whole training budget with their best validation in its last quarter "
    md += "(still improving: more steps would likely lower the number); ≈ anchor k/n: k of its runs score within 1 % "
    md += "of the same model untrained (for anchored models, their anchor), so training bought nothing on test.\n\n"
    md += leaderboard_table(suite, table, runs)
    if suite.tune:
        counts = tuned_rows(suite, out)
        md += (
            f"\nTuned before their runs (Optuna, {suite.tune['trials']} trials of {suite.tune['steps']} steps per task "
            "and station fold, on that fold's validation stations): "
            + (", ".join(f"`{m}` ({n} studies)" for m, n in sorted(counts.items())) or "none finished yet")
            + "; the other rows ran with the suite's hyper-parameters.\n"
        )
    (out / "leaderboard.md").write_text(md, encoding="utf-8")
    table.to_csv(out / "leaderboard.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    station_errors(stations).to_csv(out / "station_errors.csv", index=False)
    return md, table
