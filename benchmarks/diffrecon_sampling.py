"""DiffRecon's accuracy against its sampling cost, on a finished run (its own test windows).

    python benchmarks/diffrecon_sampling.py outputs/bench/aqi36_csdi/runs/impute/diffrecon-csdi/fold0-seed0 \
        --result benchmarks/results/diffrecon_sampling.md --max-windows 12 --threads 1

Re-evaluates the run's trained model (:func:`stgraph.engine.run.load_trained`: the run's own
config, identity checked, its best checkpoint) with the sampler swapped: DDIM with 5, 10, 20 and 50 steps
and ancestral DDPM (all T steps) at the run's number of samples; 1, 5, 10 and 20 samples with the
run's sampler; stochastic DDIM (η = 1) at the run's steps and samples; with ``--headline``, CSDI's
headline setting too (the median of 100 samples of ancestral DDPM over all T steps), and with
``--headline-only`` that row alone. Each row: MAE, RMSE, CRPS and
90 % coverage of the scored cells (original units, each cell once) and the wall time per window on
this machine (``torch`` threads as set). ``--max-windows N`` scores N evenly spaced test windows
instead of all of them (the engine's ``train.max_eval_windows``), so a sweep of a CSDI-sized
model fits a session; the file says how many windows and cells each row scored.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import torch
from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.engine.evaluate import predict, score  # noqa: E402
from stgraph.engine.run import load_trained  # noqa: E402


def evaluate(model, exp) -> tuple[dict, float, int]:
    tic = time.perf_counter()
    arrays = predict(model, exp, "test", "test")
    seconds = time.perf_counter() - tic
    return score(exp, arrays)["hidden"]["overall"], seconds, len(arrays["start"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--result", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--headline", action="store_true", help="add CSDI's headline: 100 samples of DDPM over all T steps")
    ap.add_argument("--headline-only", action="store_true", help="only CSDI's headline row")
    ap.add_argument("--max-windows", type=int, default=None, help="score this many evenly spaced test windows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, exp, model = load_trained(args.run)
    cfg = exp.cfg
    if args.max_windows is not None:
        cfg.train.max_eval_windows = args.max_windows  # after the identity check: scoring only
    base = model.params
    settings = [("ddim", n, base.num_samples, base.eta) for n in (5, 10, 20, 50)]
    settings += [("ddpm", base.diffusion_steps, base.num_samples, base.eta)]
    settings += [(base.sampler, base.sampling_steps, s, base.eta) for s in (1, 5, 10, 20)]
    settings += [("ddim", base.sampling_steps, base.num_samples, 1.0)]  # stochastic DDIM
    headline = [("ddpm", base.diffusion_steps, 100, base.eta)]  # CSDI: median of 100 samples, 50 DDPM steps
    settings = headline if args.headline_only else settings + headline if args.headline else settings
    rows = []
    for sampler, steps, samples, eta in dict.fromkeys(settings):
        model.params = dataclasses.replace(base, sampler=sampler, sampling_steps=steps, num_samples=samples, eta=eta)
        m, seconds, windows = evaluate(model, exp)
        rows.append((sampler if sampler == "ddpm" else f"ddim η={eta:g}", steps, samples, m, seconds / windows))
        scored = (windows, int(m["count"]))
        print(sampler, steps, samples, eta, round(m["mae"], 3), round(seconds / windows, 3), flush=True)
    lines = [
        "# DiffRecon: accuracy against sampling cost",
        "",
        f"Command: `python benchmarks/diffrecon_sampling.py {args.run} --result {args.result}"
        + (" --headline-only" if args.headline_only else " --headline" if args.headline else "")
        + (f" --max-windows {args.max_windows}" if args.max_windows is not None else "")
        + (f" --threads {args.threads}`" if args.threads != 2 else "`"),
        f"Run: `{cfg.name}` ({cfg.data.dataset}, task {cfg.data.task}, eval_stride {cfg.data.eval_stride}); "
        f"machine: {platform.machine()}, {args.threads} torch threads; every row scored {scored[0]} test "
        f"windows{' (evenly spaced)' if args.max_windows is not None else ''}, {scored[1]:,} cells.",
        code_line(),
        "",
        "| sampler | steps | samples | MAE | RMSE | CRPS | coverage 90 % | s / window |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sampler, steps, samples, m, per in rows:
        cov = m.get("coverage90", float("nan"))
        lines.append(
            f"| {sampler} | {steps} | {samples} | {m['mae']:.2f} | {m['rmse']:.2f} | {m.get('crps', float('nan')):.2f} "
            f"| {cov:.2f} | {per:.3f} |"
        )
    Path(args.result).write_text("\n".join(lines) + "\n")
    print("wrote", args.result)


if __name__ == "__main__":
    main()
