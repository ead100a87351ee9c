"""GRIL: GRIN's graph recurrent imputation layer, one direction in time (Cini, Marisca, Alippi,
"Filling the G_ap_s: Multivariate Time Series Imputation by Graph Neural Networks", ICLR 2022,
arXiv:2108.00298; official code Graph-Machine-Learning-Group/grin, ``lib/nn/layers/gril.py``).

At each step t, from the state h (the top layer's, carried over from step t - 1)::

    x1 = first_stage(h)                         first-stage imputation
    x~ = where(m_t, x_t, x1)                    observed values kept, holes filled
    x2, r = decoder(x~, m_t, u_t, h)            spatial decoder: messages from the neighbours
    x^ = where(m_t, x~, x2)                     second-stage filling
    h = MPGRU([x^, m_t, u_t], h)                state update (one cell per layer)

A node's own value at t never reaches its own estimates at t (the decoder's graph convolution
has no self-loop, and h is from t - 1), so the estimates at observed cells are genuine and the
loss may score them. ``anchor`` (optional): each estimate is the anchor plus the readout, and the
holes are filled with it; with zero-initialised readouts an untrained layer fills with the anchor.

Tensors are node-first, as :mod:`stgraph.nn.diffusion_conv` wants: a step is (N, B, C).
"""

from __future__ import annotations

import torch
from torch import nn

from stgraph.nn.diffusion_conv import DenseSupports, DiffusionSupports, diffusion_features


class MPGRUCell(nn.Module):
    """The official ``GCGRUCell``: a GRU whose gates and candidate are diffusion convolutions
    (``SpatialConvOrderK`` with self term, ``order = K`` hops of each of the two transitions, power
    recursion: terms ``[X, P_f X, ..., P_f^K X, P_b X, ..., P_b^K X]``)::

        r, u = sigmoid(DC([x, h]))        c = tanh(DC([x, r * h]))        h' = u * h + (1 - u) * c

    The official 1x1 convolutions have PyTorch's default initialisation (no gate bias of 1);
    ``nn.Linear`` has the same. r and u share one Linear (the same initialisation as two).

    Args:
        in_channels: C. hidden_channels: H. K: hops per direction.
    Shapes: x (N, *, C), h (N, *, H) -> (N, *, H).
    """

    def __init__(self, in_channels: int, hidden_channels: int, K: int = 2):
        super().__init__()
        self.hidden_channels, self.K = hidden_channels, K
        terms = (2 * K + 1) * (in_channels + hidden_channels)
        self.gates = nn.Linear(terms, 2 * hidden_channels)
        self.cand = nn.Linear(terms, hidden_channels)

    def reset_parameters(self) -> None:
        self.gates.reset_parameters()
        self.cand.reset_parameters()

    def forward(self, x: torch.Tensor, h: torch.Tensor, supports: Supports) -> torch.Tensor:
        gates = torch.sigmoid(self.gates(diffusion_features(torch.cat([x, h], -1), supports, self.K)))
        r, u = gates.split(self.hidden_channels, dim=-1)
        c = torch.tanh(self.cand(diffusion_features(torch.cat([x, r * h], -1), supports, self.K)))
        return u * h + (1 - u) * c


Supports = DiffusionSupports | DenseSupports


def neighbour_terms(z: torch.Tensor, supports: Supports) -> torch.Tensor:
    """(N, *, F) -> (N, *, 2F): ``[P_f z, P_b z]``, one hop each way and no self term."""
    n = z.size(0)
    hop = supports.first_hop(z.reshape(n, -1)).view(2, *z.shape)
    return torch.cat(hop.unbind(0), dim=-1)


