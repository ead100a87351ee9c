"""Stations in order: by geodesic distance from each station (and the mean of the nearest ones
observed at each step, the spatial kNN estimate), or in one canonical order by position."""

from __future__ import annotations

import numpy as np
import torch

from stgraph.geo import geodesic_km


def neighbour_order(pos_from: torch.Tensor, pos_to: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """(N_to, N_from') indices of ``pos_from`` stations, nearest first (geodesic km, ties by index).

    With ``exclude_self`` (``pos_from`` is ``pos_to``) each station's own index is dropped, so
    N_from' = N_from - 1; otherwise N_from' = N_from.
    """
    pf, pt = pos_from.double(), pos_to.double()
    d = geodesic_km(pt[:, None, 0], pt[:, None, 1], pf[None, :, 0], pf[None, :, 1])  # stations: small
    if exclude_self:
        d = d.fill_diagonal_(float("inf"))
    order = torch.argsort(d, dim=1, stable=True)
    return order[:, :-1] if exclude_self else order


def knn_mean(x: torch.Tensor, mask: torch.Tensor, order: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the first ``k`` observed stations in each row of ``order``.

    Args:
        x, mask: (B, W, N, C) values and observation mask.
        order: (T, R) station indices into N, nearest first.
        k: neighbours averaged.
    Returns:
        (B, W, T, C); 0 where no listed station is observed.
    """
    xr = x[:, :, order]  # (B, W, T, R, C)
    mr = mask[:, :, order]
    sel = mr & (mr.cumsum(dim=3) <= k)  # the first k observed in rank order
    num = torch.where(sel, xr, torch.zeros_like(xr)).sum(dim=3)
    cnt = sel.sum(dim=3)
    return torch.where(cnt > 0, num / cnt.clamp_min(1).to(x.dtype), torch.zeros_like(num))


def canonical_order(pos: torch.Tensor) -> torch.Tensor:
    """(N,) long permutation sorting (N, 2) lat/lon by latitude, then longitude (ties by index):
    an order of stations that does not depend on the order they come in."""
    p = pos.detach().double().cpu().numpy()
    return torch.as_tensor(np.lexsort((np.arange(len(p)), p[:, 1], p[:, 0])), dtype=torch.long, device=pos.device)
