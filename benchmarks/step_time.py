"""Optimiser step time of every trained model of a suite, on its real data and suite settings.

    python benchmarks/step_time.py configs/bench/aqi36.yaml --task impute \
        --result benchmarks/results/step_time.md [--steps 20] [--threads 2]

For each trained model row of the task (fold 0, seed 0, the suite's widths and batch size) it builds
the experiment, takes ``--warmup`` steps, then times ``--steps`` optimiser steps exactly as the
trainer takes them (batch assembly from the task's training view, forward, loss, backward, clip,
AdamW step), and reports milliseconds per step, windows per second, parameters, and how many steps
fit in one hour. Appends (or replaces) the task's section in the results file, with the machine,
threads and code version. A step budget for a suite is chosen from these numbers. The last column
is the process's peak resident size after the row (a maximum over the rows timed so far: time one
model per invocation to read it as that model's). ``--retain-memory`` times with
``train.retain_memory`` on (:mod:`stgraph.engine.allocator`), in its own section.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite  # noqa: E402
from stgraph.engine.run import build_experiment  # noqa: E402
from stgraph.engine.station_batches import StationBatcher  # noqa: E402
from stgraph.engine.trainer import training_step  # noqa: E402
from stgraph.ops.losses import LOSSES  # noqa: E402


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


def time_steps(cfg, warmup: int, steps: int, profile: int = 0, compile_model: bool = False) -> dict:
    """Seconds per optimiser step of ``cfg``'s model on its own training windows; ``profile`` > 0
    prints the operators that take the most time (self CPU, torch.profiler) over the timed steps,
    that many rows. ``compile_model``: the forward through ``torch.compile`` (its compilation,
    in the warm-up steps, shows in ``warmup_s``)."""
    exp, model = build_experiment(cfg)
    tc = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    loss_fn = LOSSES[tc.loss]
    windows, nodes = exp.train.windows, exp.train.stations
    batcher = StationBatcher(exp)
    gen = torch.Generator().manual_seed(0)
    model.set_training_budget(warmup + steps)
    model.train()
    forward = torch.compile(model) if compile_model else model
    warm_start = time.perf_counter()
    times = []
    prof = None
    for i in range(warmup + steps):
        if profile and i == warmup:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        idx = torch.randint(len(windows), (tc.batch_size,), generator=gen)
        t0 = time.perf_counter()
        view = exp.task.training_view(*batcher.cut(windows, idx, nodes, gen), exp.targets, tc, gen)
        opt.zero_grad(set_to_none=True)
        loss = training_step(forward, exp, view, loss_fn)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        elif i == warmup - 1:
            warm_s = time.perf_counter() - warm_start
    if prof is not None:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile), flush=True)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s = float(np.median(times))
    return {"ms": 1e3 * s, "windows_per_s": tc.batch_size / s, "params": params, "batch": tc.batch_size,
            "train_windows": len(windows), "per_hour": int(3600 / s), "warmup_s": warm_s}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--task", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--models", help="comma-separated rows (default: every trained row of the task)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true",
                    help="time the model through torch.compile (a separate section of the results file)")
    ap.add_argument("--retain-memory", action="store_true",
                    help="time with train.retain_memory on (freed memory kept in the process; a separate section)")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="print the ROWS costliest operators per model (the step times then include the profiler)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    from stgraph.models.registry import get_model_class

    specs = [r for r in suite.runs if r.task == args.task and r.fold == suite.runs[0].fold and r.seed == 0]
    specs = [r for r in specs if get_model_class(r.config.model.name)[0].trainable]
    if args.models:
        specs = [r for r in specs if r.model in args.models.split(",")]
    rows = []
    for spec in specs:
        cfg = spec.config
        if args.retain_memory:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, retain_memory=True))
        got = time_steps(cfg, args.warmup, args.steps, args.profile, args.compile)
        got["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{spec.model:12s} {got['ms']:8.1f} ms/step  {got['windows_per_s']:7.1f} windows/s  "
              f"{got['params']:9,d} parameters", flush=True)  # fmt: skip
        rows.append((spec.model, got))
    command = f"python benchmarks/step_time.py {args.suite} --task {args.task} --result {args.result}"
    command += f" --threads {args.threads}" + (" --compile" if args.compile else "")
    command += " --retain-memory" if args.retain_memory else ""
    head = f"## `{suite.name}` / `{args.task}`" + (" / `torch.compile`" if args.compile else "")
    head += " / `retain_memory`" if args.retain_memory else ""
    lines = [
        head, "",
        f"- command: `{command}` (median of {args.steps} steps after {args.warmup} warm-up steps)",
        f"- machine: {_cpu()}, {os.cpu_count()} cores, {args.threads} torch threads, one run at a time; "
        f"code `{_commit()}`",
        "",
        "| model | ms / step | windows / s | batch | parameters | steps / hour | training windows | warm-up s "
        "| process peak GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    lines += [f"| `{m}` | {g['ms']:.1f} | {g['windows_per_s']:.0f} | {g['batch']} | {g['params']:,} | "
              f"{g['per_hour']:,} | {g['train_windows']:,} | {g['warmup_s']:.1f} | "
              f"{g['peak_gb']:.1f} |" for m, g in rows]  # fmt: skip
    section = "\n".join(lines) + "\n"
    path = Path(args.result)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Optimiser step time per model\n\n"
    if head + "\n" in text:  # replace this suite/task's section (the whole heading line)
        start = text.index(head + "\n")
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end < 0 else text[end + 1 :])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
