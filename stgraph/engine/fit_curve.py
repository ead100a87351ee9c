"""A fitting model's own training curve: a ``fit`` hook that trains inside its own loop (PyPOTS's
imputers) may return, in its record,

* ``curve``: one dict per validation, ``{"epoch", "step", "train_loss", "val_score",
  "epoch_seconds"}`` (``val_score``: the loop's own validation metric, lower is better; its name in
  the record's ``val_score_name``), and
* ``training``: the summary the leaderboard reads from a trained run, ``{"epochs_run",
  "best_epoch", "steps", "best_step", "steps_per_second", "early_stopped", "stopped"}``.

:func:`write_fit_curve` writes the curve as the trainer writes its own (``learning_curve.csv`` and
``.png``, TensorBoard scalars under ``tensorboard/`` when ``train.tensorboard``), and
:func:`fit_training_summary` gives the summary, so such a row gets the same learning curve and the
same ↗ mark as a row trained by the engine (not the ≈ anchor mark: no untrained model is scored).
"""

from __future__ import annotations

from pathlib import Path

from stgraph.engine.learning_curve import write_learning_curve

SUMMARY_KEYS = ("epochs_run", "best_epoch", "steps", "best_step", "steps_per_second", "early_stopped", "stopped")


def write_fit_curve(record: dict, run_path: str | Path, title: str = "", tensorboard: bool = True) -> bool:
    """Write ``record["curve"]`` (if any) into the run folder; True when something was written."""
    curve = record.get("curve") or []
    if not curve:
        return False
    label = record.get("val_score_name", "validation score")
    write_learning_curve(curve, run_path, title=title, val_key="val_score", val_label=label)
    if tensorboard:
        from stgraph.engine.tensorboard_log import TensorBoardLog

        board = TensorBoardLog(run_path)
        for row in curve:
            board.add(row)
        board.close()
    return True


def fit_training_summary(record: dict) -> dict:
    """The record's ``training`` summary, restricted to :data:`SUMMARY_KEYS` (empty if none)."""
    summary = record.get("training") or {}
    return {k: summary[k] for k in SUMMARY_KEYS if k in summary}
