"""Cost of a reanalysis: one year hourly on a 0.01° grid over Beijing, time and peak memory.

    python benchmarks/reanalyse_memory.py      # -> benchmarks/results/reanalyse_memory.md

An IDW run on UCI Beijing-12 (krige, PM2.5; parameter-free, so the cost is the engine's: windows,
chunks, the NetCDF writer), then ``stgraph reanalyse`` in a child process over 2016 (8,784 hours)
on the grid 39.6-40.5 N x 115.9-116.9 E at 0.01° (90 x 100 = 9,000 cells, 79 M values a variable).
Peak memory is the child's resident high-water mark (ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
GRID = "39.6,40.5,115.9,116.9,0.01"
CONFIG = """name: idw-uci12
data: {dataset: uci-beijing-12, target_channels: [PM2.5], input_channels: [PM2.5], task: krige, window: 24,
       stride: 24, eval_stride: 24, eval_steps: []}
split: {method: kfold, n_folds: 4, val: 2, seed: 0}
model: {name: idw, hparams: {power: 2.0}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", default="2016-01-01")
    p.add_argument("--end", default="2017-01-01")
    p.add_argument("--grid", default=GRID)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reanalyse_memory.md")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reanalyse-"))
    (tmp / "idw.yaml").write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stgraph = [sys.executable, "-m", "stgraph.cli"]
    subprocess.run([*stgraph, "train", str(tmp / "idw.yaml"), "--out", str(tmp), "--quiet"], check=True, env=env)
    nc = tmp / "beijing.nc"
    t0 = time.perf_counter()
    subprocess.run([*stgraph, "reanalyse", str(tmp / "idw-uci12"), "--grid", args.grid, "--start", args.start,
                    "--end", args.end, "--out", str(nc), "--quiet"], check=True, env=env)  # fmt: skip
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6  # the largest child: reanalyse
    import xarray as xr

    with xr.open_dataset(nc) as ds:
        shape, values = dict(ds.sizes), int(ds["PM2_5"].size)
    size = nc.stat().st_size / 1e9
    lines = [
        "# Reanalysis cost: one year hourly at 0.01° over Beijing",
        "",
        f"Command: `python benchmarks/reanalyse_memory.py` (one thread; {os.cpu_count()} cores on the machine). "
        f"An IDW run on UCI Beijing-12 (PM2.5, krige, fold 0), then `stgraph reanalyse --grid {args.grid} "
        f"--start {args.start} --end {args.end}` with the default chunks (16 windows x 4,096 cells).",
        code_line(),
        "",
        "| time steps | grid | values | wall s | peak resident GB | file GB |",
        "|---:|---|---:|---:|---:|---:|",
        f"| {shape['time']:,} | {shape['lat']} x {shape['lon']} | {values:,} | {wall:.0f} | {peak:.2f} | {size:.2f} |",
        "",
        "Peak memory is the reanalyse process's resident high-water mark (data, run and one chunk; the field "
        "itself is written to the file chunk by chunk and never held whole).",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
