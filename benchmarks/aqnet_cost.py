"""CPU training cost of every shipped AQ-Net config: windows/second and seconds per epoch.

    python benchmarks/aqnet_cost.py            # -> results/aqnet_cost.md

Each config trains for a fixed number of epochs (no early stopping) on fold 0, seed 0, with the
config's own window subsampling, once with 1 torch thread and once with all cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    "configs/aqnet/uci12_short.yaml",
    "configs/aqnet/uci12_long.yaml",
    "configs/aqnet/uci12_krige.yaml",
    "configs/aqnet/aqi36_krige.yaml",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "aqnet_cost.md")
    args = p.parse_args()
    import torch

    from stgraph.engine.config import load_config
    from stgraph.engine.run import run_experiment

    rows = []
    for path in CONFIGS:
        for threads in (1, os.cpu_count()):
            cfg = load_config(
                ROOT / path,
                [f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}", f"train.num_threads={threads}"],
            )
            tmp = tempfile.mkdtemp()
            t0 = time.perf_counter()
            _, m = run_experiment(cfg, tmp, progress=False)
            wall = time.perf_counter() - t0
            shutil.rmtree(tmp)
            t = m["training"]
            rows.append(
                (
                    path,
                    threads,
                    cfg.data.window,
                    cfg.data.horizon if cfg.data.task == "forecast" else 0,
                    cfg.train.max_train_windows,
                    t["seconds_per_epoch"],
                    t["windows_per_second"],
                    wall,
                )
            )
            print(rows[-1], flush=True)
    lines = [
        "# AQ-Net training cost on CPU",
        "",
        f"Command: `python benchmarks/aqnet_cost.py` ({args.epochs} epochs per config, fold 0, seed 0). "
        "Written by that command; do not edit by hand.",
        code_line(),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
        f"torch {torch.__version__}.",
        "",
        "| config | threads | window → horizon | windows per epoch | s / epoch | windows / s | wall for the run (s) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for path, threads, w, h, n, spe, wps, wall in rows:
        lines.append(f"| `{path}` | {threads} | {w} → {h or w} | {n} | {spe:.1f} | {wps:.0f} | {wall:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
