"""ST-GCN: spatio-temporal graph convolutional network (Yu, Yin, Zhu, IJCAI 2018, arXiv:1709.04875),
run inductively.

Each ST-Conv block is a "sandwich": a gated temporal convolution (1-D over time, kernel ``kt``,
GLU ``(P + residual) ⊙ sigmoid(Q)`` as in the paper's official code, the residual being the input
aligned by a 1×1 convolution or zero-padded channels), a Chebyshev graph convolution (``ks``
terms, with the aligned input as residual, as in the official code) and ReLU, a second gated
temporal convolution, LayerNorm and dropout. The official code normalises over [nodes, channels];
here LayerNorm is over channels only, so nothing depends on the number of nodes.

Inductive use: the nodes are the visible and the target stations together (``union_inputs``),
each node's input per step is ``[values * mask, mask, x_time]``, and the graph is the kNN graph of
their positions with Gaussian weights (``union_graph``), rebuilt for every batch. There are no
per-node parameters, so a station never seen in training is just another node.

- ``forecast``: temporal convolutions are 'valid' (each shortens the window by ``kt - 1``); the
  output layer is a gated temporal convolution over the whole remaining length, LayerNorm, and a
  Linear to ``horizon × out_channels`` per node (as the official multi-step variants).
- ``krige`` / ``impute`` (outputs at the input steps): 'same' padding keeps all W steps (symmetric
  for odd ``kt``; an even ``kt`` pads one more step after), then a per-step Linear readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.nn.cheb_conv import ChebConv, scaled_laplacian


@dataclass
class STGCNParams:
    hidden_channels: int = 64  # temporal-conv width: each block is [hidden, bottleneck, hidden]
    bottleneck_channels: int = 16  # graph-conv width
    num_blocks: int = 2
    kt: int = 3  # temporal kernel
    ks: int = 3  # Chebyshev terms
    k: int = 8  # graph neighbours per node
    sigma_km: float | None = None  # Gaussian edge-weight width; None: mean edge length
    dropout: float = 0.1


class _Align(nn.Module):
    """Residual channels: 1×1 projection (no bias) to fewer channels, zero-padding to more."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.pad = max(c_out - c_in, 0)
        self.proj = nn.Linear(c_in, c_out, bias=False) if c_in > c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C_in) -> (..., C_out)
        if self.proj is not None:
            return self.proj(x)
        return F.pad(x, (0, self.pad)) if self.pad else x


class TemporalGLU(nn.Module):
    """Gated temporal convolution: ``(P + align(x)) ⊙ sigmoid(Q)`` with ``[P, Q] = conv_t(x)``.

    Shapes: (B, T, N, C_in) -> (B, T - kt + 1, N, C_out) ('valid'; the residual is aligned to the
    last step of each kernel window) or (B, T, N, C_out) (``same``).
    """

    def __init__(self, c_in: int, c_out: int, kt: int, same: bool):
        super().__init__()
        self.c_out, self.kt, self.same = c_out, kt, same
        self.conv = nn.Conv2d(c_in, 2 * c_out, (kt, 1), padding="same" if same else 0)
        self.align = _Align(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, N, C) seen as (B, C, T, N) is channels-last memory: no copy on the way in or out
        pq = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        res = self.align(x if self.same else x[:, self.kt - 1 :])
        p, q = pq.chunk(2, dim=-1)  # chunk, not slicing: its backward is one cat, no zero-filled buffers
        return (p + res) * torch.sigmoid(q)


