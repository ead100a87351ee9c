"""AQ-Net: LSTM + multi-head attention station encoders, cyclic time encoding, and a neural
kNN that predicts at stations with no history (Kheder et al., SCIA 2025, arXiv:2502.11941).

``AQNet`` is the paper's model done properly: the interpolation to unseen stations is a
learnable kNN layer trained end to end (the engine hides random training stations each batch).
For kriging and imputation (outputs at the input steps) neighbours send their observed values,
and their reconstruction only where a value is missing; for forecasting they send their forecasts.
``AQNetRef`` reproduces the public code's behaviour: the same encoder (mean pooling), then fixed
inverse-distance weighting (power 1, geodesic km) of the k nearest visible stations'
predictions, with no gradient through the interpolation (it is applied after the fact there).

How ``AQNet`` computes, per task (``a`` = :func:`~stgraph.models.anchors.anchor_prediction`;
every term marked "zero-init" starts at 0, so an untrained model with ``anchor`` on outputs
exactly ``a``, also after ``reset_parameters()``):

- visible stations, own estimate: ``s = a.src + head(features)`` (zero-init head). Forecast:
  ``features`` = the pooled encoding (``pooling``: default the last step's features joined with
  attention pooling by a learned query); krige/impute: each step's encoding.
- visible stations, from their neighbours (``src_knn``): the neural kNN runs station to
  station, each station's k nearest *other* stations (edges rebuilt every forward in the
  learned space), giving ``n``; the output is ``s + g * (n - s)`` with a per-cell gate
  ``g = scale * sigmoid(mlp(observed, gap, no-history))`` (``scale`` zero-init, per channel).
  This is AQ-Net's only spatial path in ``impute`` (every station visible, no targets), and it
  lets a visible station with no observation in a sample (per-sample node masking) be filled
  from its neighbours in every task.
- targets: ``t = a.tgt + scale_t * (kNN(values) - a.tgt)`` with ``scale_t`` zero-init per
  output value (step x channel): the neural kNN's own IDW start is replaced by the anchor (masked
  IDW power 2 over all visible stations) and the learned kNN enters as a residual that training
  opens. With ``anchor: none`` there is no scale: ``t = kNN(values)``, the layer starting as IDW
  of power ``idw_power`` over the k nearest (the paper's model), and ``g = sigmoid(mlp(...))``.

With the anchor on, ``keep_observed`` (default) outputs the visible stations' observed input cells
unchanged in the aligned tasks (:func:`~stgraph.models.anchors.keep_observed`).
The paper's configuration is ``anchor: none, pooling: mean, src_knn: false`` (it defines
forecasting only). Deviations from the paper named here: the anchor residual, the last-step and
attention pooling, the station-to-station kNN with its gate, the residual and LayerNorm around
the attention, the learned-space kNN details described in :mod:`stgraph.nn.neural_knn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.anchors import anchor_prediction, keep_observed, resolve_anchor
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import idw_readout
from stgraph.models.search import FloatRange, IntRange
from stgraph.nn.encoder import LSTMAttentionEncoder
from stgraph.nn.neural_knn import NeuralKNNInterpolation
from stgraph.ops.lerp import lerp_in_time


@dataclass
class AQNetParams:
    hidden_channels: int = 64
    num_layers: int = 2  # the public code: 3 layers x 128 hidden
    heads: int = 4
    dropout: float = 0.1
    cyclic_encoding: bool = True
    k: int = 20
    k_eval: list[int] = field(default_factory=list)  # several k at inference: estimates averaged
    key_channels: int = 16
    scale_km: float = 50.0
    idw_power: float = 1.0  # initial power of the neural kNN's inverse-distance prior (learned)
    pooling: str = "last+attention"  # mean | last | attention | last+attention (forecast head input)
    anchor: str = "auto"  # zero-init residual over anchors.anchor_prediction; "none": from scratch
    src_knn: bool = True  # visible stations also estimated from their neighbours (self excluded)
    keep_observed: bool = True  # anchored, aligned tasks: observed input cells pass through (anchors.keep_observed)


@dataclass
class AQNetRefParams(AQNetParams):
    """The public code's defaults: mean pooling, no anchor (``src_knn`` does not apply)."""

    pooling: str = "mean"
    anchor: str = "none"
    src_knn: bool = False


def _flat(y: torch.Tensor) -> torch.Tensor:
    """(B, H, N, C) -> (B, N, H*C)."""
    b, h, n, c = y.shape
    return y.permute(0, 2, 1, 3).reshape(b, n, h * c)


