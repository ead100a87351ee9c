"""IGNNK: inductive graph neural network for kriging (Wu et al., AAAI 2021, arXiv:2006.07527).

Time is the feature axis. With ``inputs="target"`` (the paper, the default) each node's input is
its window of the target channel(s), ``W * C_out`` values, zero where unobserved and at target
(hidden) nodes, as in the official ``IGNNK_train.py``; ``inputs="all"`` (the package's earlier
variant) flattens ``[values * mask, mask]`` of every input channel, ``W * 2 C_in`` features
(:func:`~stgraph.models.inductive.union_inputs`). Three diffusion graph convolutions as in the
official code's ``D_GCN``, bidirectional random walk with the Chebyshev-style recursion::

    h1 = relu(DC1(x))        h2 = relu(DC2(h1)) + h1        y = DC3(h2)

and y (H * C_out per node: the W steps of the window for ``krige``/``impute``, the H steps after
it for ``forecast``) is reshaped to (B, H, N, C_out). The kNN graph with Gaussian weights is
rebuilt from positions at every forward: no per-node parameters, so stations never seen in
training are ordinary nodes.

Training as in the paper is the engine's: ``train.node_masking: sample`` (a different random set
of the sampled stations hidden in each sample), ``train.subgraph_size`` (n_o stations sampled per
batch) and the loss over all sampled stations, visible and hidden alike. Official settings
(``IGNNK_train.py`` and its README): ``h = 24`` steps, ``z = 100`` hidden, ``K = 1`` hop per
direction, Adam lr 1e-4 (1e-3 in ``IGNNK_train_metr.py``), batch 4, MSE, 750 epochs; n_o / n_m
(stations sampled / hidden of them per batch) 150/50 on METR-LA (157 known), 100/30 on NREL
(107), 900/300 on USHCN (918), 240/80 on SeData (243): n_o ~ all known stations, n_m ~ n_o / 3.

Deviations from the paper and official code:

* values are the engine's standardised ones (0 = the training mean), not divided by a maximum
  (``E_maxvalue``), so a hidden node's zero input is the mean rather than the minimum;
* the graph is a kNN graph with Gaussian kernel weights from positions (the official code uses
  a dense kernel of all pairs); each direction's Chebyshev recursion starts from X (the official
  ``D_GCN`` carries ``X_0`` over from the forward to the backward loop, a quirk);
* ``anchor`` (default ``"auto"``; ``"none"`` = the paper): the output is a residual over
  :func:`~stgraph.models.anchors.anchor_prediction` (masked IDW at hidden stations in krige,
  ``lerp-knn`` in impute, last value in forecast) through a zero-initialised last convolution,
  so an untrained model is its anchor, and a node with no input at all still gets its anchor;
* ``masked_mean`` (default True; False = the paper): the first convolution diffuses its input
  with the masked transitions (:mod:`stgraph.nn.diffusion_conv`): a node averages its *observed*
  neighbours' values (weights renormalised over them) instead of counting hidden ones as zeros.
  With ``inputs="all"`` the mask features are observed everywhere. The hidden layers keep the
  ordinary transitions (every node has hidden features);
* ``keep_observed`` (default True, anchored models only; False = the paper's output everywhere):
  in krige / impute the visible stations' observed input cells are output unchanged, the
  residual acts where values are missing (:func:`~stgraph.models.anchors.keep_observed`: without
  it the kept cells' L1 loss pins the residual at zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.models.anchors import anchor_prediction, keep_observed, resolve_anchor
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs, union_observed
from stgraph.models.search import IntRange
from stgraph.nn.diffusion_conv import DiffusionConv, make_supports

INPUTS = ("target", "all")


@dataclass
class IGNNKParams:
    hidden_channels: int = 100  # z (official 100)
    order: int = 1  # K: diffusion hops per direction (official 1)
    k: int = 8  # graph in-neighbours per node
    sigma_km: float | None = None  # Gaussian kernel width; None: the mean kNN edge length
    inputs: str = "target"  # "target": the window of the target channel(s) (paper); "all": every channel + masks
    anchor: str = "auto"  # residual over anchors.anchor_prediction; "none": from scratch (the paper)
    masked_mean: bool = True  # first layer averages observed neighbours only; False: the paper
    keep_observed: bool = True  # aligned tasks: observed input cells pass through (anchors.keep_observed)


def node_features(
    batch: GraphBatch, sizes: DataSizes, inputs: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The nodes' input features, time as the feature axis (step-major).

    Returns:
        feats: (B, N, F) with N = N_src + N_tgt and F = W * C_out (``target``) or W * 2 C_in
            (``all``); zero where unobserved and at target nodes.
        observed: (B, N, F) bool, which features are observed (mask features always are).
        pos: (N, 2). n_src: the number of visible nodes (the first rows).
    """
    if inputs == "target":
        tc = list(sizes.target_channels)
        x, m = batch.x[..., tc], batch.x_mask[..., tc]
        b, w, n_src, c = x.shape
        n_tgt = batch.pos_tgt.size(0)
        x = torch.cat([torch.where(m, x, torch.zeros_like(x)), x.new_zeros(b, w, n_tgt, c)], dim=2)
        obs = torch.cat([m, m.new_zeros(b, w, n_tgt, c)], dim=2)
        pos = torch.cat([batch.pos_src, batch.pos_tgt])
    else:
        x, pos, n_src = union_inputs(batch)
        obs = union_observed(batch)
    b, w, n, c = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, w * c), obs.permute(0, 2, 1, 3).reshape(b, n, w * c), pos, n_src


