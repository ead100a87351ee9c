"""Forecast-then-interpolate: how station-wise models reach stations with no history.

Temporal baselines (persistence, seasonal naive, linear, LSTM, PatchTST) and ``aqnet-ref``
predict each visible station from its own past; a target station then takes the inverse-distance
weighted mean of its ``k`` nearest visible stations' predictions (``k=1``: the nearest one). The
readout is fixed and sits outside the gradient, as in the public AQ-Net code.
"""

from __future__ import annotations

import torch

from stgraph.models.baselines.idw import idw_weights


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
