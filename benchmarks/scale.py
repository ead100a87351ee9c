"""How far one machine goes: data preparation, training, evaluation time and peak memory against the
number of stations, with and without station mini-batches.

    python benchmarks/scale.py                       # -> benchmarks/results/scale.md (resumable)
    python benchmarks/scale.py --sizes 1498,10000    # a subset

Networks: the real ``cn-stations`` geometry (1,498 stations) and 10⁴ / 10⁵ stations drawn uniformly
over the same bounding box; on each, one year of hourly values of a Gaussian random field of known
covariance (:mod:`stgraph.datasets.synthetic_field`: squared-exponential in space, 100 km, AR(1) in
time, 5 % missing). Task ``krige``, 24 h windows, a random station split (20 % test, 5 % val).

Every (size, model, mode) runs in its own process (one torch thread), so its peak resident memory
is its own (``ru_maxrss`` of the child); a watchdog kills a child whose resident memory passes
``--limit-gb`` (default 16) and records it as over the limit (its address space is also capped at
the limit + 6 GB, so one huge allocation fails in the child instead of exhausting the machine). Results are appended to
``outputs/bench/scale/results.jsonl``: a rerun only runs what is missing (delete a line to redo it).
Training is one epoch of ``--train-windows`` windows (an epoch of the full year would be 365 windows a
station batch; the time per step is recorded so it can be scaled), evaluation ``--eval-windows``
test windows over all test stations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench" / "scale"
BBOX = (18.0, 50.0, 75.0, 132.0)  # the cn-stations bounding box, rounded out
MODELS = {
    "aqnet": {"hidden_channels": 32, "num_layers": 1, "heads": 2},
    "idw": {"power": 2.0, "k": 16},
    "gp": {"fit_passes": 1},
    "ignnk": {"hidden_channels": 32, "order": 1, "k": 6},
}
# mode -> config overrides per model; "whole": every visible station in every batch and call (the
# default engine); "station": station mini-batches — training on local subgraphs of 1,000 training
# stations (a random centre and its nearest), evaluation in chunks of 64 targets that see only their
# targets' 32 nearest visible stations; the GP becomes the local GP (each station from its 8
# nearest visible ones), IDW keeps its 16 nearest (so its chunked numbers equal the whole network's)
MODES = ("whole", "station")
STATION = {
    "aqnet": {"train.subgraph_size": 1000, "train.subgraph": "local", "train.eval_target_chunk": 64,
              "train.eval_neighbours": 32},
    "ignnk": {"train.subgraph_size": 1000, "train.subgraph": "local", "train.eval_target_chunk": 64,
              "train.eval_neighbours": 32},
    "idw": {"train.eval_target_chunk": 1024, "train.eval_neighbours": 16},
    "gp": {"model.neighbours": 8, "train.subgraph_size": 256, "train.subgraph": "local",
           "train.eval_target_chunk": 64, "train.eval_neighbours": 16},
}  # fmt: skip


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def network(n: int, *, seed: int = 0):
    """The station table: the real cn-stations geometry for n = 1498, else n uniform stations."""
    from stgraph.datasets import load_dataset
    from stgraph.datasets.synthetic_field import uniform_stations

    if n == 1498:
        return load_dataset("cn-stations").stations[["station", "name", "latitude", "longitude"]]
    return uniform_stations(n, BBOX, seed=seed)


def experiment_config(model: str, mode: str, args):
    from stgraph.engine.config import config_from_dict

    d = {
        "name": f"scale-{model}-{mode}",
        "data": {"dataset": "grf", "task": "krige", "window": 24, "horizon": 24, "stride": 24,
                 "eval_stride": 24, "eval_steps": [], "target_channels": ["x"]},
        "split": {"method": "random", "test": 0.2, "val": 0.05, "seed": 0, "time_val": 0.1, "time_test": 0.2},
        "model": {"name": model, "hparams": dict(MODELS[model])},
        "train": {"epochs": 1, "patience": 2, "batch_size": args.batch_size, "max_train_windows": args.train_windows,
                  "max_eval_windows": args.eval_windows, "num_threads": 1},
    }  # fmt: skip
    for key, value in (STATION[model] if mode == "station" else {}).items():
        section, name = key.split(".")
        (d["model"]["hparams"] if section == "model" else d[section])[name] = value
    return config_from_dict(d)


def run_one(n: int, model: str, mode: str, args) -> dict:
    """Runs in the child: returns the timings (the parent adds the peak memory)."""
    import tempfile

    import torch

    from stgraph.datasets.synthetic_field import gaussian_random_field
    from stgraph.engine.fitting import fit_model
    from stgraph.engine.run import build_experiment, evaluate_model
    from stgraph.engine.run_folder import RunDir
    from stgraph.engine.trainer import train_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = gaussian_random_field(network(n), num_steps=args.steps, seed=0)
    t_data = time.perf_counter() - t0
    cfg = experiment_config(model, mode, args)
    t0 = time.perf_counter()
    exp, net = build_experiment(cfg, data)
    t_prep = time.perf_counter() - t0
    del data
    run = RunDir.create(tempfile.mkdtemp(prefix="scale-"), cfg.name)
    t0 = time.perf_counter()
    training = fit_model(net, exp, run.path) or {}
    if any(p.requires_grad for p in net.parameters()):
        training = train_model(net, exp, run, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate_model(net, exp, run, training)
    t_eval = time.perf_counter() - t0
    return {
        "n": n, "model": model, "mode": mode, "status": "ok",
        "generate_s": t_data, "prepare_s": t_prep, "train_s": t_train, "eval_s": t_eval,
        "steps": training.get("steps", 0), "mae": metrics["test"]["hidden"]["overall"]["mae"],
        "train_stations": int(len(exp.split.train)), "test_stations": int(len(exp.split.test)),
    }  # fmt: skip


def run_child(n: int, model: str, mode: str, args) -> dict:
    """Run one measurement in a child process under the memory watchdog and the time limit."""
    cmd = [sys.executable, __file__, "--child", f"{n},{model},{mode}", "--steps", str(args.steps),
           "--train-windows", str(args.train_windows), "--eval-windows", str(args.eval_windows),
           "--batch-size", str(args.batch_size)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    limit = int((args.limit_gb + 6) * 1e9)  # address space: a huge allocation fails in the child, not the machine

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=cap)
    killed: list[str] = []

    def watch() -> None:
        while proc.poll() is None:
            if _rss_gb(proc.pid) > args.limit_gb:
                killed.append(f"resident memory over {args.limit_gb:g} GB")
                proc.kill()
            elif time.perf_counter() - t0 > args.timeout:
                killed.append(f"over the time limit of {args.timeout} s")
                proc.kill()
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    row = {
        "n": n,
        "model": model,
        "mode": mode,
        "wall_s": time.perf_counter() - t0,
        "peak_gb": usage.ru_maxrss / 1e6,
    }  # fmt: skip  (Linux: ru_maxrss in kB)
    if killed:
        return {**row, "status": killed[0]}
    if proc.returncode != 0:
        last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["?"]
        return {**row, "status": f"failed: {last[0][:200]}"}
    return {**json.loads(out.strip().splitlines()[-1]), **row}


def loglog_slope(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else None


def short_status(status: str) -> str:
    """A refused allocation as its size (the child's address space is capped at the limit + 6 GB)."""
    m = re.search(r"you tried to allocate (\d+) bytes", status)
    return f"out of memory: one {int(m.group(1)) / 1e9:.1f} GB allocation refused" if m else status


def write_table(rows: list[dict], path: Path, args) -> None:
    lines = [
        "# Scale: time and peak memory against the number of stations",
        "",
        f"Command: `python benchmarks/scale.py` ({platform.processor() or platform.machine()}, one torch thread per "
        f"run, {os.cpu_count()} cores on the machine). {args.steps} hourly steps ({args.steps / 8760:.2g} year) "
        "of a Gaussian random "
        "field (100 km squared-exponential x AR(1) 0.97, 5 % missing) at the real cn-stations geometry (1,498) "
        "and at 10^4 / 10^5 uniform stations over its bounding box; task krige, 24 h windows, random split "
        f"(20 % test, 5 % val). Training: one epoch of {args.train_windows} windows, batch {args.batch_size}; "
        f"evaluation: {args.eval_windows} test windows over every test station. Peak = the run's resident "
        f"memory (ru_maxrss), data included; a run over {args.limit_gb:g} GB is stopped. *train s* includes "
        "validating the untrained model and the epoch (the val stations over every val-period window, about "
        "36; chunked in station mode); *s/step* is "
        "train s over the optimiser steps, and a full-year epoch at stride 24 is about 32 steps of 8 windows "
        "(255 training windows). Station mode: training on local subgraphs of 1,000 training stations "
        "(GP: 256), evaluation in chunks of 64 targets (IDW: 1,024) that see only their targets' 32 nearest "
        "visible stations (IDW, GP: 16); the GP is the local GP (8 neighbours), IDW uses its 16 nearest in "
        "both modes. Two runs could share the machine's 2 cores (each one thread).",
        code_line(),
        "",
        "| stations | model | mode | generate s | prepare s | train s (steps) | s/step | eval s | peak GB | status |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["mode"], r["n"])):
        f = lambda k, r=r: f"{r[k]:.1f}" if k in r else "—"  # noqa: E731
        train = f"{r['train_s']:.1f} ({r.get('steps', 0)})" if "train_s" in r else "—"
        per_step = f"{r['train_s'] / r['steps']:.2f}" if r.get("steps") else "—"
        lines.append(
            f"| {r['n']:,} | `{r['model']}` | {r['mode']} | {f('generate_s')} | {f('prepare_s')} | {train} | "
            f"{per_step} | {f('eval_s')} | {r['peak_gb']:.2f} | {short_status(r['status'])} |"
        )
    lines += ["", "Growth with N (slope of a log-log fit over the sizes that finished; 1 = linear):", "",
              "| model | mode | prepare | train | eval | peak memory |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for model in MODELS:
        for mode in MODES:
            ok = [r for r in rows if r["model"] == model and r["mode"] == mode and r["status"] == "ok"]
            if len(ok) < 2:
                continue
            n = [r["n"] for r in ok]
            s = [loglog_slope(n, [r[k] for r in ok]) for k in ("prepare_s", "train_s", "eval_s", "peak_gb")]
            lines.append(f"| `{model}` | {mode} | " + " | ".join("—" if v is None else f"{v:.2f}" for v in s) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1498,10000,100000")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--steps", type=int, default=24 * 365)
    p.add_argument("--train-windows", type=int, default=64)
    p.add_argument("--eval-windows", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit-gb", type=float, default=16.0)
    p.add_argument("--timeout", type=int, default=1200)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        n, model, mode = args.child.split(",")
        print(json.dumps(run_one(int(n), model, mode, args)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["n"], r["model"], r["mode"]) for r in rows}
    for n in map(int, args.sizes.split(",")):
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                if (n, model, mode) in done:
                    continue
                row = run_child(n, model, mode, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                write_table(rows, args.out, args)
    write_table(rows, args.out, args)
    print(f"wrote {args.out} (peak of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)")


if __name__ == "__main__":
    main()
