"""Intra-map encoder on a station graph: DiffRecon's U-Net encoder (Sun et al. §IV-B) as a graph U-Net.

The paper extracts intra-map features of each map with the encoder of a U-Net (eq. 11). Stations
are not on a lattice, so here the U-Net intra-map encoder becomes a multi-scale GNN over the
station graph: each time step's map is encoded by stacked residual
Chebyshev graph convolutions (:class:`stgraph.nn.cheb_conv.ChebConv`) over the symmetric station
kNN graph with Gaussian edge weights, batched over (B, T) through one shared sparse Laplacian.

With ``levels > 1`` it is a graph U-Net: after each level's blocks the nodes are pooled by
clustering (a square lat/lon voxel grid sized for about N / ``pool_ratio`` non-empty cells; each
cluster is the mean of its members and sits at their mean position, with its own kNN graph), and
on the way back each cluster's features are copied to its members, concatenated with the skip
connection and merged by a linear map. The clustering depends only on positions, so it is
computed once (:func:`intra_map_graph`) and reused. On a regular grid the 2-D U-Net
(:mod:`stgraph.nn.unet2d`) is the closer match to the paper.

Deviations from the paper, named: graph convolutions and voxel-cluster pooling replace 2-D
convolutions and strided down/up-sampling; the output is full resolution (B, T, N, D), one vector per
node, rather than the encoder's downsampled map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stgraph.graph.build import station_knn_graph
from stgraph.nn.cheb_conv import ChebConv, fast_laplacian, scaled_laplacian
from stgraph.nn.neural_knn import local_km


@dataclass
class IntraMapGraph:
    """Graph pyramid of one node set.

    Attributes:
        laplacians: per level l, the (N_l, N_l) scaled Laplacian of the level's kNN graph (sparse,
            or dense where that is faster: :func:`~stgraph.nn.cheb_conv.fast_laplacian`).
        assign: per level l < L-1, (N_l,) long: the level-(l+1) cluster of each level-l node.
        num_nodes: N_l per level.
    """

    laplacians: list[torch.Tensor]
    assign: list[torch.Tensor]
    num_nodes: list[int]

    @property
    def levels(self) -> int:
        return len(self.laplacians)


def voxel_clusters(pos: torch.Tensor, num_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster (N, 2) lat/lon degrees on a square east/north km grid of about ``num_clusters`` cells
    over their bounding box. Returns assign (N,) long (clusters numbered in cell order, so the
    result does not depend on the node order) and the clusters' mean positions (M, 2)."""
    xy = local_km(pos.double(), pos.double().mean(0))
    lo, extent = xy.min(0).values, (xy.max(0).values - xy.min(0).values)
    longest = float(extent.max())
    if longest <= 0:  # all nodes coincide
        return torch.zeros(pos.size(0), dtype=torch.long, device=pos.device), pos.mean(0, keepdim=True)
    area = float(extent.clamp_min(longest / max(num_clusters, 1)).prod())
    cell = max(math.sqrt(area / max(num_clusters, 1)), 1e-9)
    ij = ((xy - lo) / cell).floor().long()
    key = ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]
    _, assign = torch.unique(key, return_inverse=True)
    m = int(assign.max()) + 1
    count = torch.zeros(m, dtype=pos.dtype, device=pos.device).index_add_(0, assign, torch.ones_like(pos[:, 0]))
    centres = torch.zeros(m, 2, dtype=pos.dtype, device=pos.device).index_add_(0, assign, pos) / count[:, None]
    return assign, centres


