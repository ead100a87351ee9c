"""What a task decides, in one place: who is hidden in training, what the model is given, what is
scored and how overlapping windows are merged.

The engine (experiment set-up, trainer, evaluation) asks the experiment's :class:`Task` instead
of branching on the task's name, so a new task is one new file in this package. Four tasks
exist: ``forecast`` (the H steps after the window, at hidden stations), ``krige`` (hidden stations
over the window itself), ``impute`` (in-sample: every station visible, the dataset's
evaluation cells removed from the input and scored) and ``reconstruct`` (hidden stations, and the
visible stations' cells removed by a sparse pattern, scored as a second group).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from stgraph.data.batch import KINDS, TaskTraits
from stgraph.data.patterns import SparsePattern
from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit
from stgraph.data.windows import Windows
from stgraph.engine.metrics import average_overlapping_windows
from stgraph.models.base import Prediction


class Scored(NamedTuple):
    """One scored group of a batch: prediction, truth and mask, each (B, H, N_g, C_out)."""

    pred: torch.Tensor
    true: torch.Tensor
    mask: torch.Tensor


@dataclass
class LossTerm:
    """One part of a training loss: ``which`` output (``"src"``/``"tgt"``) compared with ``y`` where
    ``mask`` holds, times ``weight``. y, mask: (B, H, N_which, C_out)."""

    which: str
    y: torch.Tensor
    mask: torch.Tensor
    weight: float = 1.0


@dataclass
class TrainingView:
    """A training batch as the task shapes it: the windows the model is given (columns = ``nodes``
    of the dataset), which columns are visible (``src``) and targets (``tgt``), and the loss terms.
    ``teacher``: the visible stations' truth may be given for teacher forcing (forecast)."""

    w: Windows
    src: np.ndarray
    tgt: np.ndarray
    nodes: np.ndarray
    terms: list[LossTerm]
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None


def select_columns(w: Windows, cols: np.ndarray) -> Windows:
    """The windows restricted to station columns ``cols`` (time encodings and starts unchanged)."""
    c = torch.as_tensor(cols)
    return replace(w, x=w.x[:, :, c], x_mask=w.x_mask[:, :, c], y=w.y[:, :, c], y_mask=w.y_mask[:, :, c])


def subgraph_columns(n: int, tc, gen: torch.Generator, latlon: np.ndarray | None = None) -> np.ndarray:
    """Sorted columns of a training batch's station subgraph (``train.subgraph_size`` of ``n``):
    ``train.subgraph: random`` draws them uniformly (IGNNK's random subgraphs); ``local`` draws a
    centre and takes its ``subgraph_size`` nearest stations (``latlon``: (n, 2) of the columns), a
    spatially compact mini-batch whose cost is bounded by its size, not by the network's."""
    size = max(2, tc.subgraph_size)
    if getattr(tc, "subgraph", "random") == "local" and latlon is not None:
        centre = int(torch.randint(n, (1,), generator=gen))
        lat, lon = np.deg2rad(latlon[:, 0]), np.deg2rad(latlon[:, 1])
        xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1)
        closeness = xyz @ xyz[centre]  # cosine of the great-circle angle
        return np.sort(np.argpartition(-closeness, size - 1)[:size])
    return np.sort(torch.randperm(n, generator=gen)[:size].numpy())


