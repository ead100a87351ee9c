"""ST-GCN: spatio-temporal graph convolutional network (Yu, Yin, Zhu, IJCAI 2018, arXiv:1709.04875),
run inductively and anchored.

Each ST-Conv block is the paper's "sandwich", with the activations of the official code
(github.com/VeritasYin/STGCN_IJCAI-18, ``models/layers.py``):

1. gated temporal convolution (1-D over time, kernel ``kt``): GLU ``(P + res) ⊙ sigmoid(Q)``;
2. Chebyshev graph convolution (``ks`` terms) plus the aligned input, then ReLU;
3. temporal convolution with ReLU: ``relu(conv_t(x) + res)``;
4. LayerNorm, dropout.

``res`` is the layer's input aligned to its output channels (a bias-free 1×1 projection to fewer
channels, zero-padding to more; in 'valid' mode cut to the last step of each kernel window). The
widths follow the paper (``[hidden, bottleneck, hidden]``, its 64, 16, 64); the official code
instead keeps the graph convolution at the first temporal convolution's width
(``[c_in, 32, 64]``, ``[64, 32, 128]``), with the same residual rules.

Inductive use: the nodes are the visible and the target stations together (``union_inputs``),
each node's input per step is ``[values * mask, mask, anchor, x_time]``, and the graph is the kNN
graph of their positions with Gaussian weights (``union_graph``), rebuilt for every batch. There
are no per-node parameters, so a station never seen in training is just another node.

How hidden nodes get information: a target (or fully hidden) node has zero values and mask, so
what reaches it through the graph is its neighbours' features. With ``anchor_input`` (default)
every node also gets the anchor's estimate of its target channels at every step (masked IDW of
the observed stations for a target, the observed value or its gap-filled estimate for a visible
station), so a hidden node enters the first graph convolution with an informative input rather
than zeros. The Chebyshev filter ``sum_k T_k(L~) X Θ_k`` has no mean to renormalise, so no masked
aggregation is applied to it; the mask channels let Θ learn how much to trust each input.

Anchoring (``anchor``, default ``auto``): the output is a zero-initialised residual over
``anchors.anchor_prediction`` (last value for forecasts, masked IDW at targets, ``lerp-knn`` in
imputation), so the untrained model *is* its anchor; ``keep_observed`` (default) outputs the
visible stations' observed input cells unchanged in the aligned tasks
(:func:`~stgraph.models.anchors.keep_observed`). ``anchor="none"`` with
``anchor_input=False`` and ``dilation=1`` is the faithful (unanchored, undilated) model.

- ``forecast``: temporal convolutions are 'valid' and undilated (each shortens the window by
  ``kt - 1``); the output layer is, as in the official code, a gated temporal convolution over
  the whole remaining length (so every input step is in reach), LayerNorm, a 1×1 convolution with
  sigmoid, and a Linear to ``horizon × out_channels`` per node (the official code predicts one
  step; the multi-step head is as in its multi-step variants).
- ``krige`` / ``impute`` (outputs at the input steps): 'same' padding keeps all W steps, then a
  per-step Linear readout. Temporal convolution ``j`` of the stack (``j = 0 .. 2·num_blocks - 1``,
  two per block) is dilated by ``dilation ** j``, so an output at step t depends on inputs at
  steps ``t - R_left .. t + R_right`` with

      R_left = sum_j floor((kt - 1) · dilation**j / 2),   R_right = (kt - 1) · S - R_left,
      S = sum_{j < 2·num_blocks} dilation**j

  (odd ``kt``: R_left = R_right = (kt - 1) / 2 · S; an even one pads the extra step after; every
  offset in between is reachable while ``dilation <= kt``). Defaults (kt 3, 2 blocks, dilation 2):
  R = 15 steps each side; 3 blocks: R = 63, so every output sees the whole of any window up to 64
  steps (zero padding stops the reach at the window's edges).

Deviations from the paper / official code, all named: LayerNorm over channels only (the
official normalises over [nodes, channels], which would tie parameters to the node count);
λ_max = 2 in the scaled Laplacian (the official computes the largest eigenvalue; 2 bounds it for
every normalised Laplacian and needs no eigen-solver per batch); the kNN Gaussian graph is built
from positions per batch; dilation, the 'same'-padded aligned readout, the anchor residual and the
anchor input channel are additions of this package.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.anchors import anchor_prediction, keep_observed, resolve_anchor
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.models.search import FloatRange, IntRange
from stgraph.nn.cheb_conv import ChebConv, fast_laplacian, scaled_laplacian


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
    dilation: int = 2  # krige/impute: temporal conv j is dilated by dilation**j (1: the paper's)
    anchor: str = "auto"  # residual over anchors.anchor_prediction; "none": predict from scratch
    anchor_input: bool = True  # feed the anchor's estimate of the target channels as an input channel
    keep_observed: bool = True  # anchored, aligned tasks: observed input cells pass through (anchors.keep_observed)


def temporal_reach(kt: int, num_blocks: int, dilation: int) -> tuple[int, int]:
    """Steps (before, after) an aligned-task output sees through ``2 · num_blocks`` 'same'-padded
    temporal convolutions dilated ``dilation**j``: ``R_left = sum_j floor((kt-1) dilation**j / 2)``
    and ``R_right = (kt - 1) S - R_left``, ``S = sum_j dilation**j``."""
    spans = [(kt - 1) * dilation**j for j in range(2 * num_blocks)]
    left = sum(span // 2 for span in spans)
    return left, sum(spans) - left


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


class TemporalConv(nn.Module):
    """Temporal convolution with a residual: ``glu``: ``(P + res) ⊙ sigmoid(Q)``, ``[P, Q] = conv_t(x)``;
    ``relu``: ``relu(conv_t(x) + res)`` (the official code's two kinds).

    Shapes: (B, T, N, C_in) -> (B, T - kt + 1, N, C_out) ('valid'; the residual is aligned to the
    last step of each kernel window) or (B, T, N, C_out) (``same``, any ``dilation``).
    """

    def __init__(self, c_in: int, c_out: int, kt: int, same: bool, act: str = "glu", dilation: int = 1):
        super().__init__()
        if act not in ("glu", "relu"):
            raise ValueError(f"TemporalConv: act must be 'glu' or 'relu', got {act!r}")
        if dilation != 1 and not same:
            raise ValueError("TemporalConv: dilation needs 'same' padding")
        self.c_out, self.kt, self.same, self.act, self.dilation = c_out, kt, same, act, dilation
        width = 2 * c_out if act == "glu" else c_out
        self.conv = nn.Conv2d(c_in, width, (kt, 1), padding="same" if same else 0, dilation=(dilation, 1))
        self.align = _Align(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, N, C) seen as (B, C, T, N) is channels-last memory: no copy on the way in or out
        out = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        res = self.align(x if self.same else x[:, self.kt - 1 :])
        if self.act == "relu":
            return torch.relu(out + res)
        p, q = out.chunk(2, dim=-1)  # chunk, not slicing: its backward is one cat, no zero-filled buffers
        return (p + res) * torch.sigmoid(q)


class STConvBlock(nn.Module):
    """Temporal GLU -> Chebyshev graph conv (+ aligned residual) + ReLU -> temporal conv + ReLU ->
    LayerNorm over channels -> dropout.

    Shapes: x (B, T, N, C_in) and the scaled Laplacian (N, N) sparse -> (B, T', N, hidden), with
    T' = T - 2 (kt - 1) ('valid') or T (``same``). ``dilations``: of the two temporal convolutions.
    """

    def __init__(
        self,
        c_in: int,
        hidden: int,
        bottleneck: int,
        kt: int,
        ks: int,
        dropout: float,
        same: bool,
        dilations: tuple[int, int] = (1, 1),
    ):
        super().__init__()
        self.temporal1 = TemporalConv(c_in, hidden, kt, same, "glu", dilations[0])
        self.graph = ChebConv(hidden, bottleneck, ks)
        self.graph_align = _Align(hidden, bottleneck)
        self.temporal2 = TemporalConv(bottleneck, hidden, kt, same, "relu", dilations[1])
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

    search_space = {
        "hidden_channels": IntRange(16, 128, log=True),
        "dropout": FloatRange(0.0, 0.5),
        "k": IntRange(4, 16),
    }
    tasks = frozenset({"forecast", "krige", "impute", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: STGCNParams | None = None):
        super().__init__(sizes)
        self.params = p = params or STGCNParams()
        for name in ("hidden_channels", "bottleneck_channels", "num_blocks", "kt", "ks", "k", "dilation"):
            if getattr(p, name) < 1:
                raise ValueError(f"STGCN: {name} must be >= 1, got {getattr(p, name)}")
        if not 0.0 <= p.dropout < 1.0:
            raise ValueError(f"STGCN: dropout must be in [0, 1), got {p.dropout}")
        self.anchor = resolve_anchor(p.anchor, sizes)
        self.aligned = same = sizes.aligned
        c_anchor = sizes.out_channels if p.anchor_input else 0
        c_in = 2 * sizes.in_channels + c_anchor + len(CYCLIC_FEATURES)
        dil = [p.dilation**j if same else 1 for j in range(2 * p.num_blocks)]
        self.blocks = nn.ModuleList(
            STConvBlock(
                c_in if i == 0 else p.hidden_channels,
                p.hidden_channels,
                p.bottleneck_channels,
                p.kt,
                p.ks,
                p.dropout,
                same,
                (dil[2 * i], dil[2 * i + 1]),
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
            self.out_temporal = TemporalConv(p.hidden_channels, p.hidden_channels, remaining, same=False)
            self.out_norm = nn.LayerNorm(p.hidden_channels)
            self.out_fc = nn.Linear(p.hidden_channels, p.hidden_channels)  # the official 1×1 conv + sigmoid
            self.head = nn.Linear(p.hidden_channels, sizes.horizon * sizes.out_channels)
        self._graph_cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (pos, L~) of the last node set
        self.reset_parameters()

    @property
    def receptive_field(self) -> tuple[int, int]:
        """Input steps (before, after) each output step sees in krige/impute (see the module doc);
        in forecast the output layer spans the whole window."""
        p = self.params
        if not self.aligned:
            return self.sizes.window - 1, 0
        return temporal_reach(p.kt, p.num_blocks, p.dilation)

    def reset_parameters(self) -> None:
        """Default initialisation; with an anchor the readout is zeroed, so the output is the anchor."""
        super().reset_parameters()
        if self.anchor != "none":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def _laplacian(self, pos: torch.Tensor) -> torch.Tensor:
        """Scaled Laplacian of the kNN graph of ``pos`` (N, 2). A function of the positions only, so
        the last one is reused while the node set repeats (evaluation batches)."""
        cached = self._graph_cache
        if cached is not None and cached[0].shape == pos.shape and cached[0].device == pos.device:
            if torch.equal(cached[0], pos):
                return cached[1]
        edge_index, edge_weight = union_graph(pos, self.params.k, self.params.sigma_km)
        laplacian = fast_laplacian(scaled_laplacian(edge_index, edge_weight, pos.size(0)))
        self._graph_cache = (pos.detach().clone(), laplacian)
        return laplacian

    def _anchors(self, batch: GraphBatch) -> tuple[Prediction | None, torch.Tensor | None]:
        """The output anchor (None without one) and the anchor input channel (B, W, N_src + N_tgt,
        C_out) (None without one). In forecast the input channel is the imputation anchor of the
        window (the output anchor lies in the future)."""
        out = None if self.anchor == "none" else anchor_prediction(batch, self.sizes, self.anchor)
        if not self.params.anchor_input:
            return out, None
        if self.aligned and out is not None:
            inp = out
        else:
            sizes = self.sizes if self.aligned else replace(self.sizes, task="impute", horizon=self.sizes.window)
            inp = anchor_prediction(batch, sizes, "auto")
        return out, torch.cat([inp.src, inp.tgt], dim=2)

    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]; nodes = visible then target stations
        x, pos, n_src = union_inputs(batch)
        b, w, n, _ = x.shape
        anchor, anchor_in = self._anchors(batch)
        parts = [x] if anchor_in is None else [x, anchor_in.to(x.dtype)]
        h = torch.cat([*parts, batch.x_time[:, :, None, :].expand(b, w, n, -1).to(x.dtype)], dim=-1)
        laplacian = self._laplacian(pos)
        for block in self.blocks:
            h = block(h, laplacian)
        if self.aligned:
            y = self.head(h)  # (B, W, N, C_out)
        else:
            z = torch.sigmoid(self.out_fc(self.out_norm(self.out_temporal(h))[:, 0]))  # (B, N, hidden)
            y = self.head(z).reshape(b, n, self.sizes.horizon, self.sizes.out_channels).permute(0, 2, 1, 3)
        pred = split_outputs(y, n_src)
        if anchor is not None:
            pred = Prediction(pred.src + anchor.src, pred.tgt + anchor.tgt)
            if self.params.keep_observed:
                pred = keep_observed(pred, batch, self.sizes)
        return pred
