"""SPIN-H: SPIN's hierarchical variant (Marisca, Cini, Alippi, "Learning to Reconstruct Missing Data
from Spatiotemporal Graphs with Sparse Observations", NeurIPS 2022, §4.3), run inductively.

SPIN lets every (station, step) token attend to every step of every neighbour, O(W²) per edge.
SPIN-H routes that through ``z_heads`` latent tokens per node (K): a node's latent tokens summarise
its step tokens, the step tokens read them back, and along each edge the receiver's latent tokens
read the sender's step tokens and the receiver's step tokens read those
(:class:`~stgraph.nn.hierarchical_attention.HierarchicalSpatiotemporalAttention`), O(W K) per edge.

The model around the layers, as the authors' ``SPINHierarchicalModel`` (torch-spatiotemporal 0.9.5,
``tsl.nn.models.stgn.spin_model``) builds it: a node code v_i; latent tokens z = Z + V v_i (Z learned,
V linear), LayerNorm; the query code q_i^t of SPIN (calendar features, the node code, LeakyReLU, an
MLP, the sinusoidal step code); an observed token starts as ``MLP(x_i^t) + q_i^t + v1_i``, a missing
one as ``q_i^t + m1_i``, LayerNorm; ``num_layers`` layers, the first ``eta`` with sparse spatial
keys (a neighbour speaks at its observed steps only), a "valid"/"masked" code (v2, m2) added at layer
``eta``, the whitened input added back at observed tokens before every layer; a read-out MLP per
layer (hidden width ``z_channels``), the last the imputation, the others ``Prediction.aux`` scored
by the same loss (SPIN's).

Defaults: the official class's (5 layers, eta 3, one latent token per node, one message layer,
softmax re-weighting, the latent tokens updated along edges, LayerNorm, edges summed) with widths
h 32 / z 32 chosen by us: SPIN-H's published AQI-36 configuration (its repository's
``config/imputation/spin_h.yaml``) was not readable here.

Deviations, named:

* No per-node parameters (inductive): the node code v_i is a function of position
  (:class:`~stgraph.nn.st_pointformer.LatLonEncoding` in the frame of the batch's nodes) instead of
  a learned ``NodeEmbedding``; v1, m1, v2, m2 are linear maps of it; the latent tokens' learned part
  Z is one (K, d_z) table shared by all nodes instead of one per node, made node-specific by V v_i.
* Graph: the package's kNN graph on geodesic distance (as :mod:`stgraph.models.spin`).
* Inputs: several channels enter as ``[x * mask, mask]`` (the official model is univariate).
* The official layer's optional softmax re-weighting of edges (``spatial_aggr='softmax'``) is not
  implemented (the default, ``add``, is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.models.search import IntRange
from stgraph.models.spin import step_code, tsl_mlp
from stgraph.nn.hierarchical_attention import HierarchicalSpatiotemporalAttention
from stgraph.nn.st_pointformer import LatLonEncoding


@dataclass
class SPINHParams:
    h_channels: int = 32  # h_size: width of the step tokens
    z_channels: int = 32  # z_size: width of the latent tokens (and of the read-outs' hidden layer)
    z_heads: int = 1  # K latent tokens per node
    num_layers: int = 5  # n_layers
    eta: int = 3  # layers whose spatial messages come from observed tokens only
    message_layers: int = 1  # hidden blocks of each attention message MLP
    update_z_cross: bool = True
    k: int = 8  # graph in-neighbours per node
    impute_only_holes: bool = True  # evaluation: observed inputs are echoed


class SPINH(StationModel):
    """Args:
        sizes: data-derived sizes (task ``impute``, ``krige`` or ``reconstruct``). params: :class:`SPINHParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns src (B, W, N_src, C_out) and
    tgt (B, W, N_tgt, C_out), and ``num_layers - 1`` ``aux`` estimates of the same shapes.
    """

    search_space = {
        "h_channels": IntRange(16, 64, log=True),
        "z_channels": IntRange(16, 128, log=True),
        "z_heads": IntRange(1, 4),
        "num_layers": IntRange(3, 6),
        "k": IntRange(4, 12),
    }
    tasks = frozenset({"impute", "krige", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: SPINHParams | None = None):
        super().__init__(sizes)
        p = self.params = params or SPINHParams()
        for name in ("h_channels", "z_channels", "z_heads", "num_layers", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"SPIN-H: {name} must be >= 1, got {getattr(p, name)}")
        if not 0 <= p.eta <= p.num_layers:
            raise ValueError(f"SPIN-H: eta must be in 0..num_layers ({p.num_layers}), got {p.eta}")
        if p.message_layers < 0:
            raise ValueError(f"SPIN-H: message_layers must be >= 0, got {p.message_layers}")
        dh, dz, c_in, c_out = p.h_channels, p.z_channels, sizes.in_channels, sizes.out_channels
        self.targets = list(sizes.target_channels)
        self.node_code = LatLonEncoding(dh)
        self.z = nn.Parameter(torch.empty(p.z_heads, dz))
        self.lin_v = nn.Linear(dh, dz, bias=False)
        self.z_norm = nn.LayerNorm(dz)
        self.time_in = nn.Linear(6, dh)
        self.query_mlp = tsl_mlp(dh, dh, dh)
        self.value_in = tsl_mlp(2 * c_in, dh)
        self.in_norm = nn.LayerNorm(dh)
        self.v1, self.m1, self.v2, self.m2 = (nn.Linear(dh, dh) for _ in range(4))
        self.x_skip = nn.ModuleList(nn.Linear(2 * c_in, dh) for _ in range(p.num_layers))
        self.layers = nn.ModuleList(
            HierarchicalSpatiotemporalAttention(dh, dz, p.message_layers, p.update_z_cross)
            for _ in range(p.num_layers)
        )
        self.readout = nn.ModuleList(tsl_mlp(dh, dz, c_out) for _ in range(p.num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, m in self.named_modules():
            if m is not self and not name.startswith("layers") and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        bound = 1.0 / self.params.z_channels**0.5  # PyG's inits.uniform(z_size, z)
        nn.init.uniform_(self.z, -bound, bound)

    def forward(self, batch: GraphBatch) -> Prediction:
        p = self.params
        ux, pos, n_src = union_inputs(batch)  # (B, W, N, 2 C_in): [x * m, m]
        b, w, n, _ = ux.shape
        c_in = self.sizes.in_channels
        observed = ux[..., [c_in + c for c in self.targets]].amax(-1) > 0  # (B, W, N)
        v = self.node_code(pos).to(ux.dtype)  # (N, d_h): a function of position, no per-node parameter
        z = self.z_norm(self.z[:, None, :] + self.lin_v(v)[None])  # (K, N, d_z)
        z = z.unsqueeze(0).expand(b, -1, -1, -1)  # (B, K, N, d_z)
        q = nn.functional.leaky_relu(self.time_in(batch.x_time).unsqueeze(2) + v)  # (B, W, N, d_h)
        q = self.query_mlp(q) + step_code(w, p.h_channels, ux.device)[None, :, None]
        obs = observed.unsqueeze(-1)
        h = self.in_norm(torch.where(obs, self.value_in(ux) + q + self.v1(v), q + self.m1(v)))
        edge_index, _ = union_graph(pos, p.k)
        outs = []
        for layer_index, (layer, skip, read) in enumerate(zip(self.layers, self.x_skip, self.readout, strict=True)):
            if layer_index == p.eta:
                h = torch.where(obs, h + self.v2(v), h + self.m2(v))
            h = h + skip(ux) * obs
            h, z = layer(h, z, observed, edge_index, mask_spatial=layer_index < p.eta)
            outs.append(read(h))
        y = outs[-1]
        if not self.training and p.impute_only_holes:
            x, m = ux[..., self.targets], ux[..., [c_in + c for c in self.targets]] > 0
            y = torch.where(m, x, y)
        pred = split_outputs(y, n_src)
        pred.aux = [split_outputs(o, n_src) for o in outs[:-1]]
        return pred
