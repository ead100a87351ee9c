"""Tasks that score stations the model never saw: ``krige`` and ``forecast``.

Training hides training stations (node masking) and scores the model there from the others:
- ``node_masking: batch``: one random hidden set per batch; hidden stations become targets
  (``pos_tgt``), with no input at all;
- ``node_masking: sample``: every sampled station stays in ``src`` and a different random set is
  hidden per sample by clearing its mask (IGNNK's training); the loss covers all sampled stations.
  The protocol's co-located channels (``data.colocated_channels``) stay observed at the hidden stations.
``subgraph_size`` samples that many training stations per batch first (IGNNK's random subgraphs).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from stgraph.data.windows import Windows
from stgraph.engine.tasks.base import (
    LossTerm,
    Task,
    TrainingView,
    hide_per_sample,
    hide_stations,
    select_columns,
    subgraph_columns,
)


class _StationTask(Task):
    def training_view(
        self, w: Windows, nodes: np.ndarray, targets: np.ndarray, tc, gen: torch.Generator
    ) -> TrainingView:
        if tc.subgraph_size and tc.subgraph_size < len(nodes):
            cols = subgraph_columns(len(nodes), tc, gen, None if self.latlon is None else self.latlon[nodes])
            w, nodes = select_columns(w, cols), nodes[cols]
        y, y_mask, _ = self.out_window(w, targets)
        n = len(nodes)
        if tc.node_masking == "sample":
            hidden = hide_per_sample(w.x.size(0), n, tc.hide_fraction, gen)  # (B, N)
            keep = ~hidden[:, None, :, None]  # (B, 1, N, 1)
            if len(self.colocated):  # the protocol's co-located channels stay observed at hidden stations
                declared = torch.zeros(w.x.size(-1), dtype=torch.bool)
                declared[torch.as_tensor(self.colocated)] = True
                keep = keep | declared  # (B, 1, N, C_in)
            w = replace(w, x=w.x * keep, x_mask=w.x_mask & keep)
            src, tgt = np.arange(n), np.zeros(0, dtype=np.int64)
            hid = hidden[:, None, :, None].expand_as(y_mask)
            terms = [LossTerm("src", y, y_mask & hid), LossTerm("src", y, y_mask & ~hid, tc.src_loss_weight)]
            teacher = None if self.aligned else (y * ~hid, y_mask & ~hid)  # hidden values never given
            return TrainingView(w, src, tgt, nodes, terms, teacher)
        src, tgt = hide_stations(n, tc.hide_fraction, gen)
        terms = [LossTerm("tgt", y[:, :, tgt], y_mask[:, :, tgt])]
        if tc.src_loss_weight:
            terms.append(LossTerm("src", y[:, :, src], y_mask[:, :, src], tc.src_loss_weight))
        teacher = None if self.aligned else (y[:, :, src], y_mask[:, :, src])
        return TrainingView(w, src, tgt, nodes, terms, teacher)


class Krige(_StationTask):
    """Hidden stations over the input window (reanalysis). Each (time, station) cell is scored
    once: overlapping windows' estimates are averaged."""

    name = "krige"
    kind = "krige"


class Forecast(_StationTask):
    """The ``horizon`` steps after the window, at hidden stations; visible stations' truth of the
    output steps may be given for teacher forcing (never the hidden ones')."""

    name = "forecast"
    kind = "forecast"
