"""Inverse-distance weighting on geodesic kilometres: the weights and the masked mean over the
stations observed at each step. Used by the IDW baseline, the IDW read-outs, the anchors and
the graph features."""

from __future__ import annotations

import torch

from stgraph.geo import geodesic_km


def idw_weights(pos_src: torch.Tensor, pos_tgt: torch.Tensor, power: float, k: int | None) -> torch.Tensor:
    """(N_tgt, N_src) unnormalised weights 1/d^power (geodesic km), zero beyond the k nearest."""
    ps, pt = pos_src.double(), pos_tgt.double()
    d = geodesic_km(pt[:, None, 0], pt[:, None, 1], ps[None, :, 0], ps[None, :, 1])  # stations: N_tgt × N_src is small
    w = d.clamp_min(1e-3).pow(-power)
    if k is not None and k < ps.size(0):
        keep = torch.zeros_like(w, dtype=torch.bool).scatter_(1, d.topk(k, dim=1, largest=False).indices, True)
        w = w * keep
    return w.float()


def masked_idw(
    x: torch.Tensor,
    mask: torch.Tensor,
    pos_src: torch.Tensor,
    pos_tgt: torch.Tensor,
    power: float = 2.0,
    k: int | None = None,
    *,
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-distance weighted mean of the stations observed at each step.

    Args:
        x, mask: (B, T, N_src, C) values and observation mask.
        pos_src: (N_src, 2), pos_tgt: (N_tgt, 2) latitude/longitude in degrees.
        power: IDW power on geodesic km. k: nearest stations considered (None: all).
        exclude_self: ``pos_tgt`` is ``pos_src`` and each station is estimated from the others.
    Returns:
        (B, T, N_tgt, C) estimate (0 where no considered station is observed) and its
        (B, T, N_tgt, C) bool "has an estimate" mask.
    """
    b, t, _, c = x.shape
    if pos_tgt.size(0) == 0:
        empty = x.new_zeros(b, t, 0, c)
        return empty, empty.bool()
    if exclude_self:  # drop each station itself, then keep its k nearest others
        w = idw_weights(pos_src, pos_tgt, power, None).to(x).fill_diagonal_(0.0)
        if k is not None and k < w.size(1):
            keep = torch.zeros_like(w, dtype=torch.bool).scatter_(1, w.topk(k, dim=1).indices, True)
            w = w * keep
    else:
        w = idw_weights(pos_src, pos_tgt, power, k).to(x)
    obs = mask.to(x.dtype)
    num = torch.einsum("ts,bhsc->bhtc", w, torch.where(mask, x, torch.zeros_like(x)))
    den = torch.einsum("ts,bhsc->bhtc", w, obs)
    has = den > 0
    return torch.where(has, num / den.clamp_min(1e-12), torch.zeros_like(num)), has
