"""AQ-Net: LSTM + multi-head attention station encoders, cyclic time encoding, and a neural
kNN that predicts at stations with no history (Kheder et al., SCIA 2025, arXiv:2502.11941).

``AQNet`` is the paper's model done properly: the interpolation to unseen stations is a
learnable kNN layer trained end to end (the engine hides random training stations each batch).
For kriging (outputs at the input steps) neighbours send their observed values, and their
reconstruction only where a value is missing; for forecasting they send their forecasts.
``AQNetRef`` reproduces the public code's behaviour: the same encoder, then fixed
inverse-distance weighting (power 1, geodesic km) of the k nearest visible stations'
predictions, with no gradient through the interpolation (it is applied after the fact there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import idw_readout
from stgraph.nn.encoder import LSTMAttentionEncoder
from stgraph.nn.neural_knn import NeuralKNNInterpolation


@dataclass
class AQNetParams:
    hidden_channels: int = 64
    num_layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    cyclic_encoding: bool = True
    k: int = 20
    k_eval: list[int] = field(default_factory=list)  # several k at inference: estimates averaged
    key_channels: int = 16
    scale_km: float = 50.0
    idw_power: float = 1.0  # initial power of the neural kNN's inverse-distance prior (learned)


class _AQNetBase(StationModel):
    def __init__(self, sizes: DataSizes, params: AQNetParams):
        super().__init__(sizes)
        self.params = params
        self.encoder = LSTMAttentionEncoder(
            sizes.in_channels,
            len(CYCLIC_FEATURES) if params.cyclic_encoding else 0,
            params.hidden_channels,
            params.num_layers,
            params.heads,
            params.dropout,
        )
        self.aligned = sizes.aligned  # krige/impute: outputs at the input steps
        out = sizes.out_channels if self.aligned else sizes.horizon * sizes.out_channels
        self.head = nn.Linear(params.hidden_channels, out)

    def attention_weights(self) -> torch.Tensor | None:
        """(B, N_src, heads, W, W) attention of the last forward (query step × key step)."""
        return self.encoder.last_attention

    def _visible(self, batch: GraphBatch):
        # x: [batch, steps, nodes, channels]
        seq, z = self.encoder(batch.x, batch.x_mask, batch.x_time if self.params.cyclic_encoding else None)
        b, n = z.shape[:2]
        if self.aligned:  # per-step head: (B, N, W, C_out) -> (B, W, N, C_out)
            y = self.head(seq).permute(0, 2, 1, 3)
        else:
            y = self.head(z).reshape(b, n, self.sizes.horizon, self.sizes.out_channels).permute(0, 2, 1, 3)
        return z, y


class AQNet(_AQNetBase):
    """Args:
        sizes: data-derived sizes. params: :class:`AQNetParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out).
    """

    def __init__(self, sizes: DataSizes, params: AQNetParams | None = None):
        params = params or AQNetParams()
        super().__init__(sizes, params)
        self.interp = NeuralKNNInterpolation(
            params.hidden_channels,
            sizes.horizon * sizes.out_channels,
            sizes.num_static,
            params.key_channels,
            params.hidden_channels,
            params.k,
            params.scale_km,
            params.idw_power,
        )
        self.reset_parameters()
        self.last_k_estimates: dict[int, torch.Tensor] = {}

    def forward(self, batch: GraphBatch) -> Prediction:
        z, y_src = self._visible(batch)
        b, h, n_src, c = y_src.shape
        if batch.pos_tgt.size(0) == 0:
            return Prediction(y_src, y_src.new_zeros(b, h, 0, c))
        values = y_src
        if self.aligned:  # krige: neighbours send what was observed, their reconstruction only where missing
            tc = list(self.sizes.target_channels)
            values = torch.where(batch.x_mask[..., tc], batch.x[..., tc], y_src)
        flat = values.permute(0, 2, 1, 3).reshape(b, n_src, h * c)
        ks = self.params.k_eval if (self.params.k_eval and not self.training) else [self.params.k]
        estimates = {
            k: self.interp(z, flat, batch.pos_src, batch.pos_tgt, batch.static_src, batch.static_tgt, k=k) for k in ks
        }
        self.last_k_estimates = {k: e.detach() for k, e in estimates.items()}
        tgt = torch.stack(list(estimates.values())).mean(0)  # (B, N_tgt, H*C)
        return Prediction(y_src, tgt.reshape(b, -1, h, c).permute(0, 2, 1, 3))


class AQNetRef(_AQNetBase):
    """The public code's interpolation: IDW (power 1, geodesic km) over the k nearest visible
    stations, applied to their predictions without gradient."""

    learns_interpolation = False

    def __init__(self, sizes: DataSizes, params: AQNetParams | None = None):
        super().__init__(sizes, params or AQNetParams())
        self.reset_parameters()

    def forward(self, batch: GraphBatch) -> Prediction:
        _, y_src = self._visible(batch)
        return Prediction(y_src, idw_readout(y_src, batch.pos_src, batch.pos_tgt, power=1.0, k=self.params.k))
