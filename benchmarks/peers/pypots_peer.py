"""An official implementation beside ours at equal CPU time: a PyPOTS imputer on the same AQI-36 cells.

    python benchmarks/peers/pypots_peer.py configs/bench/aqi36_steps.yaml --model SAITS \
        --minutes 25 --threads 1 --result benchmarks/results/peers.md

PyPOTS (``pip install pypots``) is the peer: its own model, its own training loop and its own
training regime (SAITS: masked imputation on 20 % of the observed training values, drawn anew per
window, plus the reconstruction of the observed ones; Adam; the best validation epoch kept). What is
ours is the protocol only, so the numbers are like for like with the suite's rows:

* the suite's ``lerp-knn`` run config gives the experiment (roles, periods, scaler, windows):
  the official out-of-sample setting (training months with their evaluation cells as training
  data), windows of 36 from every start, standardised with the same training scaler;
* validation: PyPOTS's own per-epoch metric on the suite's validation windows (the val months'
  evaluation cells, held out of the inputs: ``X_ori`` = inputs + those cells);
* test: the model wrapped as a station model and scored by :func:`stgraph.engine.evaluate.predict`
  and :func:`~stgraph.engine.evaluate.score` — every test window, all 20,434 evaluation cells, per
  cell (overlapping windows averaged) and per window;
* budget: wall-clock minutes on ``--threads`` torch threads. PyPOTS trains in epochs; the optimiser
  raises ``KeyboardInterrupt`` at the first step past the deadline, which PyPOTS's loop
  handles by keeping the best validated epoch so far. Steps and ms per step are recorded.

Stations are PyPOTS's features (36 of them), time its steps: PyPOTS's imputers are transductive
over a fixed station set, which ``impute`` (every station visible) allows.
Appends (or replaces) the model's row in ``--result``, with the machine, threads and code version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stgraph.bench import load_suite  # noqa: E402
from stgraph.engine.evaluate import predict, score  # noqa: E402
from stgraph.engine.experiment import prepare_experiment  # noqa: E402
from stgraph.models.base import Prediction  # noqa: E402

# Hyper-parameters: SAITS's for the Beijing air-quality dataset (its paper's Table 9 / PyPOTS's
# example), BRITS's 64 hidden units (GRIN's baseline), ImputeFormer's defaults.
PRESETS = {
    "SAITS": dict(n_layers=2, d_model=256, n_heads=4, d_k=64, d_v=64, d_ffn=128, dropout=0.1),
    "BRITS": dict(rnn_hidden_size=64),
    "TimesNet": dict(n_layers=2, top_k=3, d_model=64, d_ffn=64, n_kernels=5, dropout=0.1),
}


def budget_optimizer(base_cls, deadline: float, counter: dict, validated=lambda: True):
    """PyPOTS's optimiser wrapper ``base_cls``, counting its steps and interrupting training
    (``KeyboardInterrupt``, which PyPOTS's loop handles by keeping the best validated epoch) at the
    first step once ``deadline`` (``time.perf_counter``) has passed and ``validated()`` says an epoch
    has been validated (PyPOTS refuses a fit without one; the overrun is recorded in minutes)."""

    class BudgetOptimizer(base_cls):
        def step(self, closure=None):
            if time.perf_counter() > deadline and validated():
                raise KeyboardInterrupt("time budget spent")
            counter["steps"] += 1
            return super().step(closure)

    return BudgetOptimizer


class PeerAsStationModel(nn.Module):
    """A fitted PyPOTS imputer behind the engine's ``forward(batch) -> Prediction``: the visible
    stations' windows in, their completed series out (``impute``: no station is hidden)."""

    trainable = False

    def __init__(self, peer, channel: int):
        super().__init__()
        self.peer, self.channel = peer, channel

    def forward(self, batch) -> Prediction:
        x = batch.x[..., self.channel]  # (B, W, N)
        m = batch.x_mask[..., self.channel]
        X = torch.where(m, x, torch.nan).numpy()
        out = self.peer.predict({"X": X})["imputation"]  # (B, W, N)
        src = torch.as_tensor(out, dtype=torch.float32)[..., None]  # (B, W, N, 1)
        return Prediction(src=src, tgt=src.new_zeros(src.shape[0], src.shape[1], 0, 1))


def as_array(windows, channel: int) -> np.ndarray:
    """(B, W, N) float32 with NaN where unobserved, from every window of a WindowDataset."""
    w = windows[torch.arange(len(windows))]
    return torch.where(w.x_mask[..., channel], w.x[..., channel], torch.nan).numpy()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suite")
    ap.add_argument("--model", default="SAITS", choices=sorted(PRESETS))
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", default="benchmarks/results/peers.md")
    ap.add_argument("--json", default=None, help="also write the record here (default: next to --result)")
    args = ap.parse_args(argv)

    import pypots
    from pypots.imputation import BRITS, SAITS, TimesNet
    from pypots.optim import Adam

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    suite = load_suite(args.suite)
    spec = next((r for r in suite.runs if r.model == "lerp-knn"), None)
    if spec is None:
        raise SystemExit(f"{args.suite}: the suite has no lerp-knn row to take the protocol from")
    exp = prepare_experiment(spec.config)
    if exp.task != "impute" or len(exp.targets) != 1:
        raise SystemExit("the peer runs the impute task with one target channel")
    ch = int(exp.targets[0])
    train_X = as_array(exp.train.windows, ch)  # (B, W, N): training months, their eval cells restored
    val_in, val_truth = exp.eval_windows("val", spec.config.train.max_val_windows, scaled_truth=True)
    val_X = as_array(val_in, ch)
    truth = val_truth[torch.arange(len(val_truth))]
    held = torch.where(truth.x_mask[..., ch], truth.x[..., ch], torch.nan).numpy()
    val_ori = np.where(np.isnan(val_X), held, val_X)  # inputs + the val months' evaluation cells

    counter = {"steps": 0}
    cls = {"SAITS": SAITS, "BRITS": BRITS, "TimesNet": TimesNet}[args.model]
    n_steps, n_features = train_X.shape[1], train_X.shape[2]
    start = time.perf_counter()
    deadline = start + 60.0 * args.minutes
    holder = {}
    validated = lambda: getattr(holder.get("peer"), "best_model_dict", None) is not None  # noqa: E731
    peer = cls(
        n_steps=n_steps, n_features=n_features, batch_size=args.batch_size, epochs=100_000, patience=None,
        optimizer=budget_optimizer(Adam, deadline, counter, validated)(lr=args.lr), device="cpu",
        verbose=False, **PRESETS[args.model],
    )
    holder["peer"] = peer
    t0 = time.perf_counter()
    peer.fit({"X": train_X}, {"X": val_X, "X_ori": val_ori})
    train_s = time.perf_counter() - t0
    steps = counter["steps"]
    metrics = score(exp, predict(PeerAsStationModel(peer, ch), exp))
    hid = metrics["hidden"]
    record = {
        "model": f"pypots {args.model}",
        "pypots": pypots.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "minutes_budget": args.minutes,
        "train_seconds": round(train_s, 1),
        "steps": steps,
        "ms_per_step": round(1000.0 * train_s / max(steps, 1), 1),
        "best_epoch": int(getattr(peer, "best_epoch", -1)),
        "epochs_run": int(np.ceil(steps * args.batch_size / len(train_X))),
        "training_windows": len(train_X),
        "mae": hid["overall"]["mae"],
        "rmse": hid["overall"]["rmse"],
        "window_mae": hid["per_window"]["mae"],
        "cells": int(hid["overall"].get("count", -1)),
        "hparams": {**PRESETS[args.model], "batch_size": args.batch_size, "lr": args.lr},
        "code": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "stgraph", "benchmarks/peers")),
        "suite": args.suite,
    }
    print(json.dumps(record, indent=1))
    out = Path(args.json or Path(args.result).with_suffix(".json"))
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if r["model"] != record["model"]] + [record]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    write_table(Path(args.result), rows)
    return 0


