"""A fitting model's own learning curve (``engine.fit_curve``): written as the trainer's is (CSV with
its own validation column, PNG, TensorBoard scalars), drawn by ``stgraph plot curves``, and its
summary restricted to the leaderboard's keys."""

import pandas as pd

from stgraph.engine.fit_curve import fit_training_summary, write_fit_curve
from stgraph.viz.figures import learning_curves

CURVE = [
    {"epoch": 1, "step": 10, "train_loss": 0.9, "val_score": 0.5, "epoch_seconds": 1.0},
    {"epoch": 2, "step": 20, "train_loss": 0.7, "val_score": 0.4, "epoch_seconds": 1.0},
    {"epoch": 3, "step": 30, "train_loss": 0.6, "val_score": 0.45, "epoch_seconds": 1.0},
]


def test_the_curve_is_written_with_its_own_validation_column_and_tensorboard(tmp_path):
    assert write_fit_curve({"curve": CURVE, "val_score_name": "MSE"}, tmp_path, "m / impute")
    table = pd.read_csv(tmp_path / "learning_curve.csv")
    assert list(table.val_score) == [0.5, 0.4, 0.45] and "val_mae_scaled" not in table.columns
    assert (tmp_path / "learning_curve.png").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert learning_curves(tmp_path, tmp_path / "curves.png").exists()


def test_no_curve_writes_nothing(tmp_path):
    assert not write_fit_curve({"steps": 3}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_summary_keeps_only_the_leaderboards_keys():
    record = {"training": {"epochs_run": 3, "best_step": 20, "steps": 30, "other": 1}, "curve": CURVE}
    assert fit_training_summary(record) == {"epochs_run": 3, "best_step": 20, "steps": 30}
    assert fit_training_summary({"curve": CURVE}) == {}
