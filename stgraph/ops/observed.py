"""Where the observations are along time: the last observed value of each series, the
observations around every cell, and the gap fills built on them (LOCF/NOCB, persistence).
Vectorised over batch, steps, stations and channels."""

from __future__ import annotations

import torch


def last_observed(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x, mask: (B, W, N, C) -> each series' last observed value (B, N, C) and whether one exists."""
    steps = torch.arange(x.size(1), device=x.device).view(1, -1, 1, 1)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (B, N, C)
    value = x.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
    return value * (last >= 0), last >= 0


def observations_around(x: torch.Tensor, mask: torch.Tensor):
    """The observations around every cell along time (dim 1), vectorised.

    Args:
        x, mask: (B, W, N, C).
    Returns:
        steps: (B, W, N, C) each cell's step index; prev / nxt: (B, W, N, C) the step of the last
        observation at or before it (-1: none) and of the first at or after it (W: none);
        fwd / bwd: (B, W, N, C) the values observed there (0 where none).
    """
    w = x.size(1)
    steps = torch.arange(w, device=x.device).view(1, -1, 1, 1).expand_as(mask)
    prev = torch.where(mask, steps, torch.full_like(steps, -1)).cummax(dim=1).values  # last observed <= t
    nxt = torch.where(mask, steps, torch.full_like(steps, w)).flip(1).cummin(dim=1).values.flip(1)  # first >= t
    xm = torch.where(mask, x, torch.zeros_like(x))
    return steps, prev, nxt, xm.gather(1, prev.clamp_min(0)), xm.gather(1, nxt.clamp_max(w - 1))


def persisted_last(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask: (B, W, N, C) -> (B, N, C) each series' last observed value; a series never observed
    takes the mean over the stations that were observed (per batch and channel; 0 if none)."""
    value, has = last_observed(torch.where(mask, x, torch.zeros_like(x)), mask)
    hf = has.to(x.dtype)
    mean = (value * hf).sum(1, keepdim=True) / hf.sum(1, keepdim=True).clamp_min(1)
    return torch.where(has, value, mean.expand_as(value))


def locf_nocb(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask: (B, W, N, C) -> (B, W, N, C): observed cells unchanged, gaps filled by the last
    observation before them, else the first one after them, else 0. Vectorised over steps."""
    _, prev, nxt, fwd, bwd = observations_around(x, mask)
    return torch.where(prev >= 0, fwd, torch.where(nxt < x.size(1), bwd, torch.zeros_like(x)))
