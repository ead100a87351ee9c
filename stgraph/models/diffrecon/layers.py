"""Pieces both DiffRecon denoisers share: the calendar width and the zero-initialised output
(CSDI zero-initialises its output projection, so an untrained denoiser predicts ε̂ = 0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TIME_FEATURES = 6  # the calendar encodings of stgraph.data.encodings (GraphBatch.x_time)


def zero_linear(i: int, o: int) -> nn.Linear:
    """A linear map whose weight and bias start at 0 (CSDI zero-initialises its output projection)."""
    lin = nn.Linear(i, o)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class ZeroOutDecoder(nn.Module):
    """Decoder: LayerNorm -> SiLU -> Linear(d, d) -> SiLU -> Linear(d, C), the last one zero at
    initialisation (so ε̂ = 0 at the start, as CSDI's output projection)."""

    def __init__(self, d: int, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.hidden = nn.Linear(d, d)
        self.out = zero_linear(d, c)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.hidden.reset_parameters()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.hidden(F.silu(self.norm(h)))))
