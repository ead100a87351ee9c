"""Everything an experiment needs before a model exists: data, roles, periods, scaler, windows.

Leak-free by construction: the scaler sees train-role stations in the train period; training
windows hold train-role stations only; evaluation feeds the model train-role stations as visible
inputs and scores the hidden (val or test) stations in original units.

Three tasks: ``forecast`` (the H steps after the window, at hidden stations), ``krige`` (hidden
stations over the window itself) and ``impute`` (in-sample: every station is visible, and the
dataset's evaluation cells — AQI-36's official mask — are removed from the input everywhere, from
the scaler too, and scored in the test period). ``reconstruct`` is ``krige`` whose visible stations
also lose the cells of a seeded sparse pattern (``split.pattern``), removed the same way and
scored as a second group.

AMLSG's protocol options (:mod:`stgraph.engine.tasks.protocols`) add exactly what they declare:
the targets' co-located channels (``data.colocated_channels``), the universe's mean of the target channels
(``data.aggregate``), and backcast or explicit time periods (``split.backcast``, ``split.periods``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stgraph.data.coverage import ensure_coverage
from stgraph.data.patterns import SparsePattern
from stgraph.data.pipeline import TrainingInputs, build_training_inputs
from stgraph.data.readers import read_long_table
from stgraph.data.splits import (
    StationSplit,
    bernoulli_station_split,
    explicit_split,
    kfold_station_splits,
    leave_one_station_out,
    random_station_split,
    spatial_block_split,
)
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit, chronological_time_split, month_time_split, period_time_split
from stgraph.data.windows import WindowDataset, Windows, block_window_starts, window_starts
from stgraph.datasets import load_dataset
from stgraph.datasets.resolve import sha256_of
from stgraph.datasets.user_cards import check_reader_options
from stgraph.engine.config import DataConfig, ExperimentConfig, SplitConfig
from stgraph.engine.run_identity import data_checksums
from stgraph.engine.tasks import Task, get_task
from stgraph.engine.tasks.protocols import (
    check_aggregate,
    colocated_at_targets,
    colocated_channel_indices,
    station_mean,
)
from stgraph.graph.knn import default_backend
from stgraph.models.base import DataSizes, GraphBatch


def make_station_split(data: StationData, cfg: SplitConfig) -> StationSplit:
    m = cfg.method
    if m != "explicit" and data.num_nodes < 3:
        raise ValueError(
            f"the data has {data.num_nodes} station(s) ({', '.join(data.station_ids[:3])}); a station split needs at "
            "least 3 (train, val, test). For one station's own series use data.task: impute"
        )
    if m in ("kfold", "spatial_kfold") and cfg.n_folds > data.num_nodes:
        raise ValueError(
            f"split.n_folds={cfg.n_folds} is more than the data's {data.num_nodes} stations; use at most "
            f"{data.num_nodes} folds (split.method: loso holds out one station per fold)"
        )
    if m in ("kfold", "spatial_kfold"):
        folds = kfold_station_splits(data, cfg.n_folds, val=cfg.val, seed=cfg.seed, spatial=m == "spatial_kfold")
        if not 0 <= cfg.fold < len(folds):
            raise ValueError(f"split.fold={cfg.fold} is out of range for {len(folds)} folds")
        return folds[cfg.fold]
    if m == "loso":
        return leave_one_station_out(data, val=cfg.val, seed=cfg.seed)[cfg.fold]
    if m == "random":
        return random_station_split(data, test=cfg.test, val=cfg.val, seed=cfg.seed)
    if m == "bernoulli":
        return bernoulli_station_split(data, test=cfg.test, val=cfg.val, seed=cfg.seed)
    if m == "spatial_block":
        return spatial_block_split(data, test=cfg.test, val=cfg.val, seed=cfg.seed)
    if m == "explicit":
        return explicit_split(data, test=cfg.test_stations, val=cfg.val_stations)
    raise ValueError(f"unknown split.method '{m}'")


def make_time_split(data: StationData, cfg: SplitConfig, span: int) -> TimeSplit:
    """The time periods: explicit dates (``split.periods``), test months, or fractions in time order
    (reversed with ``split.backcast``); ``span`` = window + horizon, the default gap."""
    gap = span if cfg.time_gap is None else cfg.time_gap
    if cfg.periods:
        if cfg.test_months or cfg.backcast:
            raise ValueError("split.periods sets the periods itself: leave split.test_months and split.backcast unset")
        return period_time_split(data.times, cfg.periods, gap=gap, min_span=span)
    if cfg.test_months:
        if cfg.backcast:
            raise ValueError("split.backcast reverses the chronological split; it does not apply to split.test_months")
        return month_time_split(
            data.times, test_months=cfg.test_months, val_fraction=cfg.time_val, gap=gap, val_months=cfg.val_months
        )
    periods = chronological_time_split(
        data.num_steps, val=cfg.time_val, test=cfg.time_test, gap=gap, backcast=cfg.backcast
    )
    if cfg.backcast:
        for name in ("train", "val", "test"):
            if len(window_starts(periods.period(name), span, 0)) == 0:
                raise ValueError(
                    f"split.backcast: the {name} period ({int(periods.period(name).sum())} steps) holds no window of "
                    f"{span} steps; change split.time_val / split.time_test / split.time_gap"
                )
    return periods


def load_experiment_data(cfg: DataConfig) -> StationData:
    """The named dataset (built-in or the user's), or the inline files ``data.long``/``data.stations``."""
    if cfg.long:
        options = check_reader_options(dict(cfg.reader), "data.reader")
        data = read_long_table(cfg.long, cfg.stations, name=cfg.dataset, **options)
        files = [Path(cfg.long), *([Path(cfg.stations)] if cfg.stations else [])]
        data.meta["sha256"] = {str(p): sha256_of(p) for p in files}  # the run's data identity
    else:
        if cfg.stations or cfg.reader:
            raise ValueError("data.stations and data.reader apply to inline files: set data.long too")
        data = load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.start or cfg.end:
        data = data.select_times(cfg.start, cfg.end)
    return data


@dataclass
class Experiment:
    """Attributes:
    data: what models may see: the dataset restricted to the input channels (original units;
        for ``impute``, with the evaluation cells removed; for ``reconstruct``, the pattern's).
    split: station roles. periods: time periods.
    targets: indices of the target channels among the input channels.
    sizes: what the model is built with. train: leak-free training inputs.
    truth_values, truth_mask: (T, N, C_in) what is scored, and where (for ``impute``: the
        evaluation cells; otherwise the observed cells of ``data``).
    colocated: (C_a,) indices among the input channels of the protocol's co-located channels (empty = off).
    pattern: ``reconstruct``: the sparse pattern removed from the train-role stations (saved in
        the run); None for the other tasks.
    task: the run's one :class:`~stgraph.engine.tasks.Task`, built once; the engine asks it what
        to hide, show, score and merge.
    """

    cfg: ExperimentConfig
    data: StationData
    split: StationSplit
    periods: TimeSplit
    targets: np.ndarray
    sizes: DataSizes
    train: TrainingInputs
    knn_backend: str
    truth_values: np.ndarray
    truth_mask: np.ndarray
    colocated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pattern: SparsePattern | None = None
    source_checksums: dict = field(default_factory=dict)  # the source data's (run_identity.data_checksums)
    task: Task | None = None

    @property
    def aligned(self) -> bool:
        return self.task.aligned

    def roles(self, role: str) -> tuple[np.ndarray, np.ndarray]:
        """(visible, hidden) node indices when scoring ``role`` (``val``/``test``). For ``impute``
        every station is visible and none is hidden: the model's ``src`` output is scored."""
        return self.task.roles(self.split, self.data, role)

    def pos(self, nodes) -> torch.Tensor:
        return torch.as_tensor(self.data.latlon[np.asarray(nodes)], dtype=torch.float32)

    def out_window(self, w: Windows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target values, mask and time encodings of a window batch's output steps."""
        return self.task.out_window(w, self.targets)

    def eval_windows(
        self, period: str, max_windows: int | None = None, *, scaled_truth: bool = False
    ) -> tuple[WindowDataset, WindowDataset]:
        """(inputs standardised, truth in original units — or standardised with ``scaled_truth``)
        over all stations in one period; the truth's mask says where to score."""
        # every window start (``data.eval_stride``, default 1): ``data.stride`` thins training windows
        # only, so models trained with different strides are scored on the same cells; eval_stride =
        # window gives the non-overlapping windows of the CSDI/PriSTI protocol
        dc = self.cfg.data
        if dc.eval_stride > 1:  # aligned to each block of the period (each test month), tail covered
            starts = block_window_starts(self.periods.period(period), dc.window, self._horizon, dc.eval_stride)
        else:
            starts = window_starts(self.periods.period(period), dc.window, self._horizon, 1)
        if max_windows is not None and len(starts) > max_windows:  # evenly spaced, deterministic
            starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64)]
        w, h = self.cfg.data.window, self._horizon
        # standardised a batch at a time (the same numbers as ``self.scaled``): no full copy of the
        # series is made for evaluation, whatever the network's size
        scaler, times = self.train.scaler, self.data.times
        truth_scaler = scaler if scaled_truth else None
        return (
            WindowDataset(self.data.values, self.data.mask, times, starts, w, h, scaler=scaler),
            WindowDataset(self.truth_values, self.truth_mask, times, starts, w, h, scaler=truth_scaler),
        )

    @functools.cached_property
    def scaled(self) -> np.ndarray:
        """(T, N, C_in) every station standardised with the training scaler, computed once on first
        use (the reanalysis, ``data.aggregate``); the model only ever receives the visible
        stations' columns of it. Evaluation windows standardise a batch at a time instead."""
        return self.train.scaler.transform(self.data.values)

    @property
    def _horizon(self) -> int:
        return self.task.window_horizon(self.cfg.data.horizon)

    def batch(self, w: Windows, src: np.ndarray, tgt: np.ndarray, nodes: np.ndarray | None = None) -> GraphBatch:
        """A model batch with ``src`` visible and ``tgt`` as targets; ``src``/``tgt`` index the
        columns of ``w`` and ``nodes`` maps those columns to dataset nodes (default: identity).
        Protocol options add the targets' co-located channels and the mean of the target channels over
        ``src`` and ``tgt`` (see :mod:`stgraph.engine.tasks.protocols`); nothing else of ``tgt``."""
        nodes = np.arange(w.x.size(2)) if nodes is None else nodes
        _, _, y_time = self.out_window(w)
        s = torch.as_tensor(src)
        batch = GraphBatch(
            x=w.x[:, :, s],
            x_mask=w.x_mask[:, :, s],
            x_time=w.x_time,
            y_time=y_time,
            pos_src=self.pos(nodes[src]),
            pos_tgt=self.pos(nodes[tgt]),
        )
        if len(self.colocated):
            batch.colocated_tgt, batch.colocated_tgt_mask = colocated_at_targets(w, tgt, self.colocated)
        if self.cfg.data.aggregate == "mean":
            universe = np.sort(nodes[np.concatenate([np.asarray(src), np.asarray(tgt)]).astype(np.int64)])
            batch.aggregate, batch.aggregate_mask = self.aggregate(w.start, universe, w.x.size(1))
        return batch

    def aggregate(self, starts: torch.Tensor, stations: np.ndarray, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W, C_out) standardised mean of the target channels over the observed cells of the
        dataset nodes ``stations`` at the ``steps`` input steps of windows starting at ``starts``
        (B,), and its (B, W, C_out) mask. Read from the whole standardised series, so stations that
        sample masking cleared in the batch's ``x`` still count: the downscaling protocol's known
        aggregate. Only the given stations are read."""
        t = starts[:, None, None, None] + torch.arange(steps)[None, :, None, None]  # (B, W, 1, 1)
        n = torch.as_tensor(stations, dtype=torch.long)[None, None, :, None]
        c = torch.as_tensor(self.targets, dtype=torch.long)[None, None, None, :]
        return station_mean(self._scaled_tensor[t, n, c], self._mask_tensor[t, n, c])

    @functools.cached_property
    def _scaled_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.scaled, dtype=torch.float32)

    @functools.cached_property
    def _mask_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.data.mask, dtype=torch.bool)


def prepare_experiment(cfg: ExperimentConfig, data: StationData | None = None) -> Experiment:
    """Load (or take) the data and build roles, periods, scaler, windows and sizes."""
    dc = cfg.data
    task = get_task(dc.task, grid=dc.grid_coarsen)  # the run's one task object
    source = load_experiment_data(dc) if data is None else data
    checksums = data_checksums(source)
    data = task.prepare_data(source, dc)
    names = list(dc.input_channels or data.channels)
    view = data if tuple(names) == data.channels else data.select_channels(names)
    missing = [c for c in dc.target_channels if c not in names]
    if missing:
        raise ValueError(f"data.target_channels {missing} must be among the input channels {names}")
    targets = np.array([names.index(c) for c in dc.target_channels])
    colocated = colocated_channel_indices(dc, names)
    task.colocated = colocated
    check_aggregate(dc)
    aligned = task.aligned
    horizon = dc.window if aligned else dc.horizon
    truth_values = view.values
    view, truth_mask = task.model_view(view)
    split = task.station_split(view, lambda: make_station_split(data, cfg.split))
    periods = make_time_split(data, cfg.split, dc.window + task.window_horizon(horizon))
    if task.scores_roles:  # a val/test station with no target in its scored period cannot be scored
        split = ensure_coverage(view, split, periods, targets)
    view, pattern = task.sparse_view(view, split, cfg, periods)  # before the scaler and any window
    task.pattern, task.latlon = pattern, view.latlon
    training_periods = task.training_periods(periods, cfg.split)
    backend = default_backend()
    train = build_training_inputs(
        view,
        split,
        training_periods,
        window=dc.window,
        horizon=task.window_horizon(horizon),
        stride=dc.stride,
        window_nodes=task.training_nodes(split, view),
        per_station_scaler=dc.scaler == "station",
    )
    sizes = DataSizes(
        in_channels=len(names),
        out_channels=len(targets),
        target_channels=tuple(targets.tolist()),
        window=dc.window,
        horizon=horizon,
        task=task.kind,
    )
    if len(train.windows) == 0:
        raise ValueError(f"the train period holds no window of {dc.window}+{horizon} steps")
    return Experiment(
        cfg=cfg,
        data=view,
        split=split,
        periods=periods,
        targets=targets,
        sizes=sizes,
        train=train,
        knn_backend=backend,
        truth_values=truth_values,
        truth_mask=truth_mask,
        colocated=colocated,
        pattern=pattern,
        source_checksums=checksums,
        task=task,
    )