class STConvBlock(nn.Module):
    """Temporal GLU -> Chebyshev graph conv (+ aligned residual) + ReLU -> temporal GLU ->
    LayerNorm over channels -> dropout.

    Shapes: x (B, T, N, C_in) and the scaled Laplacian (N, N) sparse -> (B, T', N, hidden), with
    T' = T - 2 (kt - 1) ('valid') or T (``same``).
    """

    def __init__(self, c_in: int, hidden: int, bottleneck: int, kt: int, ks: int, dropout: float, same: bool):
        super().__init__()
        self.temporal1 = TemporalGLU(c_in, hidden, kt, same)
        self.graph = ChebConv(hidden, bottleneck, ks)
        self.graph_align = _Align(hidden, bottleneck)
        self.temporal2 = TemporalGLU(bottleneck, hidden, kt, same)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        h = self.temporal1(x)
        h = torch.relu(self.graph(h, laplacian=laplacian) + self.graph_align(h))
        h = self.temporal2(h)
        return self.dropout(self.norm(h))


class STGCN(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`STGCNParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out).
    """

    tasks = frozenset({"forecast", "krige", "impute"})

    def __init__(self, sizes: DataSizes, params: STGCNParams | None = None):
        super().__init__(sizes)
        self.params = p = params or STGCNParams()
        for name in ("hidden_channels", "bottleneck_channels", "num_blocks", "kt", "ks", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"STGCN: {name} must be >= 1, got {getattr(p, name)}")
        if not 0.0 <= p.dropout < 1.0:
            raise ValueError(f"STGCN: dropout must be in [0, 1), got {p.dropout}")
        self.aligned = sizes.aligned
        same = self.aligned
        c_in = 2 * sizes.in_channels + len(CYCLIC_FEATURES)
        self.blocks = nn.ModuleList(
            STConvBlock(
                c_in if i == 0 else p.hidden_channels,
                p.hidden_channels,
                p.bottleneck_channels,
                p.kt,
                p.ks,
                p.dropout,
                same,
            )
            for i in range(p.num_blocks)
        )
        if self.aligned:
            self.head = nn.Linear(p.hidden_channels, sizes.out_channels)
        else:
            remaining = sizes.window - 2 * p.num_blocks * (p.kt - 1)
            if remaining < 1:
                raise ValueError(
                    f"STGCN: window {sizes.window} is too short for {p.num_blocks} ST-Conv blocks with kt={p.kt}: "
                    f"each block shortens the window by 2*(kt-1)={2 * (p.kt - 1)} steps, so the window must be at "
                    f"least {2 * p.num_blocks * (p.kt - 1) + 1} (or use fewer blocks / a smaller kt)"
                )
            self.out_temporal = TemporalGLU(p.hidden_channels, p.hidden_channels, remaining, same=False)
            self.out_norm = nn.LayerNorm(p.hidden_channels)
            self.head = nn.Linear(p.hidden_channels, sizes.horizon * sizes.out_channels)
        self._graph_cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (pos, L~) of the last node set
        self.reset_parameters()

    def _laplacian(self, pos: torch.Tensor) -> torch.Tensor:
        """Scaled Laplacian of the kNN graph of ``pos`` (N, 2). A function of the positions only, so
        the last one is reused while the node set repeats (evaluation batches)."""
        cached = self._graph_cache
        if cached is not None and cached[0].shape == pos.shape and cached[0].device == pos.device:
            if torch.equal(cached[0], pos):
                return cached[1]
        edge_index, edge_weight = union_graph(pos, self.params.k, self.params.sigma_km)
        laplacian = scaled_laplacian(edge_index, edge_weight, pos.size(0))
        self._graph_cache = (pos.detach().clone(), laplacian)
        return laplacian

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]; nodes = visible then target stations
        x, pos, n_src = union_inputs(batch)
        b, w, n, _ = x.shape
        h = torch.cat([x, batch.x_time[:, :, None, :].expand(b, w, n, -1).to(x.dtype)], dim=-1)
        laplacian = self._laplacian(pos)
        for block in self.blocks:
            h = block(h, laplacian)
        if self.aligned:
            y = self.head(h)  # (B, W, N, C_out)
        else:
            z = self.out_norm(self.out_temporal(h))[:, 0]  # (B, N, hidden)
            y = self.head(z).reshape(b, n, self.sizes.horizon, self.sizes.out_channels).permute(0, 2, 1, 3)
        return split_outputs(y, n_src)
