"""A small 2-D U-Net for maps on a regular I × J lattice: DiffRecon's intra-map encoder on grids (Sun et al. §IV-B).

Two downsampling and two upsampling levels with skip connections; every stage is a residual block
(GroupNorm -> SiLU -> 3×3 conv, twice). Downsampling is a stride-2 3×3 convolution (ceil(I/2) ×
ceil(J/2)), upsampling is nearest-neighbour resizing to the skip's exact size followed by a 3×3
convolution, so any I × J works (8 × 12 coarse and 32 × 48 fine maps, odd sizes too).

The paper uses a U-Net as the denoiser's backbone (encoder eq. 8 / 11, decoder eq. 9 / 13) without
giving its widths; here the whole U-Net maps (B·T, D, I, J) -> (B·T, D, I, J) per time step, and
the denoiser fuses its output with the inter-map encoder (ST-PointFormer or T-PatternNet) per cell.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int, max_groups: int = 8) -> int:
    return math.gcd(channels, max_groups)


class ResBlock2d(nn.Module):
    """x -> conv(SiLU(GN(conv(SiLU(GN(x)))))) + skip(x); (B, C_in, I, J) -> (B, C_out, I, J)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(c_in), c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(_groups(c_out), c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class UNet2d(nn.Module):
    """Args:
        channels: D, input and output channels.
        hidden: width of the first level (the second and the bottleneck use 2·hidden).

    Shapes:
        x: (B', D, I, J) for any I, J >= 1 (B' = B·T) -> (B', D, I, J).
    """

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        h1, h2 = hidden, 2 * hidden
        self.channels = channels
        self.inp = nn.Conv2d(channels, h1, 3, padding=1)
        self.enc1 = ResBlock2d(h1, h1)
        self.down1 = nn.Conv2d(h1, h1, 3, stride=2, padding=1)
        self.enc2 = ResBlock2d(h1, h2)
        self.down2 = nn.Conv2d(h2, h2, 3, stride=2, padding=1)
        self.mid = ResBlock2d(h2, h2)
        self.up2 = nn.Conv2d(h2, h2, 3, padding=1)
        self.dec2 = ResBlock2d(2 * h2, h2)
        self.up1 = nn.Conv2d(h2, h1, 3, padding=1)
        self.dec1 = ResBlock2d(2 * h1, h1)
        self.out = nn.Sequential(nn.GroupNorm(_groups(h1), h1), nn.SiLU(), nn.Conv2d(h1, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != self.channels:
            raise ValueError(f"UNet2d: x must be (B, D={self.channels}, I, J), got shape {tuple(x.shape)}")
        s1 = self.enc1(self.inp(x))  # (B, h1, I, J)
        s2 = self.enc2(self.down1(s1))  # (B, h2, ceil(I/2), ceil(J/2))
        h = self.mid(self.down2(s2))  # (B, h2, ceil(I/4), ceil(J/4))
        h = self.up2(F.interpolate(h, size=s2.shape[-2:], mode="nearest"))
        h = self.dec2(torch.cat([h, s2], 1))
        h = self.up1(F.interpolate(h, size=s1.shape[-2:], mode="nearest"))
        h = self.dec1(torch.cat([h, s1], 1))
        return self.out(h)
