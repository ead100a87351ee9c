"""T-PatternNet: TimesNet blocks over each node's series (DiffRecon, Sun et al. §IV-D; Wu et al., ICLR 2023).

Each block (TimesNet's ``TimesBlock``):

1. FFT over time; amplitudes averaged over the batch and channels pick the top-k frequencies
   f_1..f_k in {1, .., floor(T/2)} (eqs. 27-28; the DC term is excluded), shared by the batch as
   in TimesNet; periods p_i = ceil(T / f_i) (the DiffRecon paper's eq. 29; TimesNet's code uses T // f).
2. For each period: zero-pad the series to a multiple of p_i, fold it to a 2-D map
   (ceil(T/p_i) rows of p_i phases, eq. 30), apply an inception block (TimesNet's
   ``Inception_Block_V1``: parallel 2-D convolutions with kernel sizes 1, 3, 5, ..., averaged;
   twice, d -> d_ff -> d with a GELU between), unfold and truncate to T (eqs. 31-32).
3. Fuse the k branches weighted by the softmax of each series' own amplitudes at f_1..f_k
   (eqs. 33-34), add the input (residual).

:class:`TPatternNet` stacks blocks with a LayerNorm after each (as TimesNet's model does).

Deviation from the paper, named: the paper embeds the whole completed coarse map (I·J channels)
into one d_model series per sample (eq. 26) and stacks the result over locations. Here every node's
series is encoded separately with shared weights, the nodes folded into the batch
(B, T, N, D) -> (B·N, T, D), so that each coarse node has its own temporal features to carry to the
fine nodes over the bipartite graph, for any number of nodes. The input embedding (eq. 26) is the
caller's: the module maps D channels to D channels.

Because the periods are chosen from the batch-mean spectrum (TimesNet's choice), one sample's
output depends on which other series share its batch; :meth:`TPatternNet.forward` can return the
periods it used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fft_periods(x: torch.Tensor, k: int) -> tuple[list[int], list[int], torch.Tensor]:
    """Top-k periods of a batch of series.

    Args:
        x: (B', T, D) series. k: number of frequencies (capped at floor(T/2)).
    Returns:
        periods: k ints, p_i = ceil(T / f_i), strongest first; freqs: the k frequencies f_i;
        amplitude: (B', k) each series' channel-mean amplitude at f_i (the fusion weights' logits).
        A series with T < 2 has no frequency: periods [T], freqs [0], amplitude zeros (B', 1).
    """
    t = x.size(1)
    if t < 2:
        return [max(t, 1)], [0], x.new_zeros(x.size(0), 1)
    amp = torch.fft.rfft(x, dim=1).abs().mean(-1)  # (B', T//2 + 1)
    spectrum = amp.mean(0).detach()
    spectrum[0] = float("-inf")  # no DC
    k = max(1, min(int(k), t // 2))
    top = torch.topk(spectrum, k).indices  # frequencies 1..T//2
    freqs = [int(f) for f in top.tolist()]
    return [math.ceil(t / f) for f in freqs], freqs, amp[:, top]


class InceptionBlock(nn.Module):
    """Average of parallel 2-D convolutions with kernel sizes 1, 3, .., 2·num_kernels - 1 ('same' padding).

    TimesNet's ``Inception_Block_V1``; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, num_kernels: int = 3):
        super().__init__()
        self.kernels = nn.ModuleList(nn.Conv2d(c_in, c_out, 2 * i + 1, padding=i) for i in range(num_kernels))
        for conv in self.kernels:  # TimesNet's initialisation
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([conv(x) for conv in self.kernels], -1).mean(-1)


class TimesBlock(nn.Module):
    """One TimesNet block. (B', T, D) -> (B', T, D); ``forward(..., return_periods=True)`` also
    returns the periods used."""

    def __init__(self, channels: int, hidden: int, top_k: int = 2, num_kernels: int = 3):
        super().__init__()
        self.top_k = top_k
        self.conv = nn.Sequential(
            InceptionBlock(channels, hidden, num_kernels), nn.GELU(), InceptionBlock(hidden, channels, num_kernels)
        )

    def forward(self, x: torch.Tensor, return_periods: bool = False):
        b, t, d = x.shape
        periods, _, amplitude = fft_periods(x, self.top_k)
        branches = []
        for p in periods:  # k branches, a handful
            rows = math.ceil(t / p)
            folded = F.pad(x, (0, 0, 0, rows * p - t)).reshape(b, rows, p, d).permute(0, 3, 1, 2)  # (B', D, rows, p)
            out = self.conv(folded).permute(0, 2, 3, 1).reshape(b, rows * p, d)[:, :t]
            branches.append(out)
        weights = torch.softmax(amplitude, dim=-1)  # (B', k)
        y = (torch.stack(branches, -1) * weights[:, None, None, :]).sum(-1) + x
        return (y, periods) if return_periods else y


class TPatternNet(nn.Module):
    """Args:
        channels: D, input and output width (embed the coarse values into D beforehand).
        hidden: d_ff, the inception blocks' inner width (default 2·D).
        num_blocks: stacked TimesBlocks. top_k: periods per block. num_kernels: inception kernels.

    Shapes:
        x: (B, T, N, D) -> (B, T, N, D); with ``return_periods`` also one list of periods per block.
    """

    def __init__(
        self, channels: int, hidden: int | None = None, num_blocks: int = 2, top_k: int = 2, num_kernels: int = 3
    ):
        super().__init__()
        hidden = hidden or 2 * channels
        self.channels = channels
        self.blocks = nn.ModuleList(TimesBlock(channels, hidden, top_k, num_kernels) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, return_periods: bool = False):
        if x.dim() != 4 or x.size(-1) != self.channels:
            raise ValueError(f"TPatternNet: x must be (B, T, N, D={self.channels}), got shape {tuple(x.shape)}")
        b, t, n, d = x.shape
        h = x.permute(0, 2, 1, 3).reshape(b * n, t, d)  # nodes folded into the batch
        used = []
        for block in self.blocks:
            h, periods = block(h, return_periods=True)
            h = self.norm(h)
            used.append(periods)
        out = h.view(b, n, t, d).permute(0, 2, 1, 3)
        return (out, used) if return_periods else out
