"""``train.tensorboard`` (on by default): the training log's records as TensorBoard scalars."""

import pytest
from tensorboard.backend.event_processing import event_accumulator

from stgraph.engine.config import config_from_dict
from stgraph.engine.run import run_experiment
from stgraph.engine.tensorboard_log import TENSORBOARD_DIR
from stgraph.testing import synthetic_stations


def test_training_curves_are_written_as_tensorboard_scalars(tmp_path):
    data = synthetic_stations(num_nodes=10, num_steps=24 * 8, seed=2)
    cfg = config_from_dict(
        {
            "data": {"target_channels": ["x0"], "task": "krige", "window": 12, "eval_steps": []},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": "ignnk", "hparams": {"hidden_channels": 8, "k": 3}},
            "train": {"batch_size": 8, "steps": 12, "val_every": 4, "max_eval_windows": 16},
        }
    )
    run, _ = run_experiment(cfg, tmp_path, data=data, progress=False)
    acc = event_accumulator.EventAccumulator(str(run.path / TENSORBOARD_DIR))
    acc.Reload()
    log = run.read_log()
    val = acc.Scalars("validation/score")
    assert len(log) >= 2 and [e.step for e in val] == [r["step"] for r in log]
    assert [e.value for e in val] == pytest.approx([r["val_mae_scaled"] for r in log], rel=1e-6)
    assert {"loss/train", "lr", "speed/windows_per_second"} <= set(acc.Tags()["scalars"])


def test_a_resumed_run_drops_what_a_crashed_attempt_wrote_after_its_checkpoint(tmp_path):
    """Records at steps 4, 8, 12; the run crashed after 12's events but resumes from the checkpoint
    at step 8: TensorBoard keeps 4 and 8 and shows the resumed attempt's 12, not the crashed one's."""
    from stgraph.engine.tensorboard_log import TensorBoardLog

    first = TensorBoardLog(tmp_path)
    for step, value in ((4, 1.0), (8, 0.8), (12, 99.0)):  # 12: written, then the process died
        first.add({"step": step, "val_mae_scaled": value})
    first.close()
    resumed = TensorBoardLog(tmp_path, resume_step=8)
    resumed.add({"step": 12, "val_mae_scaled": 0.7})
    resumed.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("validation/score")]
    assert got == [(4, 1.0), (8, pytest.approx(0.8)), (12, pytest.approx(0.7))]
