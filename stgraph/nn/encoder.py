"""AQ-Net's per-station temporal encoder: LSTM -> multi-head self-attention over time steps ->
temporal pooling (mean, last step, attention with a learned query, or last step + attention)."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("mean", "last", "attention", "last+attention")


class TemporalPooling(nn.Module):
    """Pool a sequence of step features into one vector per station.

    ``mean``: mean over steps (the public AQ-Net code). ``last``: the last step's features (the
    latest level, which a forecast starts from). ``attention``: multi-head attention from one
    learned query vector over the steps. ``last+attention``: both, concatenated.

    Args:
        hidden_channels: F, step feature width. heads: attention heads. mode: one of ``POOLINGS``.

    Shapes:
        seq (B*N, W, F) -> (B*N, out_channels); ``out_channels`` is 2F for ``last+attention``, else F.
    """

    def __init__(self, hidden_channels: int, heads: int = 4, mode: str = "mean"):
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode = mode
        self.use_last = "last" in mode
        self.query: nn.Parameter | None = None
        self.attn: nn.MultiheadAttention | None = None
        if "attention" in mode:
            self.query = nn.Parameter(torch.empty(1, 1, hidden_channels))
            self.attn = nn.MultiheadAttention(hidden_channels, heads, batch_first=True)
        self.out_channels = hidden_channels * (2 if mode == "last+attention" else 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.attn is not None:
            nn.init.normal_(self.query, std=self.query.size(-1) ** -0.5)
            self.attn._reset_parameters()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return seq.mean(dim=1)
        parts = [seq[:, -1]] if self.use_last else []
        if self.attn is not None:
            q = self.query.expand(seq.size(0), 1, -1)
            parts.append(self.attn(q, seq, seq, need_weights=False)[0].squeeze(1))
        return torch.cat(parts, dim=-1)


class LSTMAttentionEncoder(nn.Module):
    """Encode each station's window independently (weights shared across stations).

    step input = [values, observed mask, cyclic time encoding] -> Linear -> LSTM ->
    multi-head self-attention over time (residual + LayerNorm) -> :class:`TemporalPooling`.

    Args:
        in_channels: C_in values per step; the mask doubles it.
        time_channels: cyclic features per step (6, or 0 without cyclic encoding).
        hidden_channels: LSTM and attention width.
        num_layers: LSTM layers. heads: attention heads. dropout: between layers.
        pooling: see :class:`TemporalPooling` (``mean`` is the public code's and the old default).

    Shapes:
        x, x_mask: (B, W, N, C_in); x_time: (B, W, 6) or None
        returns sequence features (B, N, W, hidden) and pooled features (B, N, out_channels).
    """

    def __init__(
        self,
        in_channels: int,
        time_channels: int,
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "mean",
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
        self.pool = TemporalPooling(hidden_channels, heads, pooling)
        self.out_channels = self.pool.out_channels
        self.last_attention: torch.Tensor | None = None  # (B, N, heads, W, W) of the last forward

    def reset_parameters(self) -> None:
        for m in (self.inp, self.lstm, self.norm, self.pool):
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
        return h.reshape(b, n, w, -1), self.pool(h).reshape(b, n, -1)