class IGNNK(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`IGNNKParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; node features (B, N, F) (see
    :func:`node_features`) -> (B, N, H * C_out); returns (B, H, N_src, C_out) and (B, H, N_tgt, C_out).
    """

    search_space = {"hidden_channels": IntRange(32, 256, log=True), "order": IntRange(1, 3), "k": IntRange(4, 16)}

    def __init__(self, sizes: DataSizes, params: IGNNKParams | None = None):
        super().__init__(sizes)
        p = self.params = params or IGNNKParams()
        for name in ("hidden_channels", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"IGNNK: {name} must be >= 1, got {getattr(p, name)}")
        if p.order < 0:
            raise ValueError(f"IGNNK: order must be >= 0, got {p.order}")
        if p.inputs not in INPUTS:
            raise ValueError(f"IGNNK: inputs must be one of {INPUTS}, got {p.inputs!r}")
        self.anchored = resolve_anchor(p.anchor, sizes) != "none"
        per_step = sizes.out_channels if p.inputs == "target" else 2 * sizes.in_channels
        hid = p.hidden_channels
        self.gnn1 = DiffusionConv(sizes.window * per_step, hid, p.order, "chebyshev")
        self.gnn2 = DiffusionConv(hid, hid, p.order, "chebyshev")
        self.gnn3 = DiffusionConv(hid, sizes.horizon * sizes.out_channels, p.order, "chebyshev")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.anchored:  # a zero residual: the untrained model is its anchor
            nn.init.zeros_(self.gnn3.lin.weight)
            nn.init.zeros_(self.gnn3.lin.bias)

    def forward(self, batch: GraphBatch) -> Prediction:
        p = self.params
        feats, observed, pos, n_src = node_features(batch, self.sizes, p.inputs)  # (B, N, F)
        b, n, _ = feats.shape
        edge_index, edge_weight = union_graph(pos, p.k, p.sigma_km)
        sup = make_supports(edge_index, edge_weight, n, feats.dtype)
        h1 = torch.relu(self.gnn1(feats, supports=sup, mask=observed if p.masked_mean else None))
        h2 = torch.relu(self.gnn2(h1, supports=sup)) + h1
        y = self.gnn3(h2, supports=sup)  # (B, N, H * C_out), step-major
        y = y.view(b, n, self.sizes.horizon, self.sizes.out_channels).permute(0, 2, 1, 3)
        anchor = anchor_prediction(batch, self.sizes, p.anchor)
        pred = split_outputs(torch.cat([anchor.src, anchor.tgt], dim=2).to(y.dtype) + y, n_src)
        return keep_observed(pred, batch, self.sizes) if p.keep_observed and self.anchored else pred
