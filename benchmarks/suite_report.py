"""Run a benchmark suite (resuming what is finished) and write its results file.

    python benchmarks/suite_report.py configs/bench/uci12.yaml --out outputs/bench/uci12 \
        --result benchmarks/results/uci12.md
    python benchmarks/suite_report.py configs/bench/aqi36.yaml --out outputs/bench/aqi36 \
        --result benchmarks/results/aqi36.md

The results file holds the exact command, the machine, the code version, the leaderboard (mean ±
std over station folds × seeds, rank per column), the per-horizon errors, the sum of the runs'
wall times and the elapsed time of this invocation (small when it only resumed finished runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite, run_suite, write_leaderboard  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_commits(suite, out) -> dict[str, int]:
    """Runs per recorded code version -> count (from env.json): ``"code abcdef1 (commit 1234567)"``
    with ``(dirty)`` when the package had uncommitted changes. The code version is the git tree of
    the ``stgraph`` package, so commits of results or documentation between runs do not split it."""
    from collections import Counter

    from stgraph.bench.execute import run_root

    seen = Counter()
    for spec in suite.runs:
        parent, name = run_root(out, spec)
        env = parent / name / "env.json"
        if env.exists():
            e = json.loads(env.read_text())
            tree = (e.get("code_tree") or "unknown")[:7]
            dirty = e.get("code_dirty") if "code_dirty" in e else e.get("git_dirty")
            seen[f"code {tree}{' (dirty)' if dirty else ''}"] += 1
    return dict(seen.most_common())


def check_one_clean_commit(versions: dict[str, int], allow_mixed: bool) -> str:
    """The header's code line; refuses runs of several code versions or of uncommitted code unless allowed."""
    shown = ", ".join(f"`{c}` × {n}" for c, n in versions.items())
    bad = len(versions) > 1 or any("dirty" in c or "unknown" in c for c in versions)
    if bad and not allow_mixed:
        raise SystemExit(
            f"the runs come from {shown}: a results file comes from one clean code version. Rerun the suite from a "
            "clean checkout into a new --out, or pass --allow-mixed (the header then says so)"
        )
    tag = " — **MIXED OR DIRTY: not one clean code version (--allow-mixed)**" if bad else " (one clean code version)"
    return shown + tag


def horizon_table(runs: pd.DataFrame, suite) -> str:
    """MAE at the suite's reported steps (hours, or days for daily scoring), mean over runs."""
    out = []
    for task in suite.tasks:
        sel = runs[runs.task == task]
        cols = [c for c in sel.columns if c.startswith("mae@") and sel[c].notna().any()]
        if not len(sel) or not cols:
            continue
        cfg = next(r.config for r in suite.runs if r.task == task)
        unit = "day" if cfg.data.daily else "h"
        cols = sorted(cols, key=lambda c: int(c[4:]))
        out.append(f"\n**{task}**: MAE at {', '.join(c[4:] + ' ' + unit for c in cols)}\n")
        out.append("| model | " + " | ".join(f"{c[4:]} {unit}" for c in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for model in suite.models:
            m = sel[sel.model == model]
            if len(m):
                out.append(f"| `{model}` | " + " | ".join(f"{m[c].mean():.2f}" for c in cols) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--notes", help="a markdown file whose text is appended (observations, caveats)")
    ap.add_argument(
        "--allow-mixed",
        action="store_true",
        help="write the file even with runs from several commits or a dirty tree (said in its header)",
    )
    ap.add_argument("--threads", type=int, help="torch threads per worker (default: cores // workers)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the runs already finished (the header counts the others)",
    )
    args = ap.parse_args()
    suite = load_suite(args.suite)
    t0 = time.perf_counter()
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if not args.report_only:
        run_suite(suite, args.out, workers=args.workers, threads=threads)
    elapsed = time.perf_counter() - t0
    md, _ = write_leaderboard(suite, args.out)
    runs = pd.read_csv(Path(args.out) / "runs.csv")  # written by write_leaderboard
    total = runs["wall_seconds"].sum()
    code = check_one_clean_commit(run_commits(suite, args.out), args.allow_mixed)
    command = f"python benchmarks/suite_report.py {args.suite} --out {args.out} --result {args.result}"
    command += "".join(
        f" {flag} {value}" for flag, value in (("--notes", args.notes), ("--threads", args.threads)) if value
    )
    command += " --report-only" if args.report_only else ""
    lines = [
        f"# Benchmark suite `{suite.name}`",
        "",
        f"- command: `{command}` (equivalently `stgraph benchmark {args.suite} --out {args.out}`)",
        f"- machine: {_cpu()}, {os.cpu_count()} cores, no GPU; {args.workers} worker processes × "
        f"{threads} torch thread",
        f"- code: runs recorded git {code}; report written at `{_commit()}`; suite file `{args.suite}`",
        f"- runs: {len(runs)} finished of {len(suite.runs)}; sum of the runs' wall times {total / 60:.1f} min "
        f"(run {args.workers} at a time); this invocation {elapsed:.0f} s (it only runs what is unfinished)",
        "",
        md.split("\n", 2)[2],  # the leaderboard without its title
    ]
    horizons = horizon_table(runs, suite)
    if horizons.strip():  # impute and krige rows have no horizons
        lines += ["## Per-horizon error", horizons]
    if args.notes:
        lines += ["## Notes", "", Path(args.notes).read_text().strip(), ""]
    Path(args.result).write_text("\n".join(lines), encoding="utf-8")
    runs.to_csv(Path(args.result).with_suffix(".csv"), index=False)
    print(f"wrote {args.result}")
    print(json.dumps({"runs": len(runs), "sum_wall_min": round(total / 60, 1)}))


if __name__ == "__main__":
    main()
