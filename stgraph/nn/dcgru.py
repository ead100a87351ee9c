"""DCGRU: a GRU whose gates and candidate are diffusion convolutions (Li et al., DCRNN, ICLR 2018,
arXiv:1707.01926)::

    [r, u] = sigmoid(DC([x, h]))        c = tanh(DC([x, r * h]))        h' = u * h + (1 - u) * c

Diffusion is linear and channel-wise, so a DC over ``[x, h]`` is a Linear over the diffusion
terms of x plus one over those of h. The cell exploits that for speed: the terms of x are
diffused and projected once per step for both gates and the candidate (:meth:`DCGRUCell.project_input`,
which also takes a whole sequence at once when the input is known in advance, as in an encoder),
and one diffusion of h feeds both gates. Gate biases start at 1 (the official code's ``bias_start``).

The input may be diffused with the masked transitions (``mask``: which input cells are observed,
see :mod:`stgraph.nn.diffusion_conv`), so missing neighbours do not count as zeros; the state is
diffused with the ordinary ones (every node has a state, observed or not).
"""

from __future__ import annotations

import torch
from torch import nn

from stgraph.nn.diffusion_conv import DiffusionSupports, check_recursion, diffusion_features


class DCGRUCell(nn.Module):
    """Args:
        in_channels: C_in. hidden_channels: H. K: diffusion hops per direction.
        recursion: ``power`` or ``chebyshev`` (see :mod:`stgraph.nn.diffusion_conv`).

    Tensors are node-first (the layout the sparse diffusion wants, so no transposes per step):
        x: (N, *, C_in), h: (N, *, H), returns h': (N, *, H).
    """

    def __init__(self, in_channels: int, hidden_channels: int, K: int = 2, recursion: str = "power"):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.K = K
        self.recursion = check_recursion(recursion)
        terms = 2 * K + 1
        self.x_proj = nn.Linear(terms * in_channels, 3 * hidden_channels)  # [r, u, c] parts of x, with biases
        self.h_gates = nn.Linear(terms * hidden_channels, 2 * hidden_channels, bias=False)  # [r, u] parts of h
        self.h_cand = nn.Linear(terms * hidden_channels, hidden_channels, bias=False)  # c part of r * h
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.x_proj, self.h_gates, self.h_cand):
            nn.init.xavier_uniform_(lin.weight)
        with torch.no_grad():
            self.x_proj.bias.zero_()
            self.x_proj.bias[: 2 * self.hidden_channels] = 1.0

    def project_input(
        self, x: torch.Tensor, supports: DiffusionSupports, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, *, C_in) -> (N, *, 3H): the input's contribution (with the biases) to [r, u, c].
        ``mask``: None or bool (N, *, C_in), True where x is observed (masked transitions)."""
        return self.x_proj(diffusion_features(x, supports, self.K, self.recursion, mask))

    def step(self, xp: torch.Tensor, h: torch.Tensor, supports: DiffusionSupports) -> torch.Tensor:
        """One step from the projected input ``xp`` (N, *, 3H) and the state h (N, *, H)."""
        hc = self.hidden_channels
        xg, xc = xp.split([2 * hc, hc], dim=-1)  # split, not slices: slices' gradients are zero-filled copies
        gates = torch.sigmoid(xg + self.h_gates(diffusion_features(h, supports, self.K, self.recursion)))
        r, u = gates.split(hc, dim=-1)
        c = torch.tanh(xc + self.h_cand(diffusion_features(r * h, supports, self.K, self.recursion)))
        return u * h + (1 - u) * c

    def forward(self, x: torch.Tensor, h: torch.Tensor, supports: DiffusionSupports) -> torch.Tensor:
        return self.step(self.project_input(x, supports), h, supports)
