"""Running a graph network inductively: visible and target stations as one graph.

Transductive GNNs (DCRNN, ST-GCN, IGNNK) learn on a fixed node set. To predict at stations with
no history, the target stations join the graph as nodes whose inputs are zero and whose mask
channels say so; edges come from positions only, rebuilt for each batch's node set, so a station
never seen in training is just another node. Training hides random training stations the same
way (the engine's node masking), so the network learns to fill them. No per-node parameters.

Graph layers that aggregate these inputs should use the *masked* transitions
(:mod:`stgraph.nn.diffusion_conv`) with :func:`union_observed`: a node then averages its observed
neighbours only (weights renormalised over them, as IDW does) instead of counting a missing or
hidden neighbour as a zero, which the plain random walk (divide by the total edge weight) does.
"""

from __future__ import annotations

import torch

from stgraph.graph.build import station_knn_graph
from stgraph.graph.weights import gaussian_kernel
from stgraph.models.base import GraphBatch, Prediction


def union_inputs(batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Visible then target stations as one node set, with one mask channel per input channel.

    Returns:
        x: (B, W, N_src + N_tgt, 2 * C_in): ``[values * mask, mask]``; target rows are all zero.
        pos: (N_src + N_tgt, 2) latitude/longitude of the nodes.
        n_src: the number of visible nodes (the first ``n_src`` rows).
    """
    b, w, n_src, c = batch.x.shape
    n_tgt = batch.pos_tgt.size(0)
    m = batch.x_mask.to(batch.x.dtype)
    x = torch.cat([batch.x * m, m], dim=-1)
    x = torch.cat([x, x.new_zeros(b, w, n_tgt, 2 * c)], dim=2)
    return x, torch.cat([batch.pos_src, batch.pos_tgt]), n_src


def union_observed(batch: GraphBatch) -> torch.Tensor:
    """Which of :func:`union_inputs`' features are observed: (B, W, N_src + N_tgt, 2 C_in) bool.

    A value channel is observed where its mask is True (never at a target node); a mask channel
    is observed everywhere (that a cell is missing is itself known).
    """
    b, w, _, c = batch.x.shape
    n_tgt = batch.pos_tgt.size(0)
    m = torch.cat([batch.x_mask, torch.ones_like(batch.x_mask)], dim=-1)
    tgt = torch.cat([batch.x_mask.new_zeros(b, w, n_tgt, c), batch.x_mask.new_ones(b, w, n_tgt, c)], dim=-1)
    return torch.cat([m, tgt], dim=2)


def union_graph(pos: torch.Tensor, k: int, sigma_km: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed kNN graph of the node set: each node receives from its ``k`` nearest nodes.

    Args:
        pos: (N, 2) latitude/longitude in degrees.
        k: in-neighbours per node (capped at N - 1).
        sigma_km: Gaussian kernel width; None = the mean edge length. (DCRNN takes the std of all
            pairwise distances; over kNN edges only the std is small next to the lengths and
            would leave weights near zero.)
    Returns:
        edge_index: (2, E) rows (source j, receiver i); edge_weight: (E,) ``exp(-(d/sigma)^2)``.
    """
    if pos.size(0) < 2:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device), torch.zeros(0, device=pos.device)
    g = station_knn_graph(pos.detach().cpu(), min(k, pos.size(0) - 1), weight="none")
    dist = g.edge_attr.squeeze(-1)
    weight = gaussian_kernel(dist, max(float(dist.mean()) if sigma_km is None else sigma_km, 1e-6))
    return g.edge_index.to(pos.device), weight.to(pos.device)


def split_outputs(y: torch.Tensor, n_src: int) -> Prediction:
    """(B, H, N_src + N_tgt, C) -> Prediction(src, tgt)."""
    return Prediction(y[:, :, :n_src], y[:, :, n_src:])
