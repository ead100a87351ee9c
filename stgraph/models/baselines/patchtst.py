"""PatchTST: channel-independent patch Transformer (Nie et al., "A Time Series is Worth 64 Words:
Long-term Forecasting with Transformers", ICLR 2023, arXiv:2211.14730), read out at targets by IDW.

Every (station, channel) series is forecast on its own with weights shared by all of them
(channel independence; the station axis is folded into the batch too):

1. RevIN-style instance normalisation (``revin``): the series is standardised by the mean and
   std of its *observed* steps, and the forecast is mapped back with them at the end, so scaling
   and shifting a series scales and shifts its forecast the same way.
2. Patching: the end is padded with ``stride`` copies of the last step (the paper's
   ReplicationPad), then patches of ``patch_len`` steps are cut every ``stride`` steps:
   ``(W - patch_len) // stride + 2`` patches (42 for W = 336, 16, 8 as in PatchTST/42).
3. Each patch is embedded by one Linear to ``d_model`` plus a learnable positional embedding.
   Our choice for missing data: each step of a patch carries its normalised value (0 where
   unobserved) *and* its mask bit, so a 0 that means "missing" differs from a 0 that means "at
   the mean"; with ``cyclic_encoding`` the step's 6 time encodings ride along as well. A patch is
   thus ``patch_len * (2 + 6)`` numbers.
4. A post-norm ``nn.TransformerEncoder`` (LayerNorm rather than the paper's BatchNorm, so that a
   series' forecast never depends on which other stations share its batch), then the flatten
   head: a Linear from all patch tokens (and, with ``cyclic_encoding``, the H output steps' time
   encodings) to the H outputs.

Only the target channels are run: under channel independence the other input channels cannot
influence them, so running and discarding them would change nothing but the cost. A target
station then takes the inverse-distance weighted mean of the visible stations' forecasts
(forecast-then-interpolate, :func:`~stgraph.models.readout.idw_readout`, no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.readout import readout_prediction


@dataclass
class PatchTSTParams:
    patch_len: int = 16
    stride: int = 8
    d_model: int = 64
    heads: int = 4
    num_layers: int = 2
    ff_channels: int = 128
    dropout: float = 0.1  # attention, feed-forward and embedding dropout
    head_dropout: float = 0.0
    revin: bool = True  # instance normalisation by each series' observed mean/std
    cyclic_encoding: bool = True  # time encodings inside each patch and for the output steps
    readout_k: int | None = None  # IDW readout over the k nearest visible stations; None: all
    readout_power: float = 1.0


def num_patches(window: int, patch_len: int, stride: int) -> int:
    """Patches of a window end-padded by ``stride`` copies of its last step."""
    return (window - patch_len) // stride + 2


def make_patches(z: torch.Tensor, patch_len: int, stride: int) -> torch.Tensor:
    """(S, W, F) series -> (S, P, patch_len, F) patches, after padding the end with ``stride``
    copies of the last step; P = :func:`num_patches`."""
    z = torch.cat([z, z[:, -1:].expand(-1, stride, -1)], dim=1)
    return z.unfold(1, patch_len, stride).transpose(2, 3)  # unfold puts the patch steps last


class PatchTST(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`PatchTSTParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). Forecasting only.
    """

    learns_interpolation = False
    tasks = frozenset({"forecast"})
    eps = 1e-5  # RevIN variance floor

    def __init__(self, sizes: DataSizes, params: PatchTSTParams | None = None):
        super().__init__(sizes)
        self.params = p = params or PatchTSTParams()
        if p.patch_len < 1 or p.stride < 1:
            raise ValueError(f"patchtst: patch_len and stride must be >= 1, got {p.patch_len}, {p.stride}")
        if p.patch_len > sizes.window:
            raise ValueError(f"patchtst: patch_len={p.patch_len} exceeds the window ({sizes.window} steps)")
        if p.d_model % p.heads:
            raise ValueError(f"patchtst: d_model={p.d_model} must be divisible by heads={p.heads}")
        self.n_time = len(CYCLIC_FEATURES) if p.cyclic_encoding else 0
        self.n_patches = num_patches(sizes.window, p.patch_len, p.stride)
        self.embed = nn.Linear(p.patch_len * (2 + self.n_time), p.d_model)
        self.pos = nn.Parameter(torch.empty(self.n_patches, p.d_model))
        self.drop = nn.Dropout(p.dropout)
        layer = nn.TransformerEncoderLayer(
            p.d_model, p.heads, p.ff_channels, p.dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, p.num_layers, enable_nested_tensor=False)
        self.head_drop = nn.Dropout(p.head_dropout)
        self.head = nn.Linear(self.n_patches * p.d_model + sizes.horizon * self.n_time, sizes.horizon)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every sub-module afresh (children before parents, so attention's own initialisation of
        its projections comes last, as at construction), and the positional embedding as in the
        paper's code (uniform ±0.02). Also gives the cloned encoder layers independent weights."""
        for module in reversed(list(self.modules())):
            if module is self:
                continue
            if isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
        nn.init.uniform_(self.pos, -0.02, 0.02)

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels] -> one series per (sample, station, target channel)
        tc = list(self.sizes.target_channels)
        m = batch.x_mask[..., tc]
        b, w, n, c = m.shape
        horizon = self.sizes.horizon
        xs = torch.where(m, batch.x[..., tc], 0.0).permute(0, 2, 3, 1).reshape(b * n * c, w)
        ms = m.to(xs.dtype).permute(0, 2, 3, 1).reshape(b * n * c, w)
        if self.params.revin:
            count = ms.sum(1, keepdim=True).clamp_min(1.0)
            mean = xs.sum(1, keepdim=True) / count
            std = ((ms * (xs - mean) ** 2).sum(1, keepdim=True) / count + self.eps).sqrt()
            xs = (xs - mean) / std * ms
        feats = [xs.unsqueeze(-1), ms.unsqueeze(-1)]
        if self.n_time:
            feats.append(batch.x_time.unsqueeze(1).expand(-1, n * c, -1, -1).reshape(b * n * c, w, -1))
        patches = make_patches(torch.cat(feats, dim=-1), self.params.patch_len, self.params.stride)
        tokens = self.drop(self.embed(patches.flatten(2)) + self.pos)  # (S, P, d_model)
        flat = self.encoder(tokens).flatten(1)  # (S, P * d_model)
        if self.n_time:
            y_time = batch.y_time.unsqueeze(1).expand(-1, n * c, -1, -1).reshape(b * n * c, -1)
            flat = torch.cat([flat, y_time], dim=1)
        y = self.head(self.head_drop(flat))  # (S, H)
        if self.params.revin:
            y = y * std + mean
        y = y.view(b * n, c, horizon).transpose(1, 2)  # (B*N, H, C_out)
        return readout_prediction(y, batch, self.params.readout_power, self.params.readout_k)
