"""Upsampling a completed coarse map: the grid baselines of DiffRecon's paper, no parameters.

Both complete the visible coarse cells first — each cell the pattern removed (or never observed)
at a step takes the inverse-distance mean of its ``k`` nearest observed cells at that step (the
"kNN-completed coarse map") — then carry the completed map to the targets:

* ``bicubic``: bicubic convolution (Keys, a = -0.75, as ``torch.nn.functional.interpolate`` /
  ``grid_sample`` with ``mode="bicubic"``) on the coarse grid, read at each target's latitude and
  longitude with cell-centre alignment (``align_corners=False``: a coarse cell's value sits at its
  centre, so a fine grid nested f × f in the coarse one gets exactly ``interpolate(scale_factor=f)``);
  targets beyond the outer cell centres take the border cells' values (``padding_mode="border"``).
  The visible nodes must be the cells of one full regular lat/lon grid (any order).
* ``idw-upsample``: the inverse-distance mean (power ``power``) of the ``k`` nearest completed
  coarse cells at each target.

``idw-upsample`` is defined for ``krige`` and ``reconstruct``, ``bicubic`` for ``reconstruct`` (on
a grid); outputs at the input steps, ``src`` the completed coarse map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.ops.idw import idw_weights, masked_idw


@dataclass
class UpsampleParams:
    k: int = 4  # observed coarse cells completing a removed one (and, for idw-upsample, per target)
    power: float = 2.0  # inverse-distance power of the completion and of idw-upsample


def complete_map(x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, k: int, power: float) -> torch.Tensor:
    """(B, W, N, C): observed cells kept, the others the IDW mean of their k nearest cells observed
    at that step (whichever they are; cells tied with the k-th nearest count too, so the result does
    not depend on the node order); a step with no observed cell stays 0 (the standardised mean).
    Memory: a (B, W, C, N, N) weight tensor (coarse maps are small)."""
    w = idw_weights(pos, pos, power, None).to(x).fill_diagonal_(0.0)  # (N, N) target x source
    we = w[None, None, None] * mask.permute(0, 1, 3, 2).unsqueeze(-2).to(x)  # (B, W, C, N_t, N_s)
    if k < w.size(1):  # each target's k largest weights among the observed sources, ties at the k-th kept
        kth = we.topk(k, dim=-1).values[..., -1:]
        we = we * (we >= kth * (1 - 1e-6))  # order-free: a regular grid has equidistant neighbours
    num = (we * x.permute(0, 1, 3, 2).unsqueeze(-2)).sum(-1)  # (B, W, C, N_t)
    den = we.sum(-1)
    fill = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num)).permute(0, 1, 3, 2)
    return torch.where(mask, x, fill)


def grid_axes(pos: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat (I,), lon (J,) increasing, order (I*J,)) of nodes forming a full regular grid, where
    ``order`` puts the nodes in row-major (lat, lon) order. Raises if they do not form one."""
    p = pos.detach().double().cpu().numpy().round(6)
    lat, lon = np.unique(p[:, 0]), np.unique(p[:, 1])
    if len(lat) * len(lon) != len(p) or len(lat) < 2 or len(lon) < 2:
        raise ValueError(
            f"bicubic upsampling needs the visible nodes to be the cells of a full regular grid; got {len(p)} nodes "
            f"on {len(lat)} latitudes x {len(lon)} longitudes"
        )
    for name, axis in (("latitude", lat), ("longitude", lon)):
        step = np.diff(axis)
        if not np.allclose(step, step[0], rtol=1e-4):
            raise ValueError(f"bicubic upsampling needs a regular grid; the {name} spacing varies ({step.min():.4g} "
                             f"to {step.max():.4g} degrees)")  # fmt: skip
    i, j = np.searchsorted(lat, p[:, 0]), np.searchsorted(lon, p[:, 1])
    order = np.empty(len(p), dtype=np.int64)
    order[i * len(lon) + j] = np.arange(len(p))
    return lat, lon, order


def bicubic_at(values: torch.Tensor, lat: np.ndarray, lon: np.ndarray, pos_tgt: torch.Tensor) -> torch.Tensor:
    """values (B, I, J, C) on increasing cell-centre axes lat (I,), lon (J,) -> (B, N_tgt, C) bicubic
    at the targets' (N_tgt, 2) lat/lon (cell-centre alignment, border padding)."""
    b, i, j, c = values.shape
    t = pos_tgt.double()
    gx = ((t[:, 1] - lon[0]) / (lon[1] - lon[0]) * 2 + 1) / j - 1  # align_corners=False: centre k at (2k+1)/J - 1
    gy = ((t[:, 0] - lat[0]) / (lat[1] - lat[0]) * 2 + 1) / i - 1
    grid = torch.stack([gx, gy], dim=-1).to(values.dtype).view(1, 1, -1, 2).expand(b, -1, -1, -1)
    out = F.grid_sample(values.permute(0, 3, 1, 2), grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1)  # (B, C, 1, N) -> (B, N, C)


def bicubic_upsample(values: torch.Tensor, pos_src: torch.Tensor, pos_tgt: torch.Tensor) -> torch.Tensor:
    """(B, W, N_src, C) complete values on the cells of a full regular lat/lon grid (any node order)
    -> (B, W, N_tgt, C) their bicubic interpolation at the targets (:func:`bicubic_at`). Raises if
    the source nodes do not form such a grid (:func:`grid_axes`)."""
    b, w, _, c = values.shape
    lat, lon, order = grid_axes(pos_src)
    maps = values[:, :, torch.as_tensor(order, device=values.device)].reshape(b * w, len(lat), len(lon), c)
    return bicubic_at(maps, lat, lon, pos_tgt).reshape(b, w, -1, c)


class _Upsample(StationModel):
    trainable = False
    learns_interpolation = False
    tasks = frozenset({"krige", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: UpsampleParams | None = None):
        super().__init__(sizes)
        self.params = params or UpsampleParams()
        if self.params.k < 1 or self.params.power <= 0:
            raise ValueError(f"need k >= 1 and power > 0, got k={self.params.k}, power={self.params.power}")

    def forward(self, batch: GraphBatch) -> Prediction:
        tc = list(self.sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]  # (B, W, N_src, C)
        src = complete_map(x, m, batch.pos_src, self.params.k, self.params.power)
        return Prediction(src, self.upsample(src, batch))

    def upsample(self, src: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        raise NotImplementedError  # each subclass is one method


class Bicubic(_Upsample):
    """Bicubic upsampling of the kNN-completed coarse map (the visible nodes form a full grid:
    ``reconstruct`` under the grid protocol, ``data.grid_coarsen``)."""

    tasks = frozenset({"reconstruct"})

    def upsample(self, src: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        return bicubic_upsample(src, batch.pos_src, batch.pos_tgt)


class IDWUpsample(_Upsample):
    """Inverse-distance weighting of the k nearest cells of the kNN-completed coarse map."""

    def upsample(self, src: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        full = torch.ones_like(src, dtype=torch.bool)
        return masked_idw(src, full, batch.pos_src, batch.pos_tgt, self.params.power, self.params.k)[0]
