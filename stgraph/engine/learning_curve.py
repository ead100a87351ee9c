"""A run's learning curve: train loss, validation MAE and learning rate per epoch, as CSV and PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ("epoch", "step", "train_loss", "val_mae_scaled", "lr", "epoch_seconds")


def write_learning_curve(
    log: list[dict],
    folder: str | Path,
    title: str = "",
    val_key: str = "val_mae_scaled",
    val_label: str = "val MAE (standardised)",
) -> pd.DataFrame:
    """Write ``learning_curve.csv`` and ``learning_curve.png`` into ``folder`` from the training
    log's per-epoch records; returns the table (empty log: nothing is written). ``val_key``: the
    records' validation column (a fitting model's own loop has its own metric, ``val_score``)."""
    folder = Path(folder)
    columns = [val_key if c == "val_mae_scaled" else c for c in COLUMNS]
    table = pd.DataFrame([{k: r.get(k) for k in columns} for r in log], columns=columns)
    if not len(table):
        return table
    table.to_csv(folder / "learning_curve.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table.epoch, table.train_loss, marker="o", label="train loss")
    ax.plot(table.epoch, table[val_key], marker="s", label=val_label)
    best = table[val_key].astype(float).idxmin()
    ax.axvline(table.epoch[best], color="grey", ls=":", label=f"best epoch {table.epoch[best]}")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    if table.lr.notna().any():
        lr = ax.twinx()
        lr.plot(table.epoch, table.lr, color="tab:green", alpha=0.4, lw=1)
        lr.set_ylabel("learning rate", color="tab:green")
    fig.tight_layout()
    fig.savefig(folder / "learning_curve.png", dpi=100)
    plt.close(fig)
    return table
