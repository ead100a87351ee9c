"""GRIN: graph recurrent imputation network (Cini, Marisca, Alippi, "Filling the G_ap_s: Multivariate
Time Series Imputation by Graph Neural Networks", ICLR 2022, arXiv:2108.00298), run inductively.

Official code: Graph-Machine-Learning-Group/grin (``lib/nn/models/grin.py``, ``layers/gril.py``,
``layers/gcrnn.py``, ``layers/spatial_conv.py``, ``fillers/graphfiller.py``, ``config/grin/air36.yaml``).
Two :class:`~stgraph.nn.grin_cell.GRIL` layers, one forward and one backward in time, each with
its own MPGRU cell (gates are diffusion convolutions over ``[x, mask, h]``), first-stage linear
readout and spatial decoder; an MLP merges ``[r_fwd, r_bwd, mask]`` (r = ``[decoder output, h]``
of each direction) into the final imputation::

    y = Lin(Dropout(ReLU(Lin([r_fwd, r_bwd, m]))))

``Prediction.aux`` holds the four other estimates the paper's loss also scores, weight 1 (the
official ``pred_loss_weight``): second stage forward, second stage backward, first stage forward,
first stage backward. Outputs at the input steps (``krige`` and ``impute``). In evaluation mode
the final imputation echoes the input where it was observed (the official ``impute_only_holes``);
in training it is the model's own estimate everywhere (no node sees its own value at t).

Inductive use: the nodes are the visible and the target stations together
(:func:`~stgraph.models.inductive.union_inputs`); a target node is never observed, so GRIN fills
it at every step with its own estimates, as it fills any hole. The kNN graph with Gaussian weights
is rebuilt from positions at every forward. Channels: GRIN imputes the target channels; the other
input channels enter as covariates ``[x * mask, mask]`` (the official exogenous ``u``).

Official hyperparameters on AQI-36 (``config/grin/air36.yaml`` and ``run_imputation.py``), the
defaults of :class:`GRINParams` where they are the model's: d_hidden 64, d_ff 64, ff_dropout 0,
n_layers 1, kernel_size 2 (hops per direction in the MPGRU gates, both directions), decoder_order
1, layer_norm false, global_att false, merge mlp, impute_only_holes true, d_emb 8, d_u 0. Training
(the engine's): window 36, batch 32, 160 batches per epoch, 300 epochs, patience 40, Adam lr 1e-3
with no weight decay, cosine annealing to 1e-4 over the epochs, gradient clipping at norm 5, masked
L1 loss on every observed cell (``scaled_target``), ``whiten_prob`` 0.05 (5% of the observed inputs
dropped per batch), graph: Gaussian kernel of distances (std of all distances) thresholded at 0.1.

Deviations from the official code:
* no node embedding (``d_emb`` 8 officially): a learned per-node vector cannot exist for a station
  unseen in training; hidden states start at zero as in the official code without embeddings;
* graph: the package's kNN graph with Gaussian weights (``k``, ``sigma_km``) instead of the
  thresholded kernel over all pairs; the transitions are normalised without the official epsilon;
* not implemented: ``layer_norm``, ``global_att``, ``decoder_order`` > 1, merges other than mlp
  (all off / mlp in the official AQI-36 configuration);
* ``anchor`` (off by default: ``none`` is the published model): with ``auto`` every estimate
  (first and second stage of each direction and the final one) is the anchor of
  :func:`~stgraph.models.anchors.anchor_prediction` plus a zero-initialised readout, and holes are
  filled with it inside the recurrence; an untrained model outputs exactly its anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.models.anchors import anchor_prediction, resolve_anchor
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.models.search import IntRange
from stgraph.nn.diffusion_conv import make_supports
from stgraph.nn.grin_cell import GRIL


@dataclass
class GRINParams:
    hidden_channels: int = 64  # d_hidden
    ff_channels: int = 64  # d_ff: hidden width of the merge MLP
    ff_dropout: float = 0.0
    num_layers: int = 1  # MPGRU cells stacked per direction
    kernel_size: int = 2  # diffusion hops per direction in the MPGRU gates
    dropout: float = 0.0  # between stacked cells
    impute_only_holes: bool = True  # evaluation: observed inputs are echoed in the final imputation
    k: int = 8  # graph in-neighbours per node
    sigma_km: float | None = None  # Gaussian kernel width; None: the mean kNN edge length
    anchor: str = "none"  # "none": the published model; "auto" etc.: residual over the anchor


class GRIN(StationModel):
    """Args:
        sizes: data-derived sizes (task ``krige`` or ``impute``). params: :class:`GRINParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns src (B, W, N_src, C_out) and
    tgt (B, W, N_tgt, C_out), with four ``aux`` estimates of the same shapes. Internally
    time-first and node-first: sequences (W, N, B, C).
    """

    search_space = {"hidden_channels": IntRange(16, 128, log=True), "kernel_size": IntRange(1, 3), "k": IntRange(4, 16)}
    tasks = frozenset({"krige", "impute", "reconstruct"})

    def __init__(self, sizes: DataSizes, params: GRINParams | None = None):
        super().__init__(sizes)
        p = self.params = params or GRINParams()
        for name in ("hidden_channels", "ff_channels", "num_layers", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"GRIN: {name} must be >= 1, got {getattr(p, name)}")
        if p.kernel_size < 0:
            raise ValueError(f"GRIN: kernel_size must be >= 0, got {p.kernel_size}")
        self.anchored = resolve_anchor(p.anchor, sizes) != "none"
        c_in, c_out, hid = sizes.in_channels, sizes.out_channels, p.hidden_channels
        self.targets = list(sizes.target_channels)
        self.covariates = [c for c in range(c_in) if c not in self.targets]
        n_cov = 2 * len(self.covariates)

        def direction() -> GRIL:
            return GRIL(c_out, n_cov, hid, p.num_layers, p.kernel_size, p.dropout, zero_readouts=self.anchored)

        self.fwd, self.bwd = direction(), direction()
        self.merge = nn.Sequential(
            nn.Linear(4 * hid + c_out, p.ff_channels),
            nn.ReLU(),
            nn.Dropout(p.ff_dropout),
            nn.Linear(p.ff_channels, c_out),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fwd.reset_parameters()
        self.bwd.reset_parameters()
        for lin in (self.merge[0], self.merge[3]):
            lin.reset_parameters()
        if self.anchored:
            nn.init.zeros_(self.merge[3].weight)
            nn.init.zeros_(self.merge[3].bias)

    def forward(self, batch: GraphBatch) -> Prediction:
        p = self.params
        ux, pos, n_src = union_inputs(batch)  # (B, W, N, 2 C_in): [x * m, m]
        n = ux.size(2)
        c_in = self.sizes.in_channels
        seq = ux.permute(1, 2, 0, 3)  # (W, N, B, 2 C_in)
        x = seq[..., self.targets]
        m = seq[..., [c_in + c for c in self.targets]] > 0
        u = seq[..., self.covariates + [c_in + c for c in self.covariates]] if self.covariates else None
        anchor = None
        if self.anchored:
            a = anchor_prediction(batch, self.sizes, p.anchor)
            anchor = torch.cat([a.src, a.tgt], dim=2).permute(1, 2, 0, 3).to(x.dtype)
        edge_index, edge_weight = union_graph(pos, p.k, p.sigma_km)
        sup = make_supports(edge_index, edge_weight, n, x.dtype)

        f2, f1, f_rep = self.fwd(x, m, u, sup, anchor)
        b2, b1, b_rep = self.bwd(x, m, u, sup, anchor, reverse=True)
        y = self.merge(torch.cat([f_rep, b_rep, m.to(x.dtype)], -1))
        if anchor is not None:
            y = y + anchor
        if p.impute_only_holes and not self.training:
            y = torch.where(m, x, y)

        def out(t: torch.Tensor) -> Prediction:
            return split_outputs(t.permute(2, 0, 1, 3), n_src)  # (W, N, B, C) -> (B, W, N, C)

        pred = out(y)
        pred.aux = [out(t) for t in (f2, b2, f1, b1)]
        return pred
