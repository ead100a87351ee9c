"""One small class per task (see :mod:`stgraph.engine.tasks.base`); ``get_task(name)``."""

from __future__ import annotations

from stgraph.engine.tasks.base import LossTerm, Task, TrainingView
from stgraph.engine.tasks.grid_reconstruct import GridReconstruct
from stgraph.engine.tasks.impute import Impute, hidden_cells
from stgraph.engine.tasks.reconstruct import Reconstruct
from stgraph.engine.tasks.stations import Forecast, Krige

TASK_CLASSES: dict[str, type[Task]] = {
    "forecast": Forecast,
    "krige": Krige,
    "impute": Impute,
    "reconstruct": Reconstruct,
}


def get_task(name: str, anchor=None, pattern=None, *, grid: int = 0) -> Task:
    """The task ``name``; ``anchor``: the protocol's anchor channel indices, ``pattern``: the
    experiment's sparse pattern (``reconstruct``) (see :class:`Task`); ``grid`` > 1
    (``data.grid_coarsen``): ``reconstruct`` under DiffRecon's grid protocol (:class:`GridReconstruct`)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"data.task must be one of {sorted(TASK_CLASSES)}, got '{name}'")
    if grid:
        if name != "reconstruct":
            raise ValueError(
                f"data.grid_coarsen={grid} is DiffRecon's grid protocol of task 'reconstruct', not '{name}'"
            )
        if grid < 2:
            raise ValueError(f"data.grid_coarsen must be 0 (off) or a block size >= 2, got {grid}")
        return GridReconstruct(anchor, pattern)
    return TASK_CLASSES[name](anchor, pattern)


__all__ = [
    "LossTerm",
    "Task",
    "TrainingView",
    "TASK_CLASSES",
    "get_task",
    "hidden_cells",
    "Forecast",
    "Krige",
    "Impute",
    "Reconstruct",
    "GridReconstruct",
]