def intra_map_graph(
    pos, k: int = 8, levels: int = 1, pool_ratio: float = 4.0, backend: str | None = None
) -> IntraMapGraph:
    """Build the pyramid for :class:`IntraMapGNN`.

    Args:
        pos: (N, 2) latitude/longitude degrees. k: neighbours per node (symmetric kNN graph).
        levels: 1 = single scale; each further level pools about ``pool_ratio`` nodes into one.
            Stops early when a level has fewer than 2 clusters; the module checks the depth.
    """
    if levels < 1 or pool_ratio <= 1:
        raise ValueError(f"intra_map_graph: need levels >= 1 and pool_ratio > 1, got {levels}, {pool_ratio}")
    pos = torch.as_tensor(pos, dtype=torch.float64)  # cluster centres in float64: node order must not matter
    laplacians, assign, sizes = [], [], []
    for level in range(levels):  # a handful of levels
        n = pos.size(0)
        g = station_knn_graph(pos, k, symmetric=True, weight="gaussian", backend=backend)
        laplacians.append(fast_laplacian(scaled_laplacian(g.edge_index, g.edge_weight, n)))
        sizes.append(n)
        if level == levels - 1:
            break
        a, centres = voxel_clusters(pos, max(1, round(n / pool_ratio)))
        if centres.size(0) < 2 or centres.size(0) == n:
            break
        assign.append(a)
        pos = centres
    return IntraMapGraph(laplacians, assign, sizes)


class _ChebBlock(nn.Module):
    """x + ChebConv(SiLU(LayerNorm(x))) over the node dimension of (..., N, D)."""

    def __init__(self, channels: int, K: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = ChebConv(channels, channels, K)

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        return x + self.conv(nn.functional.silu(self.norm(x)), laplacian=laplacian)


def _pool(x: torch.Tensor, assign: torch.Tensor, m: int) -> torch.Tensor:
    """(B, T, N, D) -> (B, T, M, D): mean of each cluster's members."""
    count = torch.zeros(m, dtype=x.dtype, device=x.device).index_add_(0, assign, torch.ones_like(assign, dtype=x.dtype))
    return x.new_zeros(*x.shape[:2], m, x.size(-1)).index_add(2, assign, x) / count[:, None]


class IntraMapGNN(nn.Module):
    """Args:
        channels: D (input = output width).
        num_layers: residual Chebyshev blocks per level, on the way down and (levels > 1) up.
        K: Chebyshev terms (K - 1 hops per block).
        levels: depth of the graph U-Net (1: plain stacked graph convolutions).

    Shapes:
        x: (B, T, N, D); graph: :class:`IntraMapGraph` of the N nodes with at least ``levels``
        levels -> (B, T, N, D).
    """

    def __init__(self, channels: int, num_layers: int = 2, K: int = 2, levels: int = 1):
        super().__init__()
        if levels < 1 or num_layers < 1:
            raise ValueError(f"IntraMapGNN needs levels >= 1 and num_layers >= 1, got {levels}, {num_layers}")
        self.levels = levels

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(_ChebBlock(channels, K) for _ in range(num_layers))

        self.down = nn.ModuleList(blocks() for _ in range(levels))
        self.up = nn.ModuleList(blocks() for _ in range(levels - 1))
        self.merge = nn.ModuleList(nn.Linear(2 * channels, channels) for _ in range(levels - 1))

    def forward(self, x: torch.Tensor, graph: IntraMapGraph) -> torch.Tensor:
        if x.dim() != 4 or x.size(2) != graph.num_nodes[0]:
            raise ValueError(f"x must be (B, T, N={graph.num_nodes[0]}, D), got shape {tuple(x.shape)}")
        if graph.levels < self.levels:
            raise ValueError(
                f"IntraMapGNN has {self.levels} levels but the graph only {graph.levels} "
                "(too few nodes to pool further); build it with fewer levels"
            )
        skips, h = [], x
        for level in range(self.levels):
            lap = graph.laplacians[level].to(x.device)
            for block in self.down[level]:
                h = block(h, lap)
            if level < self.levels - 1:
                skips.append(h)
                h = _pool(h, graph.assign[level].to(x.device), graph.num_nodes[level + 1])
        for level in reversed(range(self.levels - 1)):
            h = h[:, :, graph.assign[level].to(x.device)]  # unpool: each member gets its cluster's features
            h = self.merge[level](torch.cat([h, skips[level]], -1))
            lap = graph.laplacians[level].to(x.device)
            for block in self.up[level]:
                h = block(h, lap)
        return h
