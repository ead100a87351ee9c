"""IGNNK: inductive graph neural network for kriging (Wu et al., AAAI 2021, arXiv:2006.07527).

Time is the feature axis: each node's input is its whole window flattened, ``[values * mask,
mask]`` of every input channel over the W steps (W * 2 * C_in features); target nodes are zero
(:func:`~stgraph.models.inductive.union_inputs`). Three diffusion graph convolutions as in the
official code's ``D_GCN``, bidirectional random walk with the Chebyshev-style recursion::

    h1 = relu(DC1(x))        h2 = relu(DC2(h1)) + h1        y = DC3(h2)

and y (H * C_out per node; W * C_out for the aligned tasks) is reshaped to (B, H, N, C_out).
The kNN graph with Gaussian weights is rebuilt from positions at every forward: no per-node
parameters, so stations never seen in training are ordinary nodes. ``forecast`` only changes the
output size (the H steps after the window instead of the W steps of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.nn.diffusion_conv import DiffusionConv, DiffusionSupports


@dataclass
class IGNNKParams:
    hidden_channels: int = 64
    order: int = 2  # K: diffusion hops per direction
    k: int = 8  # graph in-neighbours per node
    sigma_km: float | None = None  # Gaussian kernel width; None: the mean kNN edge length


class IGNNK(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`IGNNKParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; node features (B, N, W * 2 C_in) ->
    (B, N, H * C_out); returns (B, H, N_src, C_out) and (B, H, N_tgt, C_out).
    """

    def __init__(self, sizes: DataSizes, params: IGNNKParams | None = None):
        super().__init__(sizes)
        p = self.params = params or IGNNKParams()
        for name in ("hidden_channels", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"IGNNK: {name} must be >= 1, got {getattr(p, name)}")
        if p.order < 0:
            raise ValueError(f"IGNNK: order must be >= 0, got {p.order}")
        hid, feat_in = p.hidden_channels, sizes.window * 2 * sizes.in_channels
        self.gnn1 = DiffusionConv(feat_in, hid, p.order, "chebyshev")
        self.gnn2 = DiffusionConv(hid, hid, p.order, "chebyshev")
        self.gnn3 = DiffusionConv(hid, sizes.horizon * sizes.out_channels, p.order, "chebyshev")
        self.reset_parameters()

    def forward(self, batch: GraphBatch) -> Prediction:
        x, pos, n_src = union_inputs(batch)  # (B, W, N, 2 C_in)
        b, w, n, c = x.shape
        feats = x.permute(0, 2, 1, 3).reshape(b, n, w * c)  # time as features
        edge_index, edge_weight = union_graph(pos, self.params.k, self.params.sigma_km)
        sup = DiffusionSupports(edge_index, edge_weight, n, x.dtype)
        h1 = torch.relu(self.gnn1(feats, supports=sup))
        h2 = torch.relu(self.gnn2(h1, supports=sup)) + h1
        y = self.gnn3(h2, supports=sup)  # (B, N, H * C_out)
        y = y.view(b, n, self.sizes.horizon, self.sizes.out_channels).permute(0, 2, 1, 3)
        return split_outputs(y, n_src)
