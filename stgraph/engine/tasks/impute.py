"""``impute``: in-sample imputation of a dataset's evaluation cells (AQI-36's official mask).

Every station is visible and none is hidden; the evaluation cells are removed from every input
and from the scaler (see :func:`in_sample_view`). Training hides random observed cells (or gaps
of ``hide_block`` steps, or another window's missing pattern: ``hide_pattern``) and scores the
completed series there, plus, weighted ``src_loss_weight``, the cells it kept. Evaluation scores the visible stations'
completed series at the evaluation cells, each cell once (overlapping windows averaged).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
from stgraph.data.time_splits import TimeSplit
from stgraph.data.windows import Windows
from stgraph.engine.tasks.base import LossTerm, Task, TrainingView
from stgraph.models.base import Prediction


def hidden_cells(
    shape: tuple[int, ...], fraction: float | torch.Tensor, block: int, gen: torch.Generator
) -> torch.Tensor:
    """(B, W, N, C) bool cells to hide for ``impute`` training: about ``fraction`` of them (a
    number, or (B, 1, 1, 1) one per window), as gaps of ``block`` consecutive steps (each step
    starts a gap with probability fraction/block)."""
    if block <= 1:
        return torch.rand(shape, generator=gen) < fraction
    starts = (torch.rand(shape, generator=gen) < fraction / block).to(torch.int32)
    ends = torch.cumsum(starts, dim=1)  # started gaps up to each step
    before = torch.nn.functional.pad(ends, (0, 0, 0, 0, block, 0))[:, :-block]  # started up to step t - block
    return (ends - before) > 0  # a gap started within the last `block` steps


def in_sample_view(view: StationData) -> tuple[StationData, np.ndarray]:
    """(the data without its evaluation cells, the evaluation mask)."""
    if view.eval_mask is None:
        raise ValueError(
            f"task 'impute' scores a dataset's evaluation cells, and '{view.name}' has no eval_mask "
            "(aqi36 has the official one)"
        )
    hidden = view.eval_mask
    return replace(view, values=view.values.copy(), mask=view.mask & ~hidden, eval_mask=None), hidden


def history_cells(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, W, N, C) bool cells to hide: where another window of the batch (a random derangement)
    is unobserved. Training then sees the data's own missing patterns — long outages of single
    stations, network-wide gaps — instead of isolated cells (Tashiro et al., CSDI, 2021)."""
    b = mask.size(0)
    if b < 2:
        return torch.zeros_like(mask)
    shift = int(torch.randint(1, b, (1,), generator=gen))
    other = torch.roll(mask, shifts=shift, dims=0)
    return ~other


class Impute(Task):
    name = "impute"
    kind = "impute"
    scores_visible = True
    scores_roles = False  # every station is visible; the evaluation cells are scored
    options = frozenset({"split.impute_training", "train.hide_block", "train.hide_pattern", "train.hide_ratio"})

    def model_view(self, view: StationData) -> tuple[StationData, np.ndarray]:
        out, self.eval_cells = in_sample_view(view)
        self.eval_values = view.values  # the truth, for the training period's cells (sparse_view)
        return out, self.eval_cells

    def sparse_view(self, view: StationData, split: StationSplit, cfg, periods: TimeSplit):
        """``out-of-sample`` (the published setting: GRIN's ``run_imputation.py`` sets
        ``mask[train] |= eval_mask[train]``; CSDI and PriSTI train on the training months' ground
        values): the evaluation cells of the *train* period are observed training data. The val and
        test periods' evaluation cells stay out of every input, as in the other two modes
        (``out-of-sample-strict``: withheld in the train period too; ``in-sample``: training over
        every step without any evaluation cell)."""
        if cfg.split.impute_training != "out-of-sample":
            return view, None
        restore = self.eval_cells & periods.period("train")[:, None, None]  # (T, N, C)
        values = np.where(restore, self.eval_values, view.values)
        return replace(view, values=values, mask=view.mask | restore), None

    def training_periods(self, periods: TimeSplit, split_cfg) -> TimeSplit:
        """``out-of-sample`` and ``out-of-sample-strict``: the train period. ``in-sample`` (GRIN's
        other mode): every step, test months included, without evaluation cells."""
        if split_cfg.impute_training != "in-sample":
            return periods
        everything = np.ones(len(periods.train), dtype=bool)
        return TimeSplit(everything, ~everything, ~everything, method="in-sample (all steps)")

    def station_split(self, data: StationData, make_split) -> StationSplit:
        return StationSplit(train=data.station_ids, val=(), test=(), method="in-sample")

    def roles(self, split: StationSplit, data: StationData, role: str) -> tuple[np.ndarray, np.ndarray]:
        src = split.indices(data, "train")
        return src, src[:0]

    def scored(self, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src: np.ndarray, tgt: np.ndarray):
        return pred.src, y[:, :, src], m[:, :, src]

    def training_view(
        self, w: Windows, nodes: np.ndarray, targets: np.ndarray, tc, gen: torch.Generator
    ) -> TrainingView:
        y, y_mask, _ = self.out_window(w, targets)
        fraction = tc.hide_fraction
        if tc.hide_ratio == "uniform":  # CSDI: each sample's missing rate from U(0, 1) (Bernoulli cells
            # at that rate, where CSDI hides exactly round(rate x observed) of them: the same in expectation)
            fraction = torch.rand(w.x_mask.size(0), 1, 1, 1, generator=gen)
        hide = hidden_cells(tuple(w.x_mask.shape), fraction, tc.hide_block, gen)
        if tc.hide_pattern != "random":
            hist = history_cells(w.x_mask, gen)
            if tc.hide_pattern == "mix":  # half of the windows (at random) take the history pattern
                pick = torch.rand(w.x_mask.size(0), generator=gen) < 0.5
                hist = torch.where(pick[:, None, None, None], hist, hide)
            hide = hist
        keep = ~hide
        w_in = replace(w, x=w.x * keep, x_mask=w.x_mask & keep)
        kept = keep[..., targets]
        terms = [LossTerm("src", y, y_mask & ~kept)]
        if tc.src_loss_weight:
            terms.append(LossTerm("src", y, y_mask & kept, tc.src_loss_weight))
        src = np.arange(len(nodes))
        return TrainingView(w_in, src, src[:0], nodes, terms)
