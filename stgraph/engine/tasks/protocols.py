"""AMLSG's protocol options: what a protocol declares known beyond the visible stations' inputs.

AMLSG (the Shanghai 2014-2025 air-quality inventory's stacked generalisation) reconstructs air
quality in three stages; each is an engine option usable with every model, and each says exactly
what more the model may see:

- **hybrid anchor** (AMLSG's term; ``data.colocated_channels``): co-located channels (e.g. PM10,
  CO for PM2.5) are declared observed at the target stations; models get them at the targets over the input steps
  (``GraphBatch.colocated_tgt``), never the targets' other channels (:func:`colocated_channel_indices`,
  :func:`colocated_at_targets`);
- **downscaling** (``data.aggregate: mean``): the mean of the target channels over the stations of
  the batch's universe at each input step, like a known city-level series
  (``GraphBatch.aggregate``, :func:`station_mean`). By design the targets' values reach the model
  through this mean, and only through it;
- **backcasting** is a time split: ``split.backcast`` / ``split.periods``
  (:mod:`stgraph.data.time_splits`).

The experiment (:meth:`stgraph.engine.experiment.Experiment.batch`) fills the batch fields; the
station tasks keep the co-located channels observed at stations they hide per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stgraph.data.windows import Windows


def check_aggregate(dc) -> None:
    """``data.aggregate`` is a protocol of the station tasks: refuse it for ``impute``, whose scored
    evaluation cells belong to visible stations (an aggregate over them would carry those cells).

    Args:
        dc: the :class:`~stgraph.engine.config.DataConfig` (``aggregate``, ``task``).
    """
    if dc.task == "impute" and dc.aggregate != "none":
        raise ValueError(
            f"data.aggregate={dc.aggregate!r} is a protocol of the station tasks (krige, forecast): impute "
            "scores evaluation cells of visible stations, and an aggregate over them would carry those cells"
        )


def colocated_channel_indices(dc, names: Sequence[str]) -> np.ndarray:
    """Indices of ``dc.colocated_channels`` among the input channels ``names``, validated.

    Args:
        dc: the :class:`~stgraph.engine.config.DataConfig` (``colocated_channels``, ``target_channels``,
            ``task``).
        names: the input channels, in order.

    Raises:
        ValueError: naming ``data.colocated_channels``: a channel that is not an input channel, one
            that is a target channel, a repeated one, or any for ``impute``.
    """
    chosen = list(dc.colocated_channels)
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    if dc.task == "impute":
        raise ValueError(
            f"data.colocated_channels {chosen} mean nothing for task 'impute': every station is visible, so "
            "its other channels are already in its input; leave data.colocated_channels empty"
        )
    repeated = sorted({c for c in chosen if chosen.count(c) > 1})
    if repeated:
        raise ValueError(f"data.colocated_channels lists {repeated} more than once")
    missing = [c for c in chosen if c not in names]
    if missing:
        raise ValueError(
            f"data.colocated_channels {missing} must be input channels (data.input_channels: {list(names)})"
        )
    clash = [c for c in chosen if c in dc.target_channels]
    if clash:
        raise ValueError(
            f"data.colocated_channels {clash} are target channels (data.target_channels: {list(dc.target_channels)}): "
            "a co-located channel is one declared observed at the targets, never what is scored there"
        )
    return np.array([list(names).index(c) for c in chosen], dtype=np.int64)


def colocated_at_targets(w: Windows, tgt: np.ndarray, colocated: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The co-located channels of the target columns over the input steps.

    Args:
        w: windows whose columns include the targets; x, x_mask (B, W, N, C_in).
        tgt: (N_tgt,) target columns of ``w``.
        colocated: (C_a,) co-located channel indices among the input channels.
    Returns:
        values (B, W, N_tgt, C_a), standardised, 0 where unobserved; mask (B, W, N_tgt, C_a) bool.
    """
    cols, chans = torch.as_tensor(tgt, dtype=torch.long), torch.as_tensor(colocated, dtype=torch.long)
    m = w.x_mask[:, :, cols][..., chans]
    x = w.x[:, :, cols][..., chans]
    return torch.where(m, x, torch.zeros_like(x)), m


def station_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the station axis of the observed cells.

    Args:
        values: (B, W, N, C); unobserved cells may hold anything (NaN included).
        mask: (B, W, N, C) bool, True where observed.
    Returns:
        mean (B, W, C), 0 where no station is observed; mask (B, W, C) bool, True where at least one is.
    """
    total = torch.where(mask, values, torch.zeros_like(values)).sum(2)
    count = mask.sum(2)
    return total / count.clamp_min(1).to(values.dtype), count > 0
