"""Which cells should imputation training hide? Best validation MAE per hiding pattern (AQI-36).

    python benchmarks/impute_hiding.py ignnk random,random:12,history,mix
    python benchmarks/impute_hiding.py stgcn history

Each variant trains the model on AQI-36 ``impute`` (out-of-sample, window 36, training stride 4,
at most 12 epochs, patience 4) with ``train.hide_pattern`` (``random``, ``history``, ``mix``; a
``:N`` suffix sets ``hide_block``) and prints the best validation MAE (standardised units). Only
validation cells are read: the test months' cells never decide anything here. Run folders go to
``outputs/impute_hiding``.
"""

from __future__ import annotations

import sys

import torch

from stgraph.datasets import load_dataset
from stgraph.engine.config import config_from_dict
from stgraph.engine.run import run_experiment

HPARAMS = {
    "ignnk": {"hidden_channels": 100, "order": 1, "k": 8},
    "stgcn": {"hidden_channels": 32, "bottleneck_channels": 16, "k": 8, "num_blocks": 3, "dilation": 2},
    "aqnet": {"hidden_channels": 32, "num_layers": 1, "k": 20, "scale_km": 20.0},
    "dcrnn": {"hidden_channels": 32, "k": 8},
}


def main() -> None:
    torch.set_num_threads(1)
    model, variants = sys.argv[1], sys.argv[2].split(",")
    data = load_dataset("aqi36")
    for variant in variants:
        pattern, block = variant.split(":") if ":" in variant else (variant, "1")
        cfg = config_from_dict(
            {
                "name": f"{model}-{variant}",
                "data": {"dataset": "aqi36", "target_channels": ["PM2.5"], "window": 36, "stride": 4,
                         "task": "impute", "eval_steps": []},
                "split": {"test_months": [3, 6, 9, 12], "time_val": 0.1, "time_gap": 0},
                "model": {"name": model, "hparams": HPARAMS[model]},
                "train": {"epochs": 12, "patience": 4, "max_eval_windows": 1024, "hide_fraction": 0.25,
                          "src_loss_weight": 0.1, "hide_pattern": pattern, "hide_block": int(block)},
            }
        )  # fmt: skip
        _, metrics = run_experiment(cfg, "outputs/impute_hiding", data=data, progress=False)
        t = metrics["training"]
        print(f"{model} {variant}: best val MAE {t['best_val']:.4f} at epoch {t['best_epoch']} of {t['epochs_run']}")


if __name__ == "__main__":
    main()
