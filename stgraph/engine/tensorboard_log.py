"""A run's training curves as TensorBoard event files (``train.tensorboard: true``).

Each record the trainer appends to ``train_log.jsonl`` (one per validation) is also written as
scalars at its optimiser step under ``RUN/tensorboard/``: ``loss/train``, ``validation/score``
(the standardised MAE, or the model's objective with ``train.val_score: loss``), ``lr``,
``speed/windows_per_second``. A resumed run opens the writer with ``purge_step`` just after the step
it resumes from (its checkpoint's, whose record is kept), so TensorBoard drops whatever a crashed
attempt wrote after that checkpoint. Point TensorBoard at
one run folder or at a suite's ``OUT/runs`` to compare every run of it:
``tensorboard --logdir outputs/bench/uci12/runs``.
"""

from __future__ import annotations

from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
SCALARS = {
    "train_loss": "loss/train",
    "val_mae_scaled": "validation/score",
    "val_score": "validation/score",  # a fitting model's own loop's metric (engine.fit_curve)
    "lr": "lr",
    "windows_per_second": "speed/windows_per_second",
}


class TensorBoardLog:
    """Writes the trainer's log records as TensorBoard scalars (see the module docstring).

    Args:
        run_path: the run folder. resume_step: the optimiser step training resumes from (0: a
            fresh run), whose later events are purged.
    """

    def __init__(self, run_path: str | Path, resume_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's writer needs the tensorboard package
            raise ImportError(
                "train.tensorboard: true needs the tensorboard package: pip install tensorboard"
            ) from e
        folder = Path(run_path) / TENSORBOARD_DIR
        # purge_step drops events at steps >= it: keep the checkpoint's own record
        self.writer = SummaryWriter(str(folder), purge_step=resume_step + 1 if resume_step else None)

    def add(self, record: dict) -> None:
        """Write one log record's scalars at its ``step``."""
        step = int(record["step"])
        for key, tag in SCALARS.items():
            value = record.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
