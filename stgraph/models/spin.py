"""SPIN: spatiotemporal point inference network (Marisca, Cini, Alippi, "Learning to Reconstruct
Missing Data from Spatiotemporal Graphs with Sparse Observations", NeurIPS 2022), run inductively.

Every (station, step) of the window is a token. A token's query code q_i^t comes from the
calendar (a linear map, plus the node's code, LeakyReLU, a two-layer MLP, plus a sinusoidal code
of the step); an observed token starts from ``MLP(x_i^t) + q_i^t``, a missing one from q_i^t
alone, then LayerNorm. ``num_layers`` sparse spatiotemporal attention layers
(:class:`~stgraph.nn.temporal_additive_attention.SparseSpatiotemporalAttention`) follow; before
each, the whitened input is added back through a linear skip at observed tokens. In the first
``eta`` layers a neighbour speaks only at its observed steps (the paper's sparse edges: missing
tokens first receive, later speak); at layer ``eta`` a "valid" or a "masked" code is added to
each token to tell the two kinds apart. Each layer has its own two-layer MLP read-out; the last
is the imputation and the others are ``Prediction.aux`` (the official loss scores every layer's
read-out, weight 1). In evaluation mode observed inputs are echoed (the engine scores missing
cells only).

Inductive use: the visible and the target stations are one node set
(:func:`~stgraph.models.inductive.union_inputs`); a target station is a node that is never
observed, which SPIN treats like any missing token: it listens to its observed neighbours in the
first ``eta`` layers and speaks after. The graph is the kNN graph of all nodes' positions
(``k`` in-neighbours), rebuilt at every forward.

Checked against the authors' implementation of SPIN in torch-spatiotemporal 0.9.5
(``tsl.nn.models.stgn.spin_model.SPINModel``, ``SPINPositionalEncoder``, ``tsl.nn.blocks.encoders.MLP``
and the attention layers named in :mod:`stgraph.nn.temporal_additive_attention`): the value encoder is
two Linear + ReLU blocks; the query code's MLP and every read-out are two Linear + ReLU blocks and a
linear read-out; the step code is added after the query MLP. The defaults are SPIN's published
AQI-36 ones as we recall them from its repository's ``config/imputation/spin.yaml`` (hidden 32,
4 layers, eta 3, one message layer, temporal self-attention, softmax re-weighting; window 24), which
was not readable here; the class defaults of ``SPINModel`` agree on layers, eta and message layers.
Deviations, named:

* No learned node embeddings (the official ``NodeEmbedding`` in the query code and the
  valid/masked codes): a station unseen in training has none. Each node's code is instead a
  function of its position (:class:`~stgraph.nn.st_pointformer.LatLonEncoding` in the frame of
  the batch's nodes), and the valid / masked codes are two linear maps of it.
* Graph: the package's kNN graph on geodesic distance instead of the thresholded Gaussian kernel
  of all pairwise distances.
* Inputs: several channels enter as ``[x * mask, mask]`` (the official model is univariate and
  whitens missing values to 0); a token is observed where any target channel is.

SPIN-H, the hierarchical variant, is :mod:`stgraph.models.spin_h`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.models.search import IntRange
from stgraph.nn.st_pointformer import LatLonEncoding
from stgraph.nn.temporal_additive_attention import SparseSpatiotemporalAttention


@dataclass
class SPINParams:
    hidden_channels: int = 32  # hidden_size
    num_layers: int = 4  # n_layers
    eta: int = 3  # layers whose spatial messages come from observed tokens only
    message_layers: int = 1  # hidden layers of each attention message MLP
    temporal_self_attention: bool = True
    k: int = 8  # graph in-neighbours per node
    impute_only_holes: bool = True  # evaluation: observed inputs are echoed


def tsl_mlp(i: int, h: int, o: int | None = None, n_layers: int = 2) -> nn.Sequential:
    """tsl's ``MLP(i, h, o, n_layers)``: ``n_layers`` blocks of Linear + ReLU, then a linear read-out
    to ``o`` when given (none: the last block's ReLU is the output)."""
    layers: list[nn.Module] = []
    for k in range(n_layers):
        layers += [nn.Linear(i if k == 0 else h, h), nn.ReLU()]
    if o is not None:
        layers.append(nn.Linear(h, o))
    return nn.Sequential(*layers)


def step_code(w: int, d: int, device) -> torch.Tensor:
    """(W, d) the sinusoidal code of steps 0..W-1 (Vaswani et al. 2017; the official
    ``PositionalEncoding``)."""
    pos = torch.arange(w, dtype=torch.float32, device=device).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d))
    out = torch.zeros(w, d, device=device)
    out[:, 0::2] = torch.sin(pos * div)
    out[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return out


class SPIN(StationModel):
    """Args:
        sizes: data-derived sizes (task ``impute``, ``krige`` or ``reconstruct``). params: :class:`SPINParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns src (B, W, N_src, C_out) and
    tgt (B, W, N_tgt, C_out), and ``num_layers - 1`` ``aux`` estimates of the same shapes.
    """

    search_space = {"hidden_channels": IntRange(16, 64, log=True), "num_layers": IntRange(2, 5), "k": IntRange(4, 12)}
    tasks = frozenset({"impute", "krige", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: SPINParams | None = None):
        super().__init__(sizes)
        p = self.params = params or SPINParams()
        for name in ("hidden_channels", "num_layers", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"SPIN: {name} must be >= 1, got {getattr(p, name)}")
        if not 0 <= p.eta <= p.num_layers:
            raise ValueError(f"SPIN: eta must be in 0..num_layers ({p.num_layers}), got {p.eta}")
        if p.message_layers < 0:
            raise ValueError(f"SPIN: message_layers must be >= 0, got {p.message_layers}")
        d, c_in, c_out = p.hidden_channels, sizes.in_channels, sizes.out_channels
        self.targets = list(sizes.target_channels)
        self.node_code = LatLonEncoding(d)
        self.time_in = nn.Linear(6, d)
        self.query_mlp = tsl_mlp(d, d, d)
        self.value_in = tsl_mlp(2 * c_in, d)
        self.in_norm = nn.LayerNorm(d)
        self.valid_code = nn.Linear(d, d)
        self.masked_code = nn.Linear(d, d)
        self.x_skip = nn.ModuleList(nn.Linear(2 * c_in, d) for _ in range(p.num_layers))
        self.layers = nn.ModuleList(
            SparseSpatiotemporalAttention(d, p.message_layers, p.temporal_self_attention) for _ in range(p.num_layers)
        )
        self.readout = nn.ModuleList(tsl_mlp(d, d, c_out) for _ in range(p.num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters") and not isinstance(m, SparseSpatiotemporalAttention):
                m.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, batch: GraphBatch) -> Prediction:
        p = self.params
        ux, pos, n_src = union_inputs(batch)  # (B, W, N, 2 C_in): [x * m, m]
        b, w, n, _ = ux.shape
        c_in = self.sizes.in_channels
        observed = ux[..., [c_in + c for c in self.targets]].amax(-1) > 0  # (B, W, N)
        node = self.node_code(pos).to(ux.dtype)  # (N, d): a function of position, no per-node parameter
        q = nn.functional.leaky_relu(self.time_in(batch.x_time).unsqueeze(2) + node)  # (B, W, N, d)
        q = self.query_mlp(q) + step_code(w, p.hidden_channels, ux.device)[None, :, None]
        obs = observed.unsqueeze(-1)
        h = self.in_norm(torch.where(obs, self.value_in(ux) + q, q))
        edge_index, _ = union_graph(pos, p.k)
        outs = []
        for layer_index, (layer, skip, read) in enumerate(zip(self.layers, self.x_skip, self.readout, strict=True)):
            if layer_index == p.eta:
                h = torch.where(obs, h + self.valid_code(node), h + self.masked_code(node))
            h = h + skip(ux) * obs
            h = layer(h, observed, edge_index, mask_spatial=layer_index < p.eta)
            outs.append(read(h))
        y = outs[-1]
        if not self.training and p.impute_only_holes:
            x, m = ux[..., self.targets], ux[..., [c_in + c for c in self.targets]] > 0
            y = torch.where(m, x, y)
        pred = split_outputs(y, n_src)
        pred.aux = [split_outputs(o, n_src) for o in outs[:-1]]
        return pred