def _unflat(y: torch.Tensor, h: int) -> torch.Tensor:
    """(B, N, H*C) -> (B, H, N, C)."""
    b, n, _ = y.shape
    return y.reshape(b, n, h, -1).permute(0, 2, 1, 3)


class _AQNetBase(StationModel):
    def __init__(self, sizes: DataSizes, params: AQNetParams):
        super().__init__(sizes)
        self.params = params
        self.anchor_kind = resolve_anchor(params.anchor, sizes)
        self.anchored = self.anchor_kind != "none"
        self.encoder = LSTMAttentionEncoder(
            sizes.in_channels,
            len(CYCLIC_FEATURES) if params.cyclic_encoding else 0,
            params.hidden_channels,
            params.num_layers,
            params.heads,
            params.dropout,
            params.pooling,
        )
        self.aligned = sizes.aligned  # krige/impute: outputs at the input steps
        if self.aligned:  # per-step head on the sequence features
            self.head = nn.Linear(params.hidden_channels, sizes.out_channels)
        else:  # one head on the pooled features for the whole horizon
            self.head = nn.Linear(self.encoder.out_channels, sizes.horizon * sizes.out_channels)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.anchored:  # the head predicts a residual over the anchor: untrained = anchor
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def attention_weights(self) -> torch.Tensor | None:
        """(B, N_src, heads, W, W) attention of the last forward (query step × key step)."""
        return self.encoder.last_attention

    def _visible(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, Prediction]:
        """Pooled features (B, N_src, F), the visible stations' own estimates (B, H, N_src, C_out)
        and the anchor (zeros with ``anchor: none``)."""
        # x: [batch, steps, nodes, channels]
        seq, z = self.encoder(batch.x, batch.x_mask, batch.x_time if self.params.cyclic_encoding else None)
        anchor = anchor_prediction(batch, self.sizes, self.anchor_kind)
        if self.aligned:  # per-step head: (B, N, W, C_out) -> (B, W, N, C_out)
            y = self.head(seq).permute(0, 2, 1, 3)
        else:
            y = _unflat(self.head(z), self.sizes.horizon)
        return z, anchor.src + y, anchor


