"""``reconstruct``: from a sparse pattern on the coarse nodes, estimate every coarse cell the
pattern removed and every fine node; the two are scored separately (DiffRecon's task,
Sun et al., on stations).

On stations the coarse nodes are the visible (train-role) stations and the fine nodes the hidden
ones (val/test roles, never seen, as in ``krige``). The pattern (``split.pattern``: ``fixed`` /
``random`` / ``block``, :mod:`stgraph.data.patterns`) is drawn once over the whole series of the
coarse nodes, seeded by ``split.pattern_seed`` (default ``split.seed``), saved in the run, and its
cells are removed from the data models see everywhere — inputs, training windows and the scaler
(:meth:`Reconstruct.sparse_view`); the truth keeps them.

Training (training stations, train period): some stations are hidden entirely as stand-ins of the
fine nodes (``train.hide_fraction``, as ``krige``: targets with no input, or per sample with
``node_masking: sample``), and on the others the same kind of pattern at the same ratio is
re-drawn for every batch (from the epoch's generator) over the columns observed in the batch; the
loss scores the stand-ins (``tgt``) and the re-drawn cells (``src``), plus the kept cells weighted
``train.src_loss_weight``. Stations the global pattern emptied (``fixed``, ``block``) hold no
observation, so the re-draw skips them and the block moves to the corner of the stations left.

Evaluation scores two groups: ``hidden`` (the fine nodes: ``pred.tgt`` at the val/test stations)
and ``removed`` (the coarse cells the pattern removed: ``pred.src`` there, where the truth was
observed), each cell once (overlapping windows averaged). Validation's early-stopping score is the
mean of the two groups' MAEs.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import torch

from stgraph.data.patterns import SparsePattern
from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
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
from stgraph.models.base import Prediction


class Reconstruct(Task):
    name = "reconstruct"
    kind = "reconstruct"
    extra_groups = ("removed",)
    options = frozenset(
        {"split.pattern", "split.pattern_ratio", "split.pattern_seed", "split.pattern_corner", "data.grid_coarsen"}
    )

    def sparse_view(
        self, view: StationData, split: StationSplit, cfg, periods=None
    ) -> tuple[StationData, SparsePattern]:
        """(the data without the pattern's cells, the pattern drawn over the train-role stations)."""
        sc, dc = cfg.split, cfg.data
        if dc.colocated_channels:
            raise ValueError(
                f"data.colocated_channels {list(dc.colocated_channels)} is not defined for task 'reconstruct' "
                "(the pattern removes whole cells); leave it empty"
            )
        coarse = split.indices(view, "train")
        seed = sc.seed if sc.pattern_seed is None else sc.pattern_seed
        try:
            pattern = SparsePattern.draw(
                sc.pattern, view.num_steps, view.latlon[coarse], ratio=sc.pattern_ratio, seed=seed,
                corner=sc.pattern_corner, nodes=coarse,
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(f"split.pattern={sc.pattern!r}, split.pattern_ratio={sc.pattern_ratio}: {e}") from None
        removed = np.zeros(view.mask.shape[:2], dtype=bool)  # (T, N)
        removed[:, coarse] = pattern.removed
        keep = ~removed[..., None]  # (T, N, 1)
        return replace(view, values=np.where(keep, view.values, 0.0), mask=view.mask & keep), pattern

    def _pattern(self) -> SparsePattern:
        if self.pattern is None:
            raise ValueError("task 'reconstruct' needs its sparse pattern (Experiment.pattern); none was given")
        return self.pattern

    @functools.cached_property
    def _removed(self) -> torch.Tensor:
        """(T, N_coarse) bool removed cells, as a tensor."""
        return torch.as_tensor(self._pattern().removed)

    def _columns(self, nodes: np.ndarray) -> np.ndarray:
        """Columns of the pattern of dataset nodes (each must be a coarse node)."""
        p = self._pattern()
        order = np.argsort(p.nodes)
        at = np.searchsorted(p.nodes, nodes, sorter=order)
        cols = order[np.clip(at, 0, len(order) - 1)]
        if len(nodes) and not np.array_equal(p.nodes[cols], nodes):
            raise ValueError("task 'reconstruct': nodes outside the pattern's (train-role) stations")
        return cols

    def scored_group(
        self, group: str, pred: Prediction, y: torch.Tensor, m: torch.Tensor, src, tgt, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``removed``: pred.src, truth and mask (B, W, N_src, C_out) at the cells the pattern removed."""
        if group != "removed":
            return super().scored_group(group, pred, y, m, src, tgt, start)
        steps = start[:, None] + torch.arange(y.size(1))  # (B, W)
        cols = torch.as_tensor(self._columns(np.asarray(src)))
        removed = self._removed[steps][:, :, cols].unsqueeze(-1)  # (B, W, N_src, 1)
        return pred.src, y[:, :, src], m[:, :, src] & removed

    def group_nodes(self, group: str, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        if group != "removed":
            return super().group_nodes(group, src, tgt)
        return np.asarray(src)

    def _redraw(self, steps: int, nodes: np.ndarray, candidates: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        """(W, N) bool: the pattern's kind re-drawn over the ``candidates`` columns (others False)."""
        removed = torch.zeros(steps, len(nodes), dtype=torch.bool)
        if len(candidates) >= 2:
            p = self._pattern()
            pos = p.pos[self._columns(nodes[candidates])]
            k = 0 if p.ratio is None else round(p.ratio * len(candidates))
            if p.kind == "block" or 0 < k < len(candidates):  # too few stations for the ratio: none removed
                removed[:, torch.as_tensor(candidates)] = torch.as_tensor(p.redraw(steps, pos, gen))
        return removed

    def training_view(
        self, w: Windows, nodes: np.ndarray, targets: np.ndarray, tc, gen: torch.Generator
    ) -> TrainingView:
        if tc.subgraph_size and tc.subgraph_size < len(nodes):
            cols = subgraph_columns(len(nodes), tc, gen, None if self.latlon is None else self.latlon[nodes])
            w, nodes = select_columns(w, cols), nodes[cols]
        y, y_mask, _ = self.out_window(w, targets)  # (B, W, N, C_out), before anything is hidden
        n, steps = len(nodes), w.x.size(1)
        observed = w.x_mask.any(dim=(0, 1, 3)).numpy()  # (N,) columns with an observation in the batch
        if tc.node_masking == "sample":
            hidden = hide_per_sample(w.x.size(0), n, tc.hide_fraction, gen)[:, None, :, None]  # (B, 1, N, 1)
            src, tgt = np.arange(n), np.zeros(0, dtype=np.int64)
        else:
            src, tgt = hide_stations(n, tc.hide_fraction, gen)
            hidden = torch.zeros(1, 1, n, 1, dtype=torch.bool)
            hidden[:, :, torch.as_tensor(tgt)] = True
        removed = self._redraw(steps, nodes, src[observed[src]], gen)[None, :, :, None]  # (1, W, N, 1)
        removed = removed & ~hidden
        keep = ~(hidden | removed)
        w = replace(w, x=w.x * keep, x_mask=w.x_mask & keep)
        s = torch.as_tensor(src)
        ys, ms = y[:, :, s], y_mask[:, :, s]
        if tc.node_masking == "sample":  # the stand-ins are columns of src with their cells cleared
            terms = [LossTerm("src", ys, ms & hidden)]
        else:
            terms = [LossTerm("tgt", y[:, :, tgt], y_mask[:, :, tgt])]
        terms.append(LossTerm("src", ys, ms & removed[:, :, s]))  # the re-drawn pattern's cells
        if tc.src_loss_weight:
            terms.append(LossTerm("src", ys, ms & keep[:, :, s], tc.src_loss_weight))
        return TrainingView(w, src, tgt, nodes, terms)
