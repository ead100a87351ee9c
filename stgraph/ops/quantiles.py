"""Quantiles of S samples per cell, linearly interpolated between order statistics (numpy's
default ``linear`` method), by one sort and with no size limit (``torch.quantile`` refuses inputs
over 2^24 elements)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

QUANTILE_LEVELS = (0.05, 0.5, 0.95)


def sample_quantiles(samples: Tensor, qs: Sequence[float] = QUANTILE_LEVELS) -> Tensor:
    """Quantiles of the samples of every cell (linear interpolation, numpy's default).

    Args:
        samples: (S, ...).
        qs: levels in [0, 1].
    Returns:
        (len(qs), ...) in the samples' dtype.
    """
    levels = torch.as_tensor(list(qs), dtype=torch.float64)
    if levels.dim() != 1 or not len(levels) or ((levels < 0) | (levels > 1)).any():
        raise ValueError(f"quantile levels must be a non-empty list in [0, 1], got {list(qs)}")
    if samples.dim() < 1 or samples.size(0) < 1:
        raise ValueError(f"samples must be (S, ...) with S >= 1, got shape {tuple(samples.shape)}")
    x = samples.sort(dim=0).values
    pos = levels * (x.size(0) - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = (pos - lo).to(x.dtype if x.is_floating_point() else torch.float64).to(x.device)
    frac = frac.reshape(-1, *([1] * (x.dim() - 1)))
    lower, upper = x[lo.to(x.device)], x[hi.to(x.device)]
    return lower + frac * (upper - lower)