def hide_stations(n: int, fraction: float, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split n training stations into visible and hidden (at least one of each)."""
    n_hide = min(max(1, round(fraction * n)), n - 1)
    perm = torch.randperm(n, generator=gen).numpy()
    return np.sort(perm[n_hide:]), np.sort(perm[:n_hide])


def hide_per_sample(b: int, n: int, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """(B, N) bool: a different random set of about ``fraction * n`` stations per sample (at least
    one hidden and one visible)."""
    n_hide = min(max(1, round(fraction * n)), n - 1)
    ranks = torch.rand(b, n, generator=gen).argsort(dim=1).argsort(dim=1)
    return ranks < n_hide


class Task:
    """Base class; subclasses set ``name`` and ``kind`` and override what differs.

    ``kind`` is the kind of problem the model is given (:data:`~stgraph.data.batch.KINDS`:
    ``forecast``, ``krige``, ``impute`` or ``reconstruct``); models see only it and its traits
    (:class:`~stgraph.data.batch.TaskTraits`: outputs aligned with the input, target stations,
    scored visible cells, the default anchor). Everything else a task decides (who is hidden in
    training, what is scored, how windows merge) is asked of the task object, never of its name.

    Args:
        colocated: (C_a,) indices among the input channels of the protocol's co-located channels
            (``data.colocated_channels``, :mod:`stgraph.engine.tasks.protocols`): declared observed at
            the target stations, so training that hides stations per sample keeps them. Default none.
        pattern: the experiment's sparse pattern over the visible stations (``reconstruct``, made by
            :meth:`sparse_view`), or None.
    """

    name = ""
    kind = "krige"  # the model-facing kind (stgraph.data.batch.KINDS)
    scores_visible = False  # impute scores the visible stations' completed series
    extra_groups: tuple[str, ...] = ()  # scored groups beyond "hidden" and "visible" (see scored_group)
    scores_roles = True  # val/test stations are scored in their period: each needs coverage there
    # The config keys only this task reads (dotted, e.g. ``"split.pattern_ratio"``): a run of another
    # task that sets one away from its default is refused (:func:`stgraph.engine.tasks.foreign_options`),
    # so no option is silently ignored.
    options: frozenset[str] = frozenset()

    def __init__(self, colocated: np.ndarray | None = None, pattern: SparsePattern | None = None):
        self.colocated = np.zeros(0, dtype=np.int64) if colocated is None else np.asarray(colocated, dtype=np.int64)
        self.pattern = pattern
        self.latlon: np.ndarray | None = None  # (N, 2) of the dataset's nodes, for local subgraphs

    @property
    def traits(self) -> TaskTraits:
        """What a model may know of this task (:class:`~stgraph.data.batch.TaskTraits`)."""
        return KINDS[self.kind]

    @property
    def aligned(self) -> bool:
        """Outputs at the input steps (krige, impute, reconstruct) rather than after them."""
        return self.traits.aligned

    @classmethod
    def check_config(cls, cfg) -> list[str]:
        """Problems of the ExperimentConfig ``cfg`` under this task, each naming the key and what
        is expected (empty: none). Default: the options every task shares."""
        dc, problems, traits = cfg.data, [], KINDS[cls.kind]
        if dc.scaler == "station" and traits.has_targets:
            problems.append(
                f"data.scaler: 'station' needs a task without target stations, such as 'impute' (a hidden station "
                f"has no training cells to take its own statistics from), got task '{cls.name}'"
            )
        length = dc.window if traits.aligned else dc.horizon
        over = [s for s in dc.eval_steps or [] if not 1 <= s <= length]
        if over and not dc.daily:
            what = f"data.window (the scored span of a '{cls.name}' window)" if traits.aligned else "data.horizon"
            problems.append(
                f"data.eval_steps: {over} outside 1..{length} ({what}); give steps within it, [] for none, "
                "or null for those of 6, 12, 24 that fit"
            )
        return problems

    def window_horizon(self, horizon: int) -> int:
        """Steps a window holds after its input part (0 for the aligned tasks)."""
        return 0 if self.aligned else horizon

    def model_view(self, view: StationData) -> tuple[StationData, np.ndarray]:
        """(the data models may see, the (T, N, C) mask of what is scored)."""
        return view, view.mask

    @staticmethod
    def prepare_data(data: StationData, dc) -> StationData:
        """The network a protocol works on, built from the loaded dataset (``dc``: the DataConfig);
        default: the dataset itself (the grid protocol builds its coarse-fine network here)."""
        return data

    def training_nodes(self, split: StationSplit, data: StationData) -> np.ndarray:
        """Nodes whose train-period windows training batches are cut from (default: the train role)."""
        return split.indices(data, "train")

    def training_periods(self, periods: TimeSplit, split_cfg) -> TimeSplit:
        """The periods training windows and the scaler come from (default: as split)."""
        return periods

    def station_split(self, data: StationData, make_split) -> StationSplit:
        """Station roles; ``make_split()`` builds them from the config."""
        return make_split()

    def sparse_view(
        self, view: StationData, split: StationSplit, cfg, periods: TimeSplit
    ) -> tuple[StationData, SparsePattern | None]:
        """Once the station roles and time periods exist: (the data models may see, the sparse
        pattern removed from it, or None). ``cfg``: the ExperimentConfig. Default: unchanged, no
        pattern."""
        return view, None

    def roles(self, split: StationSplit, data: StationData, role: str) -> tuple[np.ndarray, np.ndarray]:
        """(visible, hidden) node indices when scoring ``role`` (``val``/``test``)."""
        return split.indices(data, "train"), split.indices(data, role)

    def out_window(self, w: Windows, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target values, mask and time encodings of a window batch's output steps."""
        if self.aligned:
            return w.x[..., targets], w.x_mask[..., targets], w.x_time
        return w.y[..., targets], w.y_mask[..., targets], w.y_time

    def scored(self, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src: np.ndarray, tgt: np.ndarray):
        """(prediction, truth, mask) of the scored stations."""
        return pred.tgt, y[:, :, tgt], m[:, :, tgt]

    def scored_group(
        self, group: str, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src, tgt, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prediction, truth, mask) (B, H, N_g, C_out) of an extra scored group (``extra_groups``),
        given the output truth y, m (B, H, N, C_out) of all columns and the windows' starts (B,)."""
        raise ValueError(f"task '{self.name}' has no scored group '{group}'")

    @property
    def groups(self) -> tuple[str, ...]:
        """The scored groups: ``hidden`` (the task's main one, :meth:`scored`) and ``extra_groups``."""
        return ("hidden", *self.extra_groups)

    def scored_groups(
        self, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src, tgt, start: torch.Tensor
    ) -> dict[str, Scored]:
        """Every scored group of a batch (:attr:`groups`, in order): validation, the validation
        loss, prediction and the samples of a probabilistic model all take their cells from here.
        y, m: (B, H, N, C_out) output truth of all columns; start: (B,) window starts."""
        out = {"hidden": Scored(*self.scored(pred, y, m, src, tgt))}
        for g in self.extra_groups:
            out[g] = Scored(*self.scored_group(g, pred, y, m, src, tgt, start))
        return out

    def group_nodes(self, group: str, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """Node indices of the columns of an extra group's :meth:`scored_group`."""
        raise ValueError(f"task '{self.name}' has no scored group '{group}'")

    def merge_windows(self, pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor, start: torch.Tensor):
        """Overall scores count each (time, station) cell once: overlapping windows' estimates of a
        cell are averaged (aligned tasks). Forecasts keep one row per window (a cell's forecasts
        from different windows are different lead times). Shapes (B, H, N, C) -> (B', H', N, C)."""
        if self.aligned:
            return average_overlapping_windows(pred, true, mask, start)
        return pred, true, mask

    def training_view(
        self, w: Windows, nodes: np.ndarray, targets: np.ndarray, tc, gen: torch.Generator
    ) -> TrainingView:
        """Hide part of a training batch and say what the loss compares (``tc``: the TrainConfig)."""
        raise NotImplementedError