class SpatialDecoder(nn.Module):
    """The official ``SpatialDecoder`` (``decoder_order`` 1, no attention block)::

        z = Lin([x, m, u, h])        g = Lin([P_f z, P_b z])        o = PReLU(Lin([g, h]))
        r = [o, h]                   x2 = Lin(r)

    Args:
        in_channels: channels of ``[x, m, u, h]``. hidden_channels: H. out_channels: C of x2.
    Shapes: inputs (N, *, .) -> x2 (N, *, out_channels), r (N, *, 2H).
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        self.lin_in = nn.Linear(in_channels, hidden_channels)
        self.graph_conv = nn.Linear(2 * hidden_channels, hidden_channels)
        self.lin_out = nn.Linear(2 * hidden_channels, hidden_channels)
        self.act = nn.PReLU()
        self.read_out = nn.Linear(2 * hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        for mod in (self.lin_in, self.graph_conv, self.lin_out, self.act, self.read_out):
            mod.reset_parameters()

    def forward(self, inputs: torch.Tensor, h: torch.Tensor, supports: Supports):
        z = self.lin_in(inputs)
        g = self.graph_conv(neighbour_terms(z, supports))
        rep = torch.cat([self.act(self.lin_out(torch.cat([g, h], -1))), h], -1)
        return self.read_out(rep), rep


class GRIL(nn.Module):
    """One direction of GRIN.

    Args:
        channels: C, the imputed channels. covariates: U, extra per-node inputs (0: none).
        hidden_channels: H. num_layers: stacked MPGRU cells. K: their hops per direction.
        dropout: between stacked cells. zero_readouts: the first-stage and decoder readouts start
            at zero (and :meth:`reset_parameters` keeps them there): for residuals over an anchor.

    Shapes (time-first, node-first sequences):
        x, m: (T, N, B, C) values (anything where unobserved) and bool mask; u: (T, N, B, U) or
        None; anchor: (T, N, B, C) or None. Returns the second-stage x2 (T, N, B, C), the
        first-stage x1 (T, N, B, C) and the representations r (T, N, B, 2H).
    """

    def __init__(
        self,
        channels: int,
        covariates: int,
        hidden_channels: int,
        num_layers: int = 1,
        K: int = 2,
        dropout: float = 0.0,
        zero_readouts: bool = False,
    ):
        super().__init__()
        self.hidden_channels, self.zero_readouts = hidden_channels, zero_readouts
        rnn_in = 2 * channels + covariates
        self.cells = nn.ModuleList(
            MPGRUCell(rnn_in if i == 0 else hidden_channels, hidden_channels, K) for i in range(num_layers)
        )
        self.drop = nn.Dropout(dropout)
        self.first_stage = nn.Linear(hidden_channels, channels)
        self.decoder = SpatialDecoder(rnn_in + hidden_channels, hidden_channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for cell in self.cells:
            cell.reset_parameters()
        self.first_stage.reset_parameters()
        self.decoder.reset_parameters()
        if self.zero_readouts:
            for lin in (self.first_stage, self.decoder.read_out):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(
        self,
        x: torch.Tensor,
        m: torch.Tensor,
        u: torch.Tensor | None,
        supports: Supports,
        anchor: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t, n, b, _ = x.shape
        h = [x.new_zeros(n, b, self.hidden_channels) for _ in self.cells]
        mf = m.to(x.dtype)
        extra = mf if u is None else torch.cat([mf, u], -1)  # (T, N, B, C + U): [m, u] of each step
        steps = list(
            zip(
                x.unbind(0),
                m.unbind(0),
                extra.unbind(0),
                [None] * t if anchor is None else anchor.unbind(0),
                strict=True,
            )
        )
        first, second, reps = [], [], []
        for x_t, m_t, e_t, a_t in reversed(steps) if reverse else steps:
            x1 = self.first_stage(h[-1])
            if a_t is not None:
                x1 = x1 + a_t
            x_t = torch.where(m_t, x_t, x1)
            x2, rep = self.decoder(torch.cat([x_t, e_t, h[-1]], -1), h[-1], supports)
            if a_t is not None:
                x2 = x2 + a_t
            inp = torch.cat([torch.where(m_t, x_t, x2), e_t], -1)
            for i, cell in enumerate(self.cells):
                inp = h[i] = cell(self.drop(inp) if i > 0 else inp, h[i], supports)
            first.append(x1)
            second.append(x2)
            reps.append(rep)
        if reverse:
            first, second, reps = first[::-1], second[::-1], reps[::-1]
        return torch.stack(second), torch.stack(first), torch.stack(reps)