class AQNet(_AQNetBase):
    """Args:
        sizes: data-derived sizes. params: :class:`AQNetParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out).
    """

    GATE_FEATURES = 3  # observed (or: has a past observation), log gap / age, no observation at all

    search_space = {
        "hidden_channels": IntRange(16, 128, log=True),
        "num_layers": IntRange(1, 3),
        "dropout": FloatRange(0.0, 0.3),
        "k": IntRange(5, 30),
    }

    def __init__(self, sizes: DataSizes, params: AQNetParams | None = None):
        params = params or AQNetParams()
        super().__init__(sizes, params)
        value_channels = sizes.horizon * sizes.out_channels
        self.interp = NeuralKNNInterpolation(
            self.encoder.out_channels,
            value_channels,
            sizes.num_static,
            params.key_channels,
            params.hidden_channels,
            params.k,
            params.scale_km,
            params.idw_power,
        )
        self.src_gate = (
            nn.Sequential(nn.Linear(self.GATE_FEATURES, 16), nn.GELU(), nn.Linear(16, 1)) if params.src_knn else None
        )
        # zero-init scales of the learned terms over the anchor (anchor on only)
        self.src_scale = nn.Parameter(torch.zeros(sizes.out_channels)) if self.anchored and params.src_knn else None
        self.tgt_scale = nn.Parameter(torch.zeros(value_channels)) if self.anchored else None
        self.reset_parameters()
        self.last_k_estimates: dict[int, torch.Tensor] = {}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for scale in (self.src_scale, self.tgt_scale):
            if scale is not None:
                nn.init.zeros_(scale)

    def _ks(self) -> list[int]:
        return self.params.k_eval if (self.params.k_eval and not self.training) else [self.params.k]

    def _gate_features(self, batch: GraphBatch) -> torch.Tensor:
        """(B, H, N_src, C_out, 3): per output cell, [observed, log1p(gap) / log1p(2W), no
        observation in the window]. Aligned tasks: the cell's own step (gap from
        :func:`~stgraph.models.anchors.lerp_in_time`); forecast: [has a past observation,
        steps from the last observation to the output step, none]."""
        tc = list(self.sizes.target_channels)
        m = batch.x_mask[..., tc]
        w = m.size(1)
        if self.aligned:
            _, gap = lerp_in_time(torch.zeros_like(m, dtype=batch.x.dtype), m)
            observed = m.to(batch.x.dtype)
        else:
            steps = torch.arange(w, device=m.device).view(1, -1, 1, 1)
            last = torch.where(m, steps, torch.full_like(steps, -1)).amax(dim=1, keepdim=True)  # (B, 1, N, C)
            ahead = torch.arange(1, self.sizes.horizon + 1, device=m.device).view(1, -1, 1, 1)
            age = ((w - 1 - last) + ahead).to(batch.x.dtype)  # (B, H, N, C)
            gap = torch.where(last >= 0, age, torch.full_like(age, float("inf")))
            observed = (last >= 0).to(batch.x.dtype).expand_as(gap)
        empty = torch.isinf(gap)
        cap = 2.0 * w
        scaled = torch.log1p(gap.clamp(max=cap)) / torch.log1p(torch.tensor(cap))
        return torch.stack([observed, torch.where(empty, torch.ones_like(scaled), scaled), empty.to(scaled)], -1)

    def _sent(self, y: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """What visible stations send their neighbours, (B, H, N_src, C) -> (B, N_src, H*C): their
        estimates; in the aligned tasks their observed values, the estimate only where missing."""
        if self.aligned:
            tc = list(self.sizes.target_channels)
            y = torch.where(batch.x_mask[..., tc], batch.x[..., tc], y)
        return _flat(y)

    def _from_neighbours(self, z, values, batch: GraphBatch, exclude_self: bool) -> dict[int, torch.Tensor]:
        """Neural kNN estimates for each k (``k_eval`` at inference, else ``k``) at the targets,
        or at the visible stations from the others. values: (B, N_src, V) -> {k: (B, N_q, V)}."""
        pos_q, static_q = (batch.pos_src, batch.static_src) if exclude_self else (batch.pos_tgt, batch.static_tgt)
        return {
            k: self.interp(z, values, batch.pos_src, pos_q, batch.static_src, static_q, k=k, exclude_self=exclude_self)
            for k in self._ks()
        }

    def forward(self, batch: GraphBatch) -> Prediction:
        z, y_src, anchor = self._visible(batch)
        b, h, n_src, c = y_src.shape
        if self.src_gate is not None and n_src > 1:
            near = torch.stack(list(self._from_neighbours(z, self._sent(y_src, batch), batch, True).values())).mean(0)
            g = torch.sigmoid(self.src_gate(self._gate_features(batch)).squeeze(-1))  # (B, H, N_src, C)
            if self.src_scale is not None:
                g = self.src_scale * g
            y_src = y_src + g * (_unflat(near, h) - y_src)
        if self.anchored and self.params.keep_observed:
            y_src = keep_observed(Prediction(y_src, y_src[:, :, :0]), batch, self.sizes).src
        if batch.pos_tgt.size(0) == 0:
            return Prediction(y_src, y_src.new_zeros(b, h, 0, c))
        estimates = self._from_neighbours(z, self._sent(y_src, batch), batch, False)
        if self.tgt_scale is not None:  # the anchor replaces the kNN's IDW start; the kNN is a residual
            a = _flat(anchor.tgt)
            estimates = {k: a + self.tgt_scale * (e - a) for k, e in estimates.items()}
        self.last_k_estimates = {k: e.detach() for k, e in estimates.items()}
        tgt = torch.stack(list(estimates.values())).mean(0)  # (B, N_tgt, H*C)
        return Prediction(y_src, _unflat(tgt, h))


class AQNetRef(_AQNetBase):
    """The public code's interpolation: IDW (power 1, geodesic km) over the k nearest visible
    stations, applied to their predictions without gradient. Defaults (:class:`AQNetRefParams`)
    are the public code's: mean pooling, no anchor; ``anchor`` may be set (the visible stations'
    estimates then start from it), ``src_knn`` is ignored."""

    learns_interpolation = False

    def __init__(self, sizes: DataSizes, params: AQNetParams | None = None):
        super().__init__(sizes, params or AQNetRefParams())
        self.reset_parameters()

    def forward(self, batch: GraphBatch) -> Prediction:
        _, y_src, _ = self._visible(batch)
        return Prediction(y_src, idw_readout(y_src, batch.pos_src, batch.pos_tgt, power=1.0, k=self.params.k))
