"""Neighbour features: the k nearest visible stations *observed* at each step, found without a loop.

The visible stations are ranked by geodesic distance once per output station
(:func:`neighbour_table`); at every (sample, step, channel) the first ``k`` of that ranking that
are observed are picked by their cumulative rank among the observed ones
(:func:`nearest_observed`), and any per-station quantity (value now, value at a lag, age of the
last observation) is read at the picked stations with :func:`gather_picked`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.geo import geodesic_km
from stgraph.ops.neighbours import neighbour_order


@dataclass
class NeighbourTable:
    """Visible stations ranked by distance from each output station.

    Attributes:
        order: (M, R) long, indices into the N_src visible stations, nearest first (ties by index);
            R = N_src, or N_src - 1 when each station's own index is excluded.
        dist_km: (M, R) float32 geodesic distances (WGS84) in km, in the same order.
        bearing_sin, bearing_cos: (M, R) float32 sine and cosine of the initial bearing from the
            output station to each neighbour (clockwise from north; a coincident station has
            bearing 0: sin 0, cos 1).
    """

    order: torch.Tensor
    dist_km: torch.Tensor
    bearing_sin: torch.Tensor
    bearing_cos: torch.Tensor


def initial_bearing(lat1: torch.Tensor, lon1: torch.Tensor, lat2: torch.Tensor, lon2: torch.Tensor) -> torch.Tensor:
    """Initial great-circle bearing from point 1 to point 2, radians clockwise from north, elementwise
    (degrees in). Coincident points give 0 (``atan2(0, 0)``)."""
    p1, p2 = torch.deg2rad(lat1), torch.deg2rad(lat2)
    dl = torch.deg2rad(lon2) - torch.deg2rad(lon1)
    y = torch.sin(dl) * torch.cos(p2)
    x = torch.cos(p1) * torch.sin(p2) - torch.sin(p1) * torch.cos(p2) * torch.cos(dl)
    return torch.atan2(y, x)


def neighbour_table(pos_src: torch.Tensor, pos_out: torch.Tensor, exclude_self: bool) -> NeighbourTable:
    """Rank the visible stations by geodesic distance from each output station.

    Args:
        pos_src: (N_src, 2) latitude/longitude (degrees) of the visible stations.
        pos_out: (M, 2) of the output stations; with ``exclude_self`` it is ``pos_src`` itself.
        exclude_self: drop each station from its own ranking (``src`` features).
    Returns:
        :class:`NeighbourTable` with (M, R) tensors on ``pos_src``'s device.
    """
    order = neighbour_order(pos_src, pos_out, exclude_self=exclude_self)  # (M, R)
    ps, po = pos_src.double(), pos_out.double()
    lat_n, lon_n = ps[order, 0], ps[order, 1]  # (M, R)
    lat_o, lon_o = po[:, None, 0].expand_as(lat_n), po[:, None, 1].expand_as(lon_n)
    dist = geodesic_km(lat_o, lon_o, lat_n, lon_n)
    bearing = initial_bearing(lat_o, lon_o, lat_n, lon_n)
    return NeighbourTable(order, dist.float(), torch.sin(bearing).float(), torch.cos(bearing).float())


def nearest_observed(mask: torch.Tensor, order: torch.Tensor, k: int) -> torch.Tensor:
    """Positions in the ranking of the first ``k`` observed stations, for every cell at once.

    Args:
        mask: (B, T, N_src, C) bool, True where a visible station is observed.
        order: (M, R) ranking of the visible stations (nearest first) for each output station.
        k: neighbours picked.
    Returns:
        (B, T, M, k, C) long: slot j holds the rank position (index into R) of the (j+1)-th nearest
        station observed in that cell, or -1 where fewer than j+1 are observed.
    """
    b, t, _, c = mask.shape
    m, r = order.shape
    ranked = mask[:, :, order]  # (B, T, M, R, C)
    rank = ranked.cumsum(dim=3)  # 1-based rank among the observed, nearest first
    slot = torch.where(ranked & (rank <= k), rank - 1, torch.full_like(rank, k))  # k: not picked
    where_in_r = torch.arange(r, device=mask.device).view(1, 1, 1, r, 1).expand_as(slot)
    picked = torch.full((b, t, m, k + 1, c), -1, dtype=torch.long, device=mask.device)
    # slots 0..k-1 each receive at most one position; the overflow slot k is discarded
    return picked.scatter_(3, slot, where_in_r)[:, :, :, :k]


def gather_picked(per_station: torch.Tensor, order: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Read a per-station quantity at the picked neighbours.

    Args:
        per_station: (B, T, N_src, C) values of every visible station (NaN where undefined).
        order: (M, R) the ranking that ``picked`` indexes.
        picked: (B, T, M, k, C) rank positions from :func:`nearest_observed` (-1: none).
    Returns:
        (B, T, M, k, C) float: the quantity at each picked station, NaN in empty slots.
    """
    b, t, n, c = per_station.shape
    m, r = order.shape
    if r == 0:  # no neighbour to pick (no visible station, or only the station itself)
        return torch.full(picked.shape, float("nan"), dtype=per_station.dtype, device=per_station.device)
    station = order.reshape(1, 1, m, r, 1).expand(b, t, m, r, c).gather(3, picked.clamp_min(0))
    values = per_station.unsqueeze(2).expand(b, t, m, n, c).gather(3, station)
    return torch.where(picked >= 0, values, torch.full_like(values, float("nan")))


def gather_table(table_values: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """(M, R) per-pair quantity (distance, bearing) -> (B, T, M, k, C) at the picked neighbours, NaN
    in empty slots."""
    b, t, m, _, c = picked.shape
    r = table_values.size(1)
    if r == 0:
        return torch.full(picked.shape, float("nan"), dtype=table_values.dtype, device=table_values.device)
    out = table_values.reshape(1, 1, m, r, 1).expand(b, t, m, r, c).gather(3, picked.clamp_min(0))
    return torch.where(picked >= 0, out, torch.full_like(out, float("nan")))
