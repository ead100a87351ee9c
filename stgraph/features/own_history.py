"""A series' own history as features: lags, the observations around a cell, the last observation.

Everything is vectorised along time (dim 1) and reads a value only where its mask is True;
undefined features (no observation, a lag before the window) are NaN. The observations around a
cell are the ones *strictly* before and after it, so a cell's own value is never among its
features, whether it is observed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.ops.observed import observations_around


def observed_or_nan(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., ) values where ``mask`` is True, NaN elsewhere (whatever ``x`` holds there)."""
    return torch.where(mask, x, torch.full_like(x, float("nan")))


def lagged(values: torch.Tensor, lag: int) -> torch.Tensor:
    """(B, T, ...) -> (B, T, ...) the value ``lag`` steps earlier along dim 1; NaN before the window."""
    if lag < 1:
        raise ValueError(f"lag must be >= 1, got {lag}")
    pad = torch.full_like(values[:, : min(lag, values.size(1))], float("nan"))
    return torch.cat([pad, values[:, : max(values.size(1) - lag, 0)]], dim=1)


@dataclass
class AroundCell:
    """The observations strictly before and after every cell, each (B, W, N, C) float.

    Attributes:
        locf, nocb: the last observed value before the cell / the first after it (NaN: none).
        locf_gap, nocb_gap: steps from that observation to the cell (>= 1; NaN: none).
        lerp: linear interpolation in time between the two (NaN unless both exist).
    """

    locf: torch.Tensor
    locf_gap: torch.Tensor
    nocb: torch.Tensor
    nocb_gap: torch.Tensor
    lerp: torch.Tensor


def around_cell(x: torch.Tensor, mask: torch.Tensor) -> AroundCell:
    """The observations strictly around each cell of (B, W, N, C) ``x`` / bool ``mask`` (see
    :class:`AroundCell`). Built on :func:`~stgraph.models.baselines.persistence.observations_around`
    ("at or before" / "at or after"), shifted by one step so the cell itself is excluded."""
    w = x.size(1)
    steps, prev, nxt, fwd, bwd = observations_around(x, mask)
    # strictly before t: the at-or-before answer of step t - 1; strictly after: that of t + 1
    prev = torch.cat([torch.full_like(prev[:, :1], -1), prev[:, :-1]], dim=1)
    fwd = torch.cat([torch.zeros_like(fwd[:, :1]), fwd[:, :-1]], dim=1)
    nxt = torch.cat([nxt[:, 1:], torch.full_like(nxt[:, :1], w)], dim=1)
    bwd = torch.cat([bwd[:, 1:], torch.zeros_like(bwd[:, :1])], dim=1)
    has_prev, has_next = prev >= 0, nxt < w
    nan = torch.full_like(x, float("nan"))
    gap_prev, gap_next = (steps - prev).to(x.dtype), (nxt - steps).to(x.dtype)
    frac = gap_prev / (gap_prev + gap_next)
    return AroundCell(
        locf=torch.where(has_prev, fwd, nan),
        locf_gap=torch.where(has_prev, gap_prev, nan),
        nocb=torch.where(has_next, bwd, nan),
        nocb_gap=torch.where(has_next, gap_next, nan),
        lerp=torch.where(has_prev & has_next, fwd + (bwd - fwd) * frac, nan),
    )


def last_observation(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W, N, C) -> each series' last observed value in the window and its age (steps from it to
    the window's last step, 0 if observed there), both (B, N, C) float, NaN where never observed."""
    w = x.size(1)
    _, prev, _, fwd, _ = observations_around(x, mask)
    last, value = prev[:, -1], fwd[:, -1]
    nan = torch.full_like(value, float("nan"))
    return torch.where(last >= 0, value, nan), torch.where(last >= 0, (w - 1 - last).to(x.dtype), nan)


def value_before_end(x: torch.Tensor, mask: torch.Tensor, lag: int) -> torch.Tensor:
    """(B, W, N, C) -> (B, N, C) the value ``lag`` steps before the first step after the window
    (input step ``W - lag``; lag 1 is the window's last step), NaN if unobserved or before the window."""
    if lag < 1:
        raise ValueError(f"lag must be >= 1, got {lag}")
    w = x.size(1)
    if lag > w:
        return torch.full_like(x[:, 0], float("nan"))
    return observed_or_nan(x[:, w - lag], mask[:, w - lag])
