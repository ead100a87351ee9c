"""Where DiffRecon's fine estimate goes wrong, on a finished run: stage 2 alone, given the true
coarse map, against the guide it is centred on; and its one-step estimate x̂0 by noise level.

    python benchmarks/diffrecon_stage2_probe.py outputs/bench/era5_grid/runs/random-0.4/diffrecon/fold0-seed0 \
        --result benchmarks/results/diffrecon_stage2_probe.md --max-windows 8 --threads 1

Loads the run's trained model (:func:`stgraph.engine.run.load_trained`: its own config, identity
checked, its best checkpoint) and, over ``--max-windows`` evenly spaced windows of each period
(``--periods``, default val and test), scores in original units at the target (fine) cells:

* ``idw(true coarse)`` (or ``bicubic(true coarse)``, by the run's ``fine_guide``): stage 2's guide
  of the *true* coarse values at the fine nodes, its guide when stage 1 is perfect;
* ``stage 2 given the true coarse map``: the median of the run's number of stage-2 samples (its sampler and
  steps) conditioned on the true coarse map (stage 1 bypassed), the mean spread (std) of those
  samples, and one sample;
* ``x̂0 at step t``: the one-step estimate from the fine truth noised to step t, of the trained
  stage 2 and of its skip alone (the prior's posterior mean, i.e. an untrained network), for t in
  ``--steps``: a trained network should not be worse than its skip at any t;
* ``full model``: the run's own forward pass (stage 1's samples, then stage 2);

and then copies the run's own test scores (its ``metrics.json``, every test window).

For ``reconstruct`` runs (stations or the grid protocol) with ``stage2: diffusion``. The noise of
every draw is seeded, so a rerun gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from provenance import code_line  # noqa: E402  (benchmarks/provenance.py)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stgraph.engine.run import load_trained  # noqa: E402
from stgraph.models.diffrecon.fine import guide_to_fine  # noqa: E402
from stgraph.ops.quantiles import sample_quantiles  # noqa: E402


@torch.no_grad()
def probe(model, exp, period: str, max_windows: int, steps: list[int]) -> tuple[list[tuple[str, float]], int]:
    """[(row, MAE in original units or spread)], number of windows, for one period."""
    p = model.params
    src, tgt = exp.roles("test")
    inputs, truth = exp.eval_windows(period, max_windows, scaled_truth=True)
    idx = torch.arange(len(inputs))
    w, wt = inputs[idx], truth[idx]
    y, m, _ = exp.out_window(wt)
    batch = exp.batch(w, src, tgt)
    ci = model.coarse_inputs(batch)
    coarse = y[:, :, torch.as_tensor(src)]
    fine, mask = y[:, :, torch.as_tensor(tgt)], m[:, :, torch.as_tensor(tgt)]
    if not bool(m[:, :, torch.as_tensor(src)].all()):
        raise ValueError(f"{period}: the probe needs the true coarse map complete in every window")
    _, std = exp.train.scaler.stats(exp.targets, tgt)
    std = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1, fine.size(-1))  # (1 or N_f, C)

    def mae(est: torch.Tensor) -> float:
        return float(((est - fine).abs() * std)[mask].mean())

    guide = guide_to_fine(coarse, ci.pos, batch.pos_tgt, p.fine_guide, p.fine_k, p.idw_power)
    rows = [(f"{p.fine_guide}(true coarse)", mae(guide))]
    b, s = coarse.size(0), p.num_samples
    g = torch.Generator().manual_seed(p.sample_seed)
    completed = coarse.expand(s, *coarse.shape)  # the true coarse map as each of the S completions
    samples = model.sample_fine(completed, ci.time_enc, ci.pos, batch.pos_tgt, batch.static_tgt, g)  # (S, B, W, N_f, C)
    rows.append(("stage 2 given the true coarse map: median", mae(sample_quantiles(samples, (0.5,))[0])))
    rows.append(("stage 2 given the true coarse map: one sample", mae(samples[0])))
    rows.append(("stage 2 given the true coarse map: sample spread (std)", float((samples.std(0) * std)[mask].mean())))
    cond1 = model.fine.condition(coarse, ci.time_enc, ci.pos, batch.pos_tgt, batch.static_tgt)
    for step in steps:
        t = torch.full((b,), step)
        x_t = model.schedule.q_sample(fine, t, torch.randn(fine.shape, generator=g))
        prior = model.prior_eps(x_t, t, cond1.guide)
        rows.append(
            (f"x̂0 at step {step}: trained", mae(model.schedule.predict_x0(x_t, t, model.fine_eps(x_t, t, cond1))))
        )
        rows.append((f"x̂0 at step {step}: skip alone", mae(model.schedule.predict_x0(x_t, t, prior))))
    rows.append(("full model (stage 1's samples, then stage 2)", mae(model(batch).tgt)))
    return rows, len(inputs)


def recorded_scores(run: Path) -> list[str]:
    """The run's own test scores (its ``metrics.json``: every test window, original units), as lines."""
    path = run / "metrics.json"
    if not path.exists():
        return ["The run has no `metrics.json` (unfinished): no recorded scores."]
    m = json.loads(path.read_text())
    training = m.get("training", {})
    out = [
        f"The run's own test scores (`metrics.json`, every test window; best validation at step "
        f"{training.get('best_step', '?')} of {training.get('steps', '?')}):",
        "",
        "| cells | MAE | RMSE | CRPS | coverage 90 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, label in (("hidden", "fine (targets)"), ("removed", "removed coarse")):
        o = m.get("test", {}).get(group, {}).get("overall")
        if o:
            cov = o.get("coverage90", float("nan"))
            out.append(
                f"| {label} | {o['mae']:.3f} | {o['rmse']:.3f} | {o.get('crps', float('nan')):.3f} | {cov:.2f} |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--result", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--periods", default="val,test")
    ap.add_argument("--steps", default="0,10,25,40,49", help="diffusion steps of the x̂0 rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, exp, model = load_trained(args.run)
    if getattr(model, "fine", None) is None:
        raise ValueError(f"{args.run}: not a DiffRecon run with a stage-2 network (stage2: diffusion)")
    model.eval()
    steps = [int(v) for v in args.steps.split(",")]
    p = model.params
    tables = {}
    tic = time.perf_counter()
    for period in args.periods.split(","):
        tables[period] = probe(model, exp, period, args.max_windows, steps)
        print(period, tables[period], flush=True)
    hp = ", ".join(f"{k}={getattr(p, k)}" for k in ("skip", "prior_std", "edm_scaling") if hasattr(p, k))
    lines = [
        "# DiffRecon stage 2 probe",
        "",
        f"Command: `python benchmarks/diffrecon_stage2_probe.py {args.run} --result {args.result} "
        f"--max-windows {args.max_windows} --threads {args.threads}`",
        f"Run: `{exp.cfg.name}` ({exp.cfg.data.dataset}, task {exp.cfg.data.task}); model {hp}; "
        f"{p.num_samples} samples, {p.sampler} {p.sampling_steps} steps; machine: {platform.machine()}, "
        f"{args.threads} torch threads; {time.perf_counter() - tic:.0f} s.",
        code_line(),
        "",
        "MAE in original units at the fine (target) cells; "
        + ", ".join(f"{k}: {n} evenly spaced windows" for k, (_, n) in tables.items())
        + ".",
        "",
        "| row | " + " | ".join(tables) + " |",
        "|---|" + "---:|" * len(tables),
    ]
    names = [r for r, _ in next(iter(tables.values()))[0]]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{rows[i][1]:.3f}" for rows, _ in tables.values()) + " |")
    lines += ["", *recorded_scores(Path(args.run))]
    Path(args.result).write_text("\n".join(lines) + "\n")
    print("wrote", args.result)


if __name__ == "__main__":
    main()
