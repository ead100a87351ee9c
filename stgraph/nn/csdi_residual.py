"""CSDI's noise-predictor body on a station window: gated residual layers, each a transformer over
time and a transformer over stations acting on the noisy state (Tashiro et al. 2021, §4 and
``diff_models.py`` of the official code: ``diff_CSDI`` and ``ResidualBlock``).

One layer, on h (B, W, N, C) with the step embedding e (B, D_e) and the side information
s (B, W, N, S)::

    y = h + Linear_e(e)                                  # the step, per channel
    y = TimeTransformer(y)     over W, every (b, n)     # one encoder layer, CSDI: heads 8, ff 64, GELU
    y = StationTransformer(y)  over N, every (b, w)     # (CSDI: its "feature" transformer over the K series)
    y = Linear_mid(y) + Linear_cond(s)                   # 2C channels each
    y = sigmoid(y[:C]) * tanh(y[C:])                     # gated activation (WaveNet / DiffWave)
    residual, skip = Linear_out(y).chunk(2)
    return (h + residual) / sqrt(2), skip

:class:`CSDIBody` stacks ``layers`` of them after an input map (Linear + ReLU), sums the skips
divided by sqrt(layers), and reads out through Linear → ReLU → Linear, the last zero at
initialisation (ε̂ = 0 at the start, as CSDI). CSDI's defaults: 4 layers, 64 channels, 8 heads,
a 128-wide step embedding. CSDI's 1x1 convolutions are per-cell linear maps here (the same thing).

``conditional=True`` is PriSTI's noise estimation layer (Liu et al. 2023, §IV-C) in this frame:
both attentions take their queries and keys from the conditional feature (the side information,
projected to C channels) and their values from the noisy state, and the station step adds a
message-passing term over the stations' graph (a Chebyshev graph convolution on the given scaled
Laplacian, PriSTI's MPNN on its geographic adjacency)::

    y = LN(v + MHA(q = k = Linear(s), v));  y = LN(y + FF(y))      # each of time and stations
    y = y + ChebConv(y, L̃)                                          # stations only, when L̃ is given

Deviations, named: a window with one step or one station skips the corresponding transformer (as
CSDI does); PriSTI's conditional feature is its own extraction module over the linearly
interpolated series, here it is whatever the caller gives as side information (DiffRecon's
encoding of the conditions and their interpolation, :class:`~stgraph.models.diffrecon.coarse.CSDICoarseDenoiser`);
PriSTI's MPNN is a 2-term Chebyshev convolution here; the transformer layers are
:class:`~stgraph.nn.fast_dropout.PostNormTransformerLayer` (PyTorch's encoder layer, the same
function in eval mode, whose dropout draws a quarter of the random numbers and rounds p to
1/65536); nothing else differs in this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.diffusion import DiffusionStepEmbedding
from stgraph.nn.cheb_conv import ChebConv
from stgraph.nn.fast_dropout import PostNormTransformerLayer


class CSDIResidualLayer(nn.Module):
    """One gated residual layer.

    Args:
        channels: C. side_channels: S, width of the side information. step_channels: D_e, width of
            the step embedding. heads: attention heads of both transformers. ff: their feed-forward width.
        conditional: PriSTI's layer (see the module docstring) instead of CSDI's.

    Shapes: h (B, W, N, C), step (B, D_e), side (B, W, N, S), laplacian (N, N) or None ->
    ((B, W, N, C) next h, (B, W, N, C) skip).
    """

    def __init__(
        self, channels: int, side_channels: int, step_channels: int, heads: int, ff: int = 64, conditional: bool = False
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"CSDIResidualLayer: channels={channels} must be divisible by heads={heads}")
        self.conditional = conditional
        self.step_proj = nn.Linear(step_channels, channels)
        # CSDI's get_torch_trans: nn.TransformerEncoderLayer(channels, heads, 64, gelu), dropout 0.1
        qk = side_channels if conditional else None
        self.time_layer = PostNormTransformerLayer(channels, heads, ff, 0.1, query_channels=qk)
        self.station_layer = PostNormTransformerLayer(channels, heads, ff, 0.1, query_channels=qk)
        self.mpnn = ChebConv(channels, channels, 2) if conditional else None
        self.mid_proj = nn.Linear(channels, 2 * channels)
        self.cond_proj = nn.Linear(side_channels, 2 * channels)
        self.out_proj = nn.Linear(channels, 2 * channels)
        # CSDI initialises its 1x1 convolutions with Kaiming normal
        for lin in (self.mid_proj, self.cond_proj, self.out_proj):
            nn.init.kaiming_normal_(lin.weight)

    def forward(
        self, h: torch.Tensor, step: torch.Tensor, side: torch.Tensor, laplacian: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, w, n, c = h.shape
        y = h + self.step_proj(step)[:, None, None, :]
        if w > 1:  # sequences over time, one per (b, n)
            seq = y.transpose(1, 2).reshape(b * n, w, c)
            if self.conditional:
                seq = self.time_layer(seq, side.transpose(1, 2).reshape(b * n, w, -1))
            else:
                seq = self.time_layer(seq)
            y = seq.view(b, n, w, c).transpose(1, 2)
        if n > 1:  # sequences over stations, one per (b, w)
            if self.conditional:
                y = self.station_layer(y.reshape(b * w, n, c), side.reshape(b * w, n, -1)).view(b, w, n, c)
                if laplacian is not None:
                    y = y + self.mpnn(y, laplacian=laplacian)
            else:
                y = self.station_layer(y.reshape(b * w, n, c)).view(b, w, n, c)
        y = self.mid_proj(y) + self.cond_proj(side)
        gate, filt = y.chunk(2, dim=-1)
        y = self.out_proj(torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = y.chunk(2, dim=-1)
        return (h + residual) / math.sqrt(2.0), skip


class CSDIBody(nn.Module):
    """CSDI's ε predictor body.

    Args:
        in_channels: I, per-cell input width (CSDI: 2, the conditioning value and the noisy value).
        out_channels: O, ε channels. channels: C. side_channels: S. layers: residual layers.
        heads: attention heads. num_steps: T. step_dim: width of the sinusoidal step table (and of
            its projection, CSDI: 128). ff: the transformers' feed-forward width (CSDI: 64).
        conditional: PriSTI's layers (conditional-feature attention and message passing).

    Shapes: x (B, W, N, I), t (B,) int64 steps, side (B, W, N, S), laplacian (N, N) scaled
    Laplacian of the stations' graph or None (conditional layers only) -> ε̂ (B, W, N, O).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        side_channels: int = 64,
        layers: int = 4,
        heads: int = 8,
        num_steps: int = 50,
        step_dim: int = 128,
        ff: int = 64,
        conditional: bool = False,
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"CSDIBody: layers must be >= 1, got {layers}")
        self.input_proj = nn.Linear(in_channels, channels)
        nn.init.kaiming_normal_(self.input_proj.weight)
        self.step_embed = DiffusionStepEmbedding(num_steps, step_dim)
        self.layers = nn.ModuleList(
            CSDIResidualLayer(channels, side_channels, step_dim, heads, ff, conditional) for _ in range(layers)
        )
        self.out1 = nn.Linear(channels, channels)
        nn.init.kaiming_normal_(self.out1.weight)
        self.out2 = nn.Linear(channels, out_channels)
        nn.init.zeros_(self.out2.weight)
        nn.init.zeros_(self.out2.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, side: torch.Tensor, laplacian: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x.dim() != 4 or side.shape[:3] != x.shape[:3]:
            raise ValueError(
                f"CSDIBody: x must be (B, W, N, I) and side (B, W, N, S) on the same cells, got "
                f"{tuple(x.shape)} and {tuple(side.shape)}"
            )
        h = F.relu(self.input_proj(x))
        step = self.step_embed(t)
        skips = 0.0
        for layer in self.layers:
            h, skip = layer(h, step, side, laplacian)
            skips = skips + skip
        h = skips / math.sqrt(len(self.layers))
        return self.out2(F.relu(self.out1(h)))
