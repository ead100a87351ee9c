"""One small class per task (see :mod:`stgraph.engine.tasks.base`); ``get_task(name)``."""

from __future__ import annotations

from stgraph.data.batch import KINDS
from stgraph.engine.tasks.base import LossTerm, Task, TrainingView
from stgraph.engine.tasks.grid_reconstruct import GridReconstruct
from stgraph.engine.tasks.impute import Impute, hidden_cells
from stgraph.engine.tasks.reconstruct import Reconstruct
from stgraph.engine.tasks.stations import Forecast, Krige

TASK_CLASSES: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Make a :class:`Task` subclass available as ``data.task: <cls.name>`` (usable as a class
    decorator). Its ``kind`` must be one of :data:`~stgraph.data.batch.KINDS`; a name already
    taken is an error."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a name")
    if cls.kind not in KINDS:
        raise ValueError(f"task '{cls.name}': kind must be one of {sorted(KINDS)}, got {cls.kind!r}")
    if TASK_CLASSES.get(cls.name, cls) is not cls:
        raise ValueError(f"task '{cls.name}' is already registered ({TASK_CLASSES[cls.name].__name__})")
    TASK_CLASSES[cls.name] = cls
    return cls


for _cls in (Forecast, Krige, Impute, Reconstruct):
    register_task(_cls)


def task_class(name: str) -> type[Task]:
    """The registered task class ``name`` (a clear error naming the known ones otherwise)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"data.task must be one of {sorted(TASK_CLASSES)}, got '{name}'")
    return TASK_CLASSES[name]


def foreign_options(cfg) -> list[str]:
    """Problems of the ExperimentConfig ``cfg``: each key that another registered task owns
    (:attr:`Task.options`), that ``cfg.data.task`` does not read, and that ``cfg`` sets away from its
    default, named with its owner (empty: none)."""
    own = task_class(cfg.data.task).options
    problems = []
    for cls in TASK_CLASSES.values():
        for key in sorted(cls.options - own):
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            default = getattr(type(getattr(cfg, section))(), name)
            if value != default:
                problems.append(
                    f"{key}={value!r} is an option of task '{cls.name}', which a '{cfg.data.task}' run does not "
                    f"read; leave it at its default ({default!r})"
                )
    return problems


def get_task(name: str, colocated=None, pattern=None, *, grid: int = 0) -> Task:
    """The task ``name``; ``colocated``: the protocol's co-located channel indices, ``pattern``: the
    experiment's sparse pattern (``reconstruct``) (see :class:`Task`); ``grid`` > 1
    (``data.grid_coarsen``): ``reconstruct`` under DiffRecon's grid protocol (:class:`GridReconstruct`)."""
    cls = task_class(name)
    if grid:
        if cls is not Reconstruct:
            raise ValueError(
                f"data.grid_coarsen={grid} is DiffRecon's grid protocol of task 'reconstruct', not '{name}'"
            )
        if grid < 2:
            raise ValueError(f"data.grid_coarsen must be 0 (off) or a block size >= 2, got {grid}")
        return GridReconstruct(colocated, pattern)
    return cls(colocated, pattern)


__all__ = [
    "LossTerm",
    "Task",
    "TrainingView",
    "TASK_CLASSES",
    "foreign_options",
    "get_task",
    "register_task",
    "task_class",
    "hidden_cells",
    "Forecast",
    "Krige",
    "Impute",
    "Reconstruct",
    "GridReconstruct",
]
