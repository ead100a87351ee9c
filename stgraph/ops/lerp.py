"""Linear interpolation in time, and ``lerp-knn``: its blend with the spatial kNN mean weighted
by the length of the gap being filled (``w = exp(-(gap - 1) / tau)``). Used as a baseline
(``lerp``, ``lerp-knn``), as the learned models' starting estimate, and as DiffRecon's guide."""

from __future__ import annotations

import torch

from stgraph.ops.neighbours import knn_mean, neighbour_order
from stgraph.ops.observed import observations_around


def lerp_in_time(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation along time (dim 1) between the observations around each gap.

    Args:
        x, mask: (B, W, N, C).
    Returns:
        filled: (B, W, N, C): observed cells unchanged; a gap with observations on both sides is
            interpolated linearly; one with an observation on one side only takes it (LOCF/NOCB);
            a series with no observation is 0.
        gap: (B, W, N, C) float: 0 at observed cells; the length of the run of missing steps a
            cell belongs to when it is bounded on both sides; ``2 * distance - 1`` to the one
            observed side otherwise (the gap is assumed to extend as far beyond the window);
            ``inf`` where the series holds no observation.
    """
    steps, prev, nxt, fwd, bwd = observations_around(x, mask)
    has_prev, has_next = prev >= 0, nxt < x.size(1)
    both = has_prev & has_next
    span = (nxt - prev).clamp_min(1).to(x.dtype)
    frac = (steps - prev).to(x.dtype) / span
    lerp = torch.where(both, fwd + (bwd - fwd) * frac, torch.where(has_prev, fwd, torch.where(has_next, bwd, 0.0)))
    filled = torch.where(mask, x, lerp)
    inf = torch.full_like(span, float("inf"))
    one_side = torch.where(has_prev, (steps - prev).to(x.dtype), (nxt - steps).to(x.dtype)) * 2 - 1
    gap = torch.where(both, span - 1, torch.where(has_prev | has_next, one_side, inf))
    return filled, torch.where(mask, torch.zeros_like(gap), gap)


def lerp_knn(x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, tau: float = 8.0, k: int = 3) -> torch.Tensor:
    """The gap-weighted blend: ``w * lerp + (1 - w) * kNN mean``, ``w = exp(-(gap - 1) / tau)``.

    Args:
        x, mask: (B, W, N, C) values and mask of the stations whose missing cells are filled.
        pos: (N, 2) their positions. tau: gap length scale in steps (tau -> 0: kNN only;
            tau -> inf: linear interpolation only). k: stations in the kNN mean (each cell's
            ``k`` nearest *other* stations observed at that step).
    Returns:
        (B, W, N, C): observed cells unchanged, missing cells blended (a side with no estimate
        leaves the other; neither: 0).
    """
    filled, gap = lerp_in_time(x, mask)
    xm = torch.where(mask, x, torch.zeros_like(x))
    if pos.size(0) > 1:
        order = neighbour_order(pos, pos, exclude_self=True).to(x.device)
        spatial = knn_mean(xm, mask, order, k)
        has_sp = mask[:, :, order].any(dim=3)
    else:
        spatial, has_sp = torch.zeros_like(x), torch.zeros_like(mask)
    has_t = torch.isfinite(gap)
    wt = torch.exp(-(gap.clamp_min(1.0) - 1.0) / max(tau, 1e-6)) if tau > 0 else (gap <= 1).to(x.dtype)
    wt = torch.where(has_t, wt, torch.zeros_like(wt))
    wt = torch.where(has_sp, wt, has_t.to(x.dtype))
    blend = wt * torch.where(has_t, filled, torch.zeros_like(filled)) + (1 - wt) * spatial
    return torch.where(mask, x, blend)
