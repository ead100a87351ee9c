"""AQ-Net's per-station temporal encoder: LSTM -> multi-head self-attention over time steps."""

from __future__ import annotations

import torch
from torch import nn


class LSTMAttentionEncoder(nn.Module):
    """Encode each station's window independently (weights shared across stations).

    step input = [values, observed mask, cyclic time encoding] -> Linear -> LSTM ->
    multi-head self-attention over time (residual + LayerNorm) -> mean over time.

    Args:
        in_channels: C_in values per step; the mask doubles it.
        time_channels: cyclic features per step (6, or 0 without cyclic encoding).
        hidden_channels: LSTM and attention width.
        num_layers: LSTM layers. heads: attention heads. dropout: between layers.

    Shapes:
        x, x_mask: (B, W, N, C_in); x_time: (B, W, 6) or None
        returns sequence features (B, N, W, hidden) and pooled features (B, N, hidden).
    """

    def __init__(
        self,
        in_channels: int,
        time_channels: int,
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.time_channels = time_channels
        self.inp = nn.Linear(2 * in_channels + time_channels, hidden_channels)
        self.lstm = nn.LSTM(
            hidden_channels,
            hidden_channels,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attn = nn.MultiheadAttention(hidden_channels, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden_channels)
        self.drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None  # (B, N, heads, W, W) of the last forward

    def reset_parameters(self) -> None:
        for m in (self.inp, self.lstm, self.norm):
            m.reset_parameters()
        self.attn._reset_parameters()

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, x_time: torch.Tensor | None):
        # x: [batch, steps, nodes, channels]
        b, w, n, _ = x.shape
        parts = [x * x_mask, x_mask.to(x.dtype)]
        if self.time_channels:
            parts.append(x_time[:, :, None, :].expand(b, w, n, self.time_channels))
        h = torch.cat(parts, dim=-1).permute(0, 2, 1, 3).reshape(b * n, w, -1)  # (B*N, W, F)
        h, _ = self.lstm(torch.relu(self.inp(h)))  # (B*N, W, hidden)
        a, weights = self.attn(h, h, h, need_weights=True, average_attn_weights=False)
        self.last_attention = weights.detach().reshape(b, n, *weights.shape[1:])
        h = self.norm(h + self.drop(a))
        seq = h.reshape(b, n, w, -1)
        return seq, seq.mean(dim=2)
