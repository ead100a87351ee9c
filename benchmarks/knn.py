"""kNN graph build time and peak memory: stgraph's two backends against SciPy's cKDTree.

    python benchmarks/knn.py                       # N = 1e3 .. 1e6, k = 20 -> results/knn.md
    python benchmarks/knn.py --sizes 1000 10000    # a quick subset

Points are uniform on the unit sphere (float32 xyz, as stgraph builds station graphs), plus one
row on real geometry: the 1,498 stations of cn-stations. Every (backend, N) runs in a fresh
subprocess: one warm-up call, then the median of several timed calls; peak memory is the growth of
the process's maximum resident set during the calls, over what the points already took. The
brute-force reference is O(N²) in time (its memory is chunked): it is not run above
--max-reference points, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

RESULTS = Path(__file__).parent / "results"


REAL = "cn-stations"  # N given as this name: the real station geometry


def _points(n: int | str, seed: int = 0):
    import torch

    if n == REAL:
        from stgraph.datasets import load_dataset
        from stgraph.geo import latlon_to_xyz

        return latlon_to_xyz(torch.as_tensor(load_dataset("cn-stations", download=False).latlon)).float()
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=g)
    return p / p.norm(dim=1, keepdim=True)


def worker(backend: str, n: int | str, k: int, repeats: int) -> dict:
    """Runs in its own process; prints one JSON line."""
    import numpy as np
    import torch

    pos = _points(n)
    if backend == "ckdtree":
        from scipy.spatial import cKDTree  # noqa: I001

        x = pos.numpy().astype(np.float64)

        def run():
            tree = cKDTree(x)
            _, idx = tree.query(x, k=k + 1, workers=-1)  # first hit is the point itself
            return idx[:, 1:].size
    else:
        import torch_cluster  # noqa: F401  (load the extension before the memory baseline)

        from stgraph.graph import knn_graph

        def run():
            return knn_graph(pos, k, backend=backend).size(1)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    edges = run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "backend": backend,
        "n": len(pos),
        "k": k,
        "edges": int(edges),
        "seconds": float(np.median(times)),
        "repeats": repeats,
        "peak_mb": (peak - base) / 1024.0,
        "threads": torch.get_num_threads(),
    }


def machine() -> dict:
    import scipy
    import torch
    import torch_cluster

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cluster": torch_cluster.__version__,
        "scipy": scipy.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--max-reference", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=RESULTS / "knn.md")
    p.add_argument("--worker", nargs=4, metavar=("BACKEND", "N", "K", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        b, n, k, r = args.worker
        print(json.dumps(worker(b, n if n == REAL else int(n), int(k), int(r))))
        return

    rows = []
    for n in [REAL, *args.sizes]:
        for backend in ("torch_cluster", "torch", "ckdtree"):
            if backend == "torch" and n != REAL and n > args.max_reference:
                rows.append(
                    {
                        "backend": backend,
                        "n": n,
                        "k": args.k,
                        "skipped": f"O(N²) brute force above {args.max_reference}",
                    }
                )
                continue
            repeats = 5 if n == REAL or n <= 10_000 else (3 if n <= 100_000 and backend != "torch" else 1)
            out = subprocess.run(
                [sys.executable, __file__, "--worker", backend, str(n), str(args.k), str(repeats)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["geometry"] = "cn-stations (real)" if n == REAL else "uniform sphere"
            rows.append(row)
            print(
                f"{row['geometry']:18s} N={row['n']:>9,d} {backend:14s} {row['seconds']:9.4f} s  "
                f"+{row['peak_mb']:8.1f} MB",
                flush=True,
            )
    write_markdown(rows, machine(), args)


def write_markdown(rows: list[dict], mach: dict, args) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# kNN graph construction: time and peak memory",
        "",
        f"Command: `python benchmarks/knn.py` (k = {args.k}; sizes {', '.join(f'{n:,d}' for n in args.sizes)}).",
        "Written by that command; do not edit by hand.",
        code_line(),
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gb']} GB RAM, no GPU; Python {mach['python']}, "
        f"torch {mach['torch']} ({mach['torch_threads']} threads), torch-cluster {mach['torch_cluster']}, "
        f"SciPy {mach['scipy']} (cKDTree with workers=-1).",
        "",
        "Points: float32 xyz on the unit sphere (how stgraph finds great-circle neighbours); cKDTree gets "
        "float64 (its only dtype) and queries k+1 to drop each point itself. Time: median of 5 (N ≤ 10⁴), "
        "3 (10⁵; 1 for the O(N²) reference) or 1 (10⁶) calls after one warm-up. "
        "Peak memory: growth of the process's max RSS during the calls, beyond the points themselves.",
        "",
        "| geometry | N | backend | time (s) | peak extra memory (MB) | edges |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| uniform sphere | {r['n']:,d} | {r['backend']} | not run: {r['skipped']} | | |")
        else:
            lines.append(
                f"| {r['geometry']} | {r['n']:,d} | {r['backend']} | {r['seconds']:.4f} "
                f"| {r['peak_mb']:.1f} | {r['edges']:,d} |"
            )
    timed = {(r["n"], r["backend"]): r["seconds"] for r in rows if "skipped" not in r}
    lines += ["", "torch-cluster time / cKDTree time per N (below 1 means torch-cluster is faster):", ""]
    for n in sorted({r["n"] for r in rows if "skipped" not in r}):
        if (n, "torch_cluster") in timed and (n, "ckdtree") in timed:
            lines.append(f"- N = {n:,d}: {timed[(n, 'torch_cluster')] / timed[(n, 'ckdtree')]:.2f}")
    args.out.write_text("\n".join(lines) + "\n")
    from stgraph.engine.run_folder import environment_record

    env = environment_record(seed=0, knn_backend="")
    code = {k: env.get(k) for k in ("git_commit", "git_dirty", "code_tree", "code_dirty")}
    (args.out.with_suffix(".json")).write_text(json.dumps({"machine": mach, "code": code, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
