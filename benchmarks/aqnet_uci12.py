"""AQ-Net on UCI Beijing-12: learnable neural kNN vs the public code's IDW vs plain IDW.

    python benchmarks/aqnet_uci12.py                 # all runs -> results/aqnet_uci12.md
    python benchmarks/aqnet_uci12.py --workers 2     # two runs at a time (one torch thread each)

Tasks: ``krige`` (configs/aqnet/uci12_krige.yaml) and the short-term ``forecast``
(configs/aqnet/uci12_short.yaml), both at hidden stations. 4-fold station cross-validation (every
station is a test station once; the folds are the same for every model and seed), 3 training
seeds for each trained model. Rows: aqnet, aqnet-ref (public code: IDW power 1 after the
encoder), aqnet without cyclic encoding, IDW power 1 and 2 (no training, so one run per fold).
Runs live in ``runs/aqnet_uci12/``; finished runs are skipped, crashed ones resume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"krige": "configs/aqnet/uci12_krige.yaml", "forecast": "configs/aqnet/uci12_short.yaml"}
VARIANTS = {  # name -> overrides
    "aqnet": [],
    "aqnet-ref": ["model.name=aqnet-ref"],
    "aqnet (no CE)": ["model.hparams.cyclic_encoding=false"],
    "IDW p=1": ["model.name=idw", "model.hparams={power: 1.0}"],
    "IDW p=2": ["model.name=idw", "model.hparams={power: 2.0}"],
}


def _slug(s: str) -> str:
    return s.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "").replace("-", "_")


def one_run(job: tuple) -> dict:
    task, variant, fold, seed, out, extra = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from stgraph.engine.config import load_config
    from stgraph.engine.run import run_experiment

    overrides = [*VARIANTS[variant], f"split.fold={fold}", f"train.seed={seed}", *extra]
    cfg = load_config(ROOT / TASKS[task], overrides)
    t0 = time.perf_counter()
    run, m = run_experiment(cfg, Path(out) / task / _slug(variant), name=f"fold{fold}_seed{seed}", progress=False)
    return {
        "task": task,
        "variant": variant,
        "fold": fold,
        "seed": seed,
        "run": str(run.path),
        "wall_s": time.perf_counter() - t0,
        "metrics": m,
    }


def jobs(out: str, seeds: int, extra: list[str]) -> list[tuple]:
    todo = []
    for task in TASKS:
        for variant in VARIANTS:
            for fold in range(4):
                for seed in range(1 if variant.startswith("IDW") else seeds):
                    todo.append((task, variant, fold, seed, out, extra))
    return todo


def table(results: list[dict]) -> list[str]:
    lines = []
    for task in TASKS:
        steps = ["1", "12", "24"] if task == "krige" else ["6", "12", "24"]
        lines += [
            f"### {task}: hidden (test-role) stations, PM2.5 µg/m³, mean ± std over folds × seeds",
            "",
            "| model | runs | MAE | RMSE | R² | "
            + " | ".join(f"MAE @{s} h" for s in steps)
            + " | visible MAE | s/epoch | windows/s |",
            "|---|---:|---:|---:|---:|" + "---:|" * len(steps) + "---:|---:|---:|",
        ]
        for variant in VARIANTS:
            rs = [r for r in results if r["task"] == task and r["variant"] == variant]
            if not rs:
                continue

            def ms(vals):
                v = np.array(vals, dtype=float)
                return f"{v.mean():.2f} ± {v.std():.2f}"

            hid = [r["metrics"]["test"]["hidden"] for r in rs]
            vis = [r["metrics"]["test"]["visible"]["overall"]["mae"] for r in rs]
            tr = [r["metrics"]["training"] for r in rs if r["metrics"]["training"]]
            cost = (
                (
                    f"{np.mean([t['seconds_per_epoch'] for t in tr]):.1f} | "
                    f"{np.mean([t['windows_per_second'] for t in tr]):.0f}"
                )
                if tr
                else "– | –"
            )
            lines.append(
                f"| {variant} | {len(rs)} | {ms([h['overall']['mae'] for h in hid])} | "
                f"{ms([h['overall']['rmse'] for h in hid])} | {ms([h['overall']['r2'] for h in hid])} | "
                + " | ".join(ms([h["at_steps"][s]["mae"] for h in hid]) for s in steps)
                + f" | {ms(vis)} | {cost} |"
            )
        lines.append("")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs" / "aqnet_uci12"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra override for every run")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "aqnet_uci12.md")
    args = p.parse_args()
    todo = jobs(args.out, args.seeds, args.set)
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(one_run, todo):
            results.append(r)
            h = r["metrics"]["test"]["hidden"]["overall"]
            print(
                f"{r['task']:8s} {r['variant']:14s} fold {r['fold']} seed {r['seed']}: hidden MAE {h['mae']:.2f} "
                f"({r['wall_s']:.0f} s)",
                flush=True,
            )
    wall = time.perf_counter() - t0
    import torch

    lines = [
        "# AQ-Net on UCI Beijing-12: hidden-station accuracy",
        "",
        f"Command: `python benchmarks/aqnet_uci12.py --workers {args.workers} --seeds {args.seeds}"
        + "".join(f" --set {s}" for s in args.set)
        + f"` ({len(results)} runs, {args.seeds} seed{'s' if args.seeds != 1 else ''}, "
        f"{args.workers} worker{'s' if args.workers != 1 else ''}, {wall / 60:.1f} min wall). "
        "Written by that command; do not edit by hand.",
        code_line(),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
        f"torch {torch.__version__} (1 thread per run).",
        "",
        "Protocol: 4-fold station CV on the 12 stations (3 test, 1 val, 8 train per fold; the same folds for "
        "every row); chronological periods 70/10/20 % with a gap of window + horizon; model selection and early "
        "stopping on the val-role station only; metrics in µg/m³ on observed test-role values, over 512 evenly "
        "spaced test windows. Configs: `configs/aqnet/uci12_krige.yaml`, `configs/aqnet/uci12_short.yaml`. "
        "IDW for forecasting interpolates each visible station's last observed value (spatial persistence).",
        "",
        *table(results),
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    from stgraph.engine.run_folder import environment_record

    code_commit = environment_record(seed=0, knn_backend="").get("git_commit")
    (args.results.with_suffix(".json")).write_text(
        json.dumps(
            [
                {k: v for k, v in r.items() if k != "metrics"}
                | {"git_commit": code_commit}
                | {
                    "hidden": r["metrics"]["test"]["hidden"]["overall"],
                    "visible": r["metrics"]["test"]["visible"]["overall"],
                    "training": r["metrics"]["training"],
                }
                for r in results
            ],
            indent=1,
        )
    )
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
