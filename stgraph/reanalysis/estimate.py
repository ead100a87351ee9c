"""Estimates of a run's target channels at new places, chunk by chunk, in original units.

A run folder (:mod:`stgraph.engine.run_folder`) is rebuilt from its own config and best checkpoint (or
its fit, for fitted models; nothing, for parameter-free ones). Its visible stations (the train
role by default; ``stations="all"`` also uses the val/test stations as inputs — a delivered
reanalysis should use every station, a scored one must not) are the inputs; every grid cell or
point is a target, like a hidden station in ``krige``. The requested time range is tiled by
non-overlapping windows of the run's length; a last partial window is shifted back to end at the
range's end, and only its new steps are kept. Memory: one chunk of ``window_batch`` windows ×
``cell_chunk`` targets at a time.

The model is asked exactly as in validation and prediction: the cells are
:class:`~stgraph.engine.chunked.Places` targets of :func:`~stgraph.engine.chunked.chunked_forward`
(the same batches, the run's ``train.eval_target_chunk`` chunks and, with
``train.eval_neighbours``, each chunk's bounded visible neighbourhood), and original units and
sample quantiles come from the evaluator's own functions
(:func:`~stgraph.engine.evaluate.unscaling`, :func:`~stgraph.ops.quantiles.sample_quantiles`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stgraph.data.batch import KINDS
from stgraph.data.windows import WindowDataset
from stgraph.engine.chunked import Places, chunked_forward
from stgraph.engine.config import load_config
from stgraph.engine.evaluate import unscaling
from stgraph.engine.experiment import Experiment
from stgraph.engine.run import load_trained
from stgraph.engine.run_folder import RunDir
from stgraph.engine.tasks import TASK_CLASSES, task_class
from stgraph.models.base import StationModel
from stgraph.ops.quantiles import QUANTILE_LEVELS, sample_quantiles


@dataclass
class ReanalysisRun:
    """A run ready to estimate anywhere: its experiment, its model and the visible stations."""

    run: RunDir
    exp: Experiment
    model: StationModel
    visible: np.ndarray  # (N_vis,) node indices used as inputs
    role: str  # "train" or "all"

    @property
    def channels(self) -> list[str]:
        return [self.exp.data.channels[i] for i in self.exp.targets]

    @property
    def units(self) -> list[str]:
        return [self.exp.data.units[i] for i in self.exp.targets]

    @property
    def visible_latlon(self) -> np.ndarray:
        return self.exp.data.latlon[self.visible]

    def steps(self, start: str | None, end: str | None) -> np.ndarray:
        """(T_r,) step indices of ``start <= time < end`` (None: the data's ends); an empty or
        out-of-range request is an error naming the data's span."""
        times = pd.DatetimeIndex(self.exp.data.times)
        lo = times[0] if start is None else pd.Timestamp(start)
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(0)
        hi = times[-1] + step if end is None else pd.Timestamp(end)
        idx = np.flatnonzero((times >= lo) & (times < hi))
        w = self.exp.cfg.data.window
        if len(idx) < w:
            raise ValueError(
                f"--start {start} --end {end}: {len(idx)} steps of the data fall in that range; the run's window needs "
                f"at least {w}. The data spans {times[0]} to {times[-1]}"
            )
        return idx

    def estimate(
        self, latlon: np.ndarray, steps: np.ndarray, *, window_batch: int = 16, cell_chunk: int = 4096
    ) -> Iterator[tuple[np.ndarray, int, dict[str, np.ndarray]]]:
        """Yields (step indices (T_c,), first target index, arrays) per chunk, arrays in original
        units: ``mean`` (T_c, M_c, C), and where the model gives them ``std`` (T_c, M_c, C) or
        ``q05``/``q50``/``q95`` (T_c, M_c, C) of its samples. ``steps`` must be contiguous."""
        exp, w = self.exp, self.exp.cfg.data.window
        first, last = int(steps[0]), int(steps[-1]) + 1
        starts = np.arange(first, last - w + 1, w)
        if starts[-1] + w < last:  # a last window ending at the range's end
            starts = np.append(starts, last - w)
        data = WindowDataset(exp.scaled, exp.data.mask, exp.data.times, torch.as_tensor(starts), w, 0)
        if exp.train.scaler.per_station:
            raise ValueError("a reanalysis estimates places with no station: it needs data.scaler 'channel'")
        mean, std = unscaling(exp, None)  # (C_out,): a per-channel scaler
        done = first  # the next step not yet written
        for idx in torch.arange(len(starts)).split(window_batch):
            win = data[idx]
            chunk_starts = starts[idx.numpy()]
            keep = []  # per window: the offsets of its steps not written yet
            for s in chunk_starts:
                keep.append(np.arange(max(s, done), s + w) - s)
                done = int(s) + w
            out_steps = np.concatenate([s + k for s, k in zip(chunk_starts, keep, strict=True)])
            for lo in range(0, len(latlon), cell_chunk):
                places = Places(np.asarray(latlon[lo : lo + cell_chunk], dtype=np.float64))
                with torch.no_grad():
                    pred, _ = chunked_forward(self.model, exp, win, self.visible, places)
                arrays = {"mean": pred.tgt * std + mean}
                if pred.std_tgt is not None:
                    arrays["std"] = pred.std_tgt * std
                if pred.samples_tgt is not None:
                    q = sample_quantiles(pred.samples_tgt.float(), QUANTILE_LEVELS) * std + mean
                    arrays.update(q05=q[0], q50=q[1], q95=q[2])
                flat = {k: torch.cat([v[b, k_] for b, k_ in enumerate(keep)]).numpy() for k, v in arrays.items()}
                yield out_steps, lo, flat


def load_reanalysis_run(run_dir: str | Path, *, stations: str = "train") -> ReanalysisRun:
    """Rebuild a run for reanalysis; clear errors for a folder that is not a finished run."""
    run = RunDir(run_dir)
    if not run.path.is_dir() or not run.config_path.exists():
        raise FileNotFoundError(f"{run.path}: not a run folder (no config.yaml); give a folder `stgraph train` wrote")
    cfg = load_config(run.config_path)
    if not KINDS[task_class(cfg.data.task).kind].aligned:
        aligned = sorted(name for name, cls in TASK_CLASSES.items() if KINDS[cls.kind].aligned)
        raise ValueError(
            f"{run.path}: a '{cfg.data.task}' run estimates after its input window; reanalyse needs a run of "
            f"task {', '.join(aligned)} (estimates over the window itself)"
        )
    if cfg.data.colocated_channels or cfg.data.aggregate != "none":
        raise ValueError(f"{run.path}: runs under the anchor or aggregate protocols need values at the targets")
    if stations not in ("train", "all"):
        raise ValueError(f"stations must be 'train' (the run's visible stations) or 'all', got {stations!r}")
    run, exp, model = load_trained(run.path)
    model.eval()
    model.predict_std = True
    visible = exp.split.indices(exp.data, "train") if stations == "train" else np.arange(exp.data.num_nodes)
    return ReanalysisRun(run=run, exp=exp, model=model, visible=np.sort(visible), role=stations)
