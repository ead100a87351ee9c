"""Scores of probabilistic estimates given as S samples per cell: CRPS, interval coverage, quantiles.

CRPS in its energy form (Gneiting and Raftery 2007, eq. 21) for the empirical distribution of S
samples x_1..x_S and an observation y:

    CRPS = E|X - y| - ½ E|X - X'| = (1/S) Σ_i |x_i - y| - (1/S²) Σ_i (2i - S - 1) x_(i),

with x_(1) <= … <= x_(S) the sorted samples (Σ_{i,j} |x_i - x_j| = 2 Σ_i (2i - S - 1) x_(i)), so a
cell costs O(S log S) instead of O(S²); ties need no special care. This is
``properscoring.crps_ensemble`` (the tests compare), not the "fair" variant with S(S - 1), and
not CSDI's normalised quantile-loss approximation (their Σ CRPS / Σ |y| over 19 quantiles).

Quantiles interpolate linearly between order statistics (numpy's default ``linear`` method),
computed by one sort; no size limit (``torch.quantile`` refuses inputs over 2^24 elements).
Everything is vectorised over cells; arithmetic is in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stgraph.ops.quantiles import sample_quantiles


def _check(samples: Tensor, truth: Tensor, mask: Tensor | None) -> Tensor:
    """Validate shapes; return the bool mask (all True when None)."""
    if samples.dim() < 1 or samples.size(0) < 1:
        raise ValueError(f"samples must be (S, ...) with S >= 1, got shape {tuple(samples.shape)}")
    if tuple(samples.shape[1:]) != tuple(truth.shape):
        raise ValueError(f"samples (S, ...) {tuple(samples.shape)} and truth {tuple(truth.shape)} disagree after S")
    if mask is None:
        return torch.ones(truth.shape, dtype=torch.bool, device=truth.device)
    if tuple(mask.shape) != tuple(truth.shape):
        raise ValueError(f"mask {tuple(mask.shape)} must be shaped like truth {tuple(truth.shape)}")
    return mask.bool()


def crps_from_samples(samples: Tensor, truth: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-cell CRPS of the empirical distribution of the samples.

    Args:
        samples: (S, ...) S samples of every cell.
        truth: (...) the observations.
        mask: (...) bool, True where the truth is observed (None: everywhere).
    Returns:
        (...) float64 CRPS per cell, in the samples' units; 0 where ``mask`` is False (whatever
        the inputs hold there, NaN included).
    """
    m = _check(samples, truth, mask)
    zero = torch.zeros((), dtype=torch.float64, device=truth.device)
    x = torch.where(m, samples.detach().to(torch.float64), zero).sort(dim=0).values  # (S, ...)
    y = torch.where(m, truth.detach().to(torch.float64), zero)
    s = x.size(0)
    weights = (2.0 * torch.arange(1, s + 1, dtype=torch.float64, device=x.device) - s - 1).reshape(
        -1, *([1] * (x.dim() - 1))
    )
    spread = (weights * x).sum(dim=0) / (s * s)  # ½ E|X - X'|
    crps = (x - y).abs().mean(dim=0) - spread
    return torch.where(m, crps, zero)


def interval_bounds(samples: Tensor, level: float = 0.9) -> tuple[Tensor, Tensor]:
    """(lower, upper), each (...): the central ``level`` interval, quantiles (1 ± level) / 2."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    q = sample_quantiles(samples, ((1.0 - level) / 2.0, (1.0 + level) / 2.0))
    return q[0], q[1]


def interval_coverage(samples: Tensor, truth: Tensor, mask: Tensor | None = None, level: float = 0.9) -> float:
    """Fraction of observed cells whose truth lies in the central ``level`` interval of its
    samples (bounds included); NaN when no cell is observed.

    Args:
        samples: (S, ...); truth: (...); mask: (...) bool or None (every cell); level: in (0, 1).
    """
    m = _check(samples, truth, mask)
    lower, upper = interval_bounds(samples, level)
    hit = (lower <= truth) & (truth <= upper)
    n = int(m.sum())
    return float((hit & m).sum()) / n if n else float("nan")
