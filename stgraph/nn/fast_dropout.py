"""Dropout with a quarter of the random draws, and the post-norm transformer layer built on it.

On the CPU, dropout's cost is its random numbers: ``F.dropout`` draws one per element (~13 ns
each on this machine, in an ad hoc timing not recorded in ``benchmarks/``), a large share of a
CSDI-sized denoiser's training step. :func:`fast_dropout` draws one 64-bit word per four
elements and compares each 16-bit quarter with a threshold: the keep probability is
``1 - round(p · 65536) / 65536`` (p = 0.1 becomes 0.100006), the surviving values are divided by
it, as ``F.dropout`` does. The draws come from the global generator, so seeding reproduces them.

:class:`PostNormTransformerLayer` is ``nn.TransformerEncoderLayer(d, heads, ff, dropout,
activation="gelu", batch_first=True)`` (post-norm; dropout on the attention weights, after the
attention, inside and after the feed-forward block) written out with :func:`fast_dropout`; in
eval mode it is the same function of the same weights (a test holds the two to each other), and
it takes the queries and keys from a separate input when given one (PriSTI's conditional
attention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p (quantised to 1/65536), scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"fast_dropout: p must be in [0, 1), got {p}")
    n = x.numel()
    drop = round(p * _LEVELS)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    keep = words.view(torch.int16)[:n].view(x.shape) >= drop - _LEVELS // 2  # P(keep) = 1 - drop / 65536
    return x * keep * (_LEVELS / (_LEVELS - drop))


class PostNormTransformerLayer(nn.Module):
    """One post-norm transformer encoder layer over sequences.

    Args:
        channels: C. heads: attention heads (C divisible by them). ff: feed-forward width.
        dropout: p of every dropout. query_channels: width of a separate query/key input
            (None: queries and keys come from the sequence itself).

    Shapes: x (L, S, C) [, qk (L, S, query_channels)] -> (L, S, C).
    """

    def __init__(self, channels: int, heads: int, ff: int, dropout: float = 0.1, query_channels: int | None = None):
        super().__init__()
        if channels % heads:
            raise ValueError(f"PostNormTransformerLayer: channels={channels} must be divisible by heads={heads}")
        self.heads, self.p = heads, dropout
        self.qk_in = nn.Linear(query_channels, channels) if query_channels else None
        # nn.MultiheadAttention's parameters and initialisation: one packed in-projection
        # (Xavier-uniform, zero bias) and an output projection with zero bias
        self.in_proj = nn.Linear(channels, 3 * channels)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        self.out_proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.out_proj.bias)
        self.linear1, self.linear2 = nn.Linear(channels, ff), nn.Linear(ff, channels)
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)

    def _attention(self, x: torch.Tensor, qk: torch.Tensor | None) -> torch.Tensor:
        L, S, c = x.shape
        h = self.heads
        w, b = self.in_proj.weight, self.in_proj.bias
        source = x if qk is None else self.qk_in(qk)
        q = F.linear(source, w[:c], b[:c]).view(L, S, h, c // h).transpose(1, 2)  # (L, h, S, c/h)
        k = F.linear(source, w[c : 2 * c], b[c : 2 * c]).view(L, S, h, c // h).transpose(1, 2)
        v = F.linear(x, w[2 * c :], b[2 * c :]).view(L, S, h, c // h).transpose(1, 2)
        if not self.training or self.p == 0.0:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(c // h)), dim=-1)
            out = fast_dropout(weights, self.p) @ v
        return self.out_proj(out.transpose(1, 2).reshape(L, S, c))

    def forward(self, x: torch.Tensor, qk: torch.Tensor | None = None) -> torch.Tensor:
        if (qk is None) != (self.qk_in is None):
            raise ValueError("PostNormTransformerLayer: give qk exactly when built with query_channels")
        x = self.norm1(x + fast_dropout(self._attention(x, qk), self.p, self.training))
        y = self.linear2(fast_dropout(F.gelu(self.linear1(x)), self.p, self.training))
        return self.norm2(x + fast_dropout(y, self.p, self.training))
