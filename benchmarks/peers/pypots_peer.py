"""A PyPOTS imputer beside ours at equal CPU time, on the same AQI-36 cells.

    python benchmarks/peers/pypots_peer.py configs/bench/aqi36_steps.yaml --model SAITS \
        --minutes 30 --threads 1 --result benchmarks/results/peers.md

PyPOTS (``pip install pypots``) is the peer: its own model, its own training loop and its own
training regime (SAITS: masked imputation on 20 % of the observed training values, drawn anew per
window, plus the reconstruction of the observed ones; BRITS: its bidirectional recurrent loss;
Adam; the best validation epoch kept). What is ours is the protocol only (:mod:`common`), so the
numbers are like for like with the suite's rows:

* the suite's ``lerp-knn`` run config gives the experiment (roles, periods, scaler, windows): the
  official out-of-sample setting (training months with their evaluation cells as training data),
  windows of 36 from every start, standardised with the same training scaler;
* validation: PyPOTS's own per-epoch metric on the suite's validation windows (the validation
  months' evaluation cells, held out of the inputs: ``X_ori`` = inputs + those cells);
* test: the model wrapped as a station model and scored by the engine on every test window, all
  20,434 evaluation cells, per cell (overlapping windows averaged) and per window;
* budget: wall-clock minutes on ``--threads`` torch threads. PyPOTS trains in epochs; the optimiser
  raises ``KeyboardInterrupt`` at the first step past the deadline once an epoch has been
  validated, which PyPOTS's loop handles by keeping the best validated epoch so far.

Stations are PyPOTS's features (36 of them), time its steps: PyPOTS's imputers are transductive
over a fixed station set, which ``impute`` (every station visible) allows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Deadline, code_version, load_protocol, save_record, score_peer  # noqa: E402

# Hyper-parameters: SAITS's for the Beijing air-quality dataset (its paper's Table 9 / PyPOTS's
# example), BRITS's 64 hidden units (GRIN's baseline), TimesNet's small setting.
PRESETS = {
    "SAITS": dict(n_layers=2, d_model=256, n_heads=4, d_k=64, d_v=64, d_ffn=128, dropout=0.1),
    "BRITS": dict(rnn_hidden_size=64),
    "TimesNet": dict(n_layers=2, top_k=3, d_model=64, d_ffn=64, n_kernels=5, dropout=0.1),
    # CSDI's AQI-36 configuration (its config/base.yaml): 4 layers x 64 channels, 8 heads, time
    # embedding 128, feature embedding 16, step embedding 128, 50 steps of the quad schedule, the
    # mix masking strategy (PyPOTS draws the history pattern from the previous window in the batch)
    "CSDI": dict(n_layers=4, n_heads=8, n_channels=64, d_time_embedding=128, d_feature_embedding=16,
                 d_diffusion_embedding=128, n_diffusion_steps=50, target_strategy="mix"),  # fmt: skip
}


def budget_optimizer(base_cls, deadline: Deadline, counter: dict, validated=lambda: True):
    """PyPOTS's optimiser wrapper ``base_cls``, counting its steps and interrupting training
    (``KeyboardInterrupt``, which PyPOTS's loop handles by keeping the best validated epoch) at the
    first step once ``deadline`` has passed and ``validated()`` says an epoch has been validated
    (PyPOTS refuses a fit without one; the overrun shows in the recorded minutes)."""

    class BudgetOptimizer(base_cls):
        def step(self, closure=None):
            if deadline.passed() and validated():
                raise KeyboardInterrupt("time budget spent")
            counter["steps"] += 1
            return super().step(closure)

    return BudgetOptimizer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("suite")
    ap.add_argument("--model", default="SAITS", choices=sorted(PRESETS))
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=100, help="CSDI: samples per window (median scored)")
    ap.add_argument("--result", default="benchmarks/results/peers.md")
    ap.add_argument("--json", default=None, help="also write the record here (default: next to --result)")
    args = ap.parse_args(argv)

    import pypots
    from pypots.imputation import BRITS, CSDI, SAITS, TimesNet
    from pypots.optim import Adam

    version = code_version()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 (PyPOTS draws its masks from the global generator)
    proto = load_protocol(args.suite)
    val_ori = np.where(np.isnan(proto.val_x), proto.val_truth, proto.val_x)  # inputs + held-out cells

    counter, holder = {"steps": 0}, {}
    validated = lambda: getattr(holder.get("peer"), "best_model_dict", None) is not None  # noqa: E731
    cls = {"SAITS": SAITS, "BRITS": BRITS, "TimesNet": TimesNet, "CSDI": CSDI}[args.model]
    deadline = Deadline(args.minutes)
    peer = cls(
        n_steps=proto.train_x.shape[1], n_features=proto.train_x.shape[2], batch_size=args.batch_size,
        epochs=100_000, patience=None, device="cpu", verbose=False,
        optimizer=budget_optimizer(Adam, deadline, counter, validated)(lr=args.lr), **PRESETS[args.model],
    )  # fmt: skip
    holder["peer"] = peer
    t0 = time.perf_counter()
    peer.fit({"X": proto.train_x}, {"X": proto.val_x, "X_ori": val_ori})
    train_s = time.perf_counter() - t0
    steps = counter["steps"]
    if args.model == "CSDI":  # (B, S, W, N) samples of 50 DDPM steps -> (S, B, W, N): median, CRPS, coverage
        hid = score_peer(
            proto, lambda x: np.moveaxis(peer.predict({"X": x}, n_sampling_times=args.samples)["imputation"], 1, 0)
        )
    else:
        hid = score_peer(proto, lambda x: peer.predict({"X": x})["imputation"])
    record = {
        "model": args.model,
        "library": f"pypots {pypots.__version__}",
        "torch": torch.__version__,
        "threads": args.threads,
        "minutes_budget": args.minutes,
        "train_seconds": round(train_s, 1),
        "steps": steps,
        "ms_per_step": round(1000.0 * train_s / max(steps, 1), 1),
        "best_at": f"epoch {int(getattr(peer, 'best_epoch', -1))}",
        "epochs_run": int(np.ceil(steps * args.batch_size / len(proto.train_x))),
        "training_windows": len(proto.train_x),
        "mae": hid["overall"]["mae"],
        "rmse": hid["overall"]["rmse"],
        "window_mae": hid["per_window"]["mae"],
        **({k: hid["overall"][k] for k in ("crps", "coverage90") if k in hid["overall"]}),
        "cells": int(hid["overall"].get("count", -1)),
        "hparams": {**PRESETS[args.model], "batch_size": args.batch_size, "lr": args.lr,
                    **({"samples": args.samples} if args.model == "CSDI" else {})},  # fmt: skip
        **version,
        "suite": args.suite,
    }
    print(record)
    save_record(Path(args.result), record, Path(args.json) if args.json else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