def write_table(path: Path, rows: list[dict]) -> None:
    lines = [
        "# Peers at equal CPU time (AQI-36 impute, out-of-sample, every test window)",
        "",
        "- command: `python benchmarks/peers/pypots_peer.py configs/bench/aqi36_steps.yaml --model NAME "
        "--minutes M --threads 1` (one row per model; the record in the `.json` beside this file)",
        "- protocol: the `aqi36_steps` suite's (its `lerp-knn` row's config): training months with their "
        "evaluation cells as training data, windows of 36 from every start, the same scaler; scored by the "
        "engine's `predict` and `score` on all test windows (MAE per cell = overlapping windows averaged; "
        "WINDOW MAE = SPIN's per-window scoring).",
        "- training: the peer's own loop and regime (PyPOTS), stopped at the wall-clock budget, best "
        "validated epoch kept.",
        "",
        "| model | MAE | RMSE | WINDOW MAE | minutes | steps | ms / step | best epoch | threads | code |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} (pypots {r['pypots']}) | {r['mae']:.2f} | {r['rmse']:.2f} | {r['window_mae']:.2f} | "
            f"{r['train_seconds'] / 60:.1f} | {r['steps']:,} | {r['ms_per_step']:.0f} | {r['best_epoch']} | "
            f"{r['threads']} | `{r['code']}`{' (dirty)' if r['dirty'] else ''} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
