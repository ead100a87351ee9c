"""``reconstruct`` on a grid, DiffRecon's own protocol (Sun et al.):
from a sparse pattern on a coarse grid, estimate every fine grid cell and every removed coarse cell.

Selected by ``data.grid_coarsen: f`` (f > 1) with ``data.task: reconstruct`` on a grid dataset
(e.g. ``era5-uk-t2m``). The network becomes both resolutions at once
(:func:`stgraph.data.grid.coarse_fine_network`): the f × f block means (the coarse cells: the
visible, train-role nodes, which lose the pattern's cells as in station ``reconstruct``) and the
grid's own cells (the fine cells: the targets, test role; ``val`` scores them too, in the val
period). Models see the task as ``reconstruct``: coarse cells in ``x``/``pos_src``, fine cells as
``pos_tgt``.

How it differs from ``reconstruct`` on stations, by design, named: **the fine cells are not unseen
places, they are unseen times.** In the train period the fine field is known and is the training
target (the paper trains on fine ground truth); in the val and test periods no fine value and no
removed coarse value reaches a model, the scaler (fitted on the coarse cells in the train period
only) or a feature before it is scored. Training batches hold every coarse cell (the pattern
re-drawn per batch over those observed, as in station ``reconstruct``) and, as targets,
``train.subgraph_size`` fine cells drawn per batch (all when unset): ``train.subgraph: random``
draws them uniformly, ``local`` takes a random cell and its nearest cells, a compact patch of the
fine grid. A model that convolves the fine grid (DiffRecon's stage-2 U-Net,
:mod:`stgraph.nn.fine_mixer`) sees a uniform draw as a map whose other cells are zero (256 of the
ERA5 grid's 1,536: five in six empty), unlike the full map it is evaluated on; a patch is filled
around its centre, as evaluation's map is everywhere. There are no stand-in stations: nothing is
hidden among the coarse cells except by the pattern.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from stgraph.data.grid import coarse_fine_network
from stgraph.data.splits import StationSplit
from stgraph.data.station_data import StationData
from stgraph.data.windows import Windows
from stgraph.engine.tasks.base import LossTerm, TrainingView, select_columns, subgraph_columns
from stgraph.engine.tasks.reconstruct import Reconstruct


def _level(data: StationData) -> np.ndarray:
    if "level" not in data.stations:
        raise ValueError(
            f"{data.name}: the grid protocol needs the coarse-fine network (data.grid_coarsen builds it from a grid "
            "dataset); the stations table has no 'level' column"
        )
    return data.stations["level"].to_numpy()


class GridReconstruct(Reconstruct):
    """``reconstruct`` with the coarse grid visible and the fine grid as targets seen in training."""

    name = "reconstruct"
    protocol = "grid"
    scores_roles = False  # the fine cells are scored in both periods, by construction

    @staticmethod
    def prepare_data(data: StationData, dc) -> StationData:
        """The coarse-fine network of a grid dataset (``dc.grid_coarsen`` × ``dc.grid_coarsen`` blocks);
        a network :func:`~stgraph.data.grid.coarse_fine_network` already built is taken as it is."""
        if "level" in data.stations and "coarse_factor" in data.meta:
            if list(data.meta["coarse_factor"]) != [dc.grid_coarsen] * 2:
                raise ValueError(
                    f"data.grid_coarsen={dc.grid_coarsen}, but the network was built with blocks "
                    f"{data.meta['coarse_factor']}"
                )
            return data
        if "grid" not in data.meta:
            raise ValueError(
                f"data.grid_coarsen={dc.grid_coarsen}: dataset '{data.name}' is not a grid (meta['grid'] is missing); "
                "use a grid dataset such as era5-uk-t2m, or leave data.grid_coarsen at 0"
            )
        return coarse_fine_network(data, dc.grid_coarsen)

    def station_split(self, data: StationData, make_split) -> StationSplit:
        """Coarse cells train (visible), fine cells test; no val role (``roles('val')`` scores the
        fine cells in the val period). ``split.method`` and its options do not apply."""
        level, ids = _level(data), np.asarray(data.station_ids)
        return StationSplit(train=ids[level == "coarse"], val=(), test=ids[level == "fine"], method="grid")

    def roles(self, split: StationSplit, data: StationData, role: str) -> tuple[np.ndarray, np.ndarray]:
        if role not in ("val", "test"):
            raise ValueError(f"role must be 'val' or 'test', got {role!r}")
        return split.indices(data, "train"), split.indices(data, "test")

    def training_nodes(self, split: StationSplit, data: StationData) -> np.ndarray:
        """Coarse cells then fine cells: the fine ones are training targets (train period only)."""
        return np.concatenate([split.indices(data, "train"), split.indices(data, "test")])

    def training_view(
        self, w: Windows, nodes: np.ndarray, targets: np.ndarray, tc, gen: torch.Generator
    ) -> TrainingView:
        coarse = np.isin(nodes, self._pattern().nodes)  # (N,) columns that are coarse cells
        src, fine = np.flatnonzero(coarse), np.flatnonzero(~coarse)
        if tc.subgraph_size and tc.subgraph_size < len(fine):
            latlon = None if self.latlon is None else self.latlon[nodes[fine]]
            fine = fine[subgraph_columns(len(fine), tc, gen, latlon)]
        cols = np.concatenate([src, fine])
        w, nodes = select_columns(w, cols), nodes[cols]
        src, tgt = np.arange(len(src)), np.arange(len(src), len(cols))
        y, y_mask, _ = self.out_window(w, targets)  # (B, W, N, C_out)
        observed = w.x_mask[:, :, src].any(dim=(0, 1, 3)).numpy()  # coarse columns observed in the batch
        removed = self._redraw(w.x.size(1), nodes[src], src[observed], gen)[None, :, :, None]  # (1, W, N_c, 1)
        s = torch.as_tensor(src)
        keep = torch.ones(1, 1, len(cols), 1, dtype=torch.bool)
        keep[:, :, len(src) :] = False  # fine cells are never inputs
        keep = keep.expand(1, w.x.size(1), -1, -1).clone()
        keep[:, :, s] = ~removed
        w = replace(w, x=w.x * keep, x_mask=w.x_mask & keep)
        ys, ms = y[:, :, s], y_mask[:, :, s]
        terms = [LossTerm("tgt", y[:, :, torch.as_tensor(tgt)], y_mask[:, :, torch.as_tensor(tgt)])]
        terms.append(LossTerm("src", ys, ms & removed))
        if tc.src_loss_weight:
            terms.append(LossTerm("src", ys, ms & ~removed, tc.src_loss_weight))
        return TrainingView(w, src, tgt, nodes, terms)
