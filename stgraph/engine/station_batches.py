"""Station mini-batches in training: windows cut for the batch's stations only.

With ``train.subgraph_size`` = n, every training batch is a subgraph of n training stations,
drawn by :func:`~stgraph.engine.tasks.base.subgraph_columns` (``train.subgraph``: ``random``,
IGNNK's uniform draw, or ``local``, a random centre and its n nearest training stations). This
module makes the draw *before* the windows are cut, so a batch is (B, W, n, C) read straight from
the series (:meth:`~stgraph.data.windows.WindowDataset.select`) and never (B, W, N_train, C) then
columns: at 10^5 stations the full-width batch alone would be larger than the model's work. The
task then sees a batch of exactly n stations and hides targets among them as it always does (its
own subgraph draw does nothing when the batch already has n stations). The draw takes the epoch's
generator exactly as the task's did, so runs are bit-identical to drawing after the cut. Only
training stations can be drawn: val/test stations are not columns of the training windows.

The grid protocol (``data.grid_coarsen``) counts ``subgraph_size`` in fine cells and keeps its own
draw (after the cut). Evaluation in chunks of targets is :mod:`stgraph.engine.chunked`.
"""

from __future__ import annotations

import numpy as np
import torch

from stgraph.data.windows import WindowDataset, Windows
from stgraph.engine.tasks.base import subgraph_columns


class StationBatcher:
    """Cuts an experiment's training batches: every training station (no ``subgraph_size``, or
    one at least the number of training stations), or one subgraph per batch."""

    def __init__(self, exp):
        tc = exp.cfg.train
        self.tc = tc
        if tc.subgraph_size is not None and tc.subgraph_size < 2:
            raise ValueError(f"train.subgraph_size must be >= 2 (one hidden, one visible), got {tc.subgraph_size}")
        nodes = exp.train.stations
        self.on = bool(tc.subgraph_size) and tc.subgraph_size < len(nodes) and not exp.cfg.data.grid_coarsen
        self.latlon = exp.data.latlon  # (N, 2) of every node; only the training nodes' rows are read

    def cut(
        self, windows: WindowDataset, idx: torch.Tensor, nodes: np.ndarray, gen: torch.Generator
    ) -> tuple[Windows, np.ndarray]:
        """The windows ``idx`` of ``windows`` (columns = dataset nodes ``nodes``) over this
        batch's stations: (B, W, n, C) and the n stations' dataset nodes."""
        if not self.on:
            return windows[idx], nodes
        cols = subgraph_columns(len(nodes), self.tc, gen, self.latlon[nodes])
        return windows.select(idx, cols), nodes[cols]
