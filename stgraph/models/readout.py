"""Forecast-then-interpolate: how station-wise models reach stations with no history.

Temporal baselines (persistence, seasonal naive, linear, LSTM, PatchTST) and ``aqnet-ref``
predict each visible station from its own past; a target station then takes the inverse-distance
weighted mean of its ``k`` nearest visible stations' predictions (``k=1``: the nearest one). The
readout is fixed and sits outside the gradient, as in the public AQ-Net code.
:func:`station_series` folds the station axis into the batch for those station-wise models, and
:func:`readout_prediction` unfolds their forecasts and reads them out at the targets.
"""

from __future__ import annotations

import torch

from stgraph.models.base import GraphBatch, Prediction
from stgraph.ops.idw import idw_weights


def idw_readout(
    y_src: torch.Tensor, pos_src: torch.Tensor, pos_tgt: torch.Tensor, power: float = 1.0, k: int | None = None
) -> torch.Tensor:
    """(B, H, N_src, C) visible predictions -> (B, H, N_tgt, C) at the targets, without gradient.

    Weights are 1/d^power on geodesic km over the ``k`` nearest visible stations (None: all),
    normalised per target.
    """
    if pos_tgt.size(0) == 0:
        return y_src.new_zeros(*y_src.shape[:2], 0, y_src.shape[3])
    w = idw_weights(pos_src, pos_tgt, power, k).to(y_src)
    w = w / w.sum(1, keepdim=True)
    return torch.einsum("ts,bhsc->bhtc", w, y_src.detach())


def station_series(batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold the station axis into the batch: one sequence per (sample, visible station).

    Returns:
        seq: (B * N_src, W, 2 * C_in) ``[values * mask, mask]`` (unobserved values are 0 whatever x holds).
        x_time: (B * N_src, W, 6) the window's cyclic encodings, repeated for each station.
        y_time: (B * N_src, H, 6) the output steps' encodings.
        Row ``b * N_src + i`` is station ``i`` of sample ``b``.
    """
    b, w, n, c = batch.x.shape
    m = batch.x_mask.to(batch.x.dtype)
    seq = torch.cat([torch.where(batch.x_mask, batch.x, 0.0), m], dim=-1)  # (B, W, N, 2C)
    seq = seq.permute(0, 2, 1, 3).reshape(b * n, w, 2 * c)
    x_time = batch.x_time.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, w, -1)
    y_time = batch.y_time.unsqueeze(1).expand(-1, n, -1, -1).reshape(b * n, batch.y_time.size(1), -1)
    return seq, x_time, y_time


def readout_prediction(y: torch.Tensor, batch: GraphBatch, power: float, k: int | None) -> Prediction:
    """(B * N_src, H, C_out) station forecasts -> Prediction: ``src`` (B, H, N_src, C_out) and
    ``tgt`` (B, H, N_tgt, C_out), the IDW readout (power, k nearest; None: all) without gradient."""
    n = batch.pos_src.size(0)
    src = y.reshape(-1, n, *y.shape[1:]).permute(0, 2, 1, 3)
    return Prediction(src, idw_readout(src, batch.pos_src, batch.pos_tgt, power=power, k=k))
