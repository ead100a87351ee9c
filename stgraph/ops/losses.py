"""Losses over the observed cells only: masked mean absolute and squared error."""

from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over ``mask``'s cells (0 when it holds none); any matching shapes."""
    m = mask.to(pred.dtype)
    return ((pred - true) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def masked_l1(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over ``mask``'s cells (0 when it holds none); any matching shapes."""
    m = mask.to(pred.dtype)
    return ((pred - true).abs() * m).sum() / m.sum().clamp_min(1.0)


LOSSES = {"l1": masked_l1, "mse": masked_mse}
