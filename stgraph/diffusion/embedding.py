"""Diffusion-step embedding: a fixed sinusoidal table of the step index, then a 2-layer MLP.

CSDI's ``DiffusionEmbedding`` (Tashiro et al. 2021, ``diff_models.py``), which PriSTI and most
conditional time-series diffusion models reuse: for d = embedding_dim / 2 frequencies
f_j = 10^(4 j / (d - 1)), j = 0..d-1, the step t ∈ {0, …, T-1} becomes
[sin(t f_0), …, sin(t f_{d-1}), cos(t f_0), …, cos(t f_{d-1})], followed by
Linear → SiLU → Linear → SiLU (CSDI: 128 dimensions in and out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def diffusion_step_table(num_steps: int, embedding_dim: int) -> Tensor:
    """(num_steps, embedding_dim) float32 sinusoidal table, sines then cosines (CSDI's layout).

    Args:
        num_steps: T; rows are the steps 0..T-1.
        embedding_dim: an even number >= 4 (half sines, half cosines).
    """
    if embedding_dim < 4 or embedding_dim % 2:
        raise ValueError(f"diffusion step embedding_dim must be even and >= 4, got {embedding_dim}")
    half = embedding_dim // 2
    steps = torch.arange(num_steps, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    frequencies = 10.0 ** (torch.arange(half, dtype=torch.float32) / (half - 1) * 4.0).unsqueeze(0)  # (1, d)
    table = steps * frequencies  # (T, d)
    return torch.cat([torch.sin(table), torch.cos(table)], dim=1)


class DiffusionStepEmbedding(nn.Module):
    """Embedding of the diffusion step t: sinusoidal table row, Linear → SiLU → Linear → SiLU.

    Args:
        num_steps: T, the schedule's number of steps.
        embedding_dim: width of the sinusoidal table (CSDI: 128).
        projection_dim: output width (default: ``embedding_dim``).

    Forward: t (B,) int64 in 0..T-1 -> (B, projection_dim).
    """

    def __init__(self, num_steps: int, embedding_dim: int = 128, projection_dim: int | None = None):
        super().__init__()
        projection_dim = projection_dim or embedding_dim
        self.num_steps = num_steps
        self.register_buffer("table", diffusion_step_table(num_steps, embedding_dim), persistent=False)
        self.projection1 = nn.Linear(embedding_dim, projection_dim)
        self.projection2 = nn.Linear(projection_dim, projection_dim)

    def reset_parameters(self) -> None:
        self.projection1.reset_parameters()
        self.projection2.reset_parameters()

    def forward(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=self.table.device).long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"diffusion steps must lie in 0..{self.num_steps - 1}, got {t.min()}..{t.max()}")
        x = F.silu(self.projection1(self.table[t]))
        return F.silu(self.projection2(x))
