"""SPIN-H's hierarchical spatiotemporal attention layer (Marisca, Cini, Alippi, NeurIPS 2022, §4.3):
SPIN's attention through a few latent tokens per node instead of every pair of steps.

Each node i carries its W step tokens h_i^t and K latent tokens z_i^k. One layer:

1. ``z' = zh_self(z ← h)``: each node's latent tokens attend to its own step tokens (only observed
   steps with ``mask_temporal``); root weight, LayerNorm.
2. ``h' = hz_self(h ← z')``: each step token attends to its node's latent tokens; root weight.
3. Along every edge j -> i: ``z_ji = zh_cross(z'_i ← h'_j)`` (the receiver's latent tokens attend
   to the sender's step tokens, only observed ones while ``mask_spatial``; root weight, LayerNorm)
   and ``h_ji = hz_cross(h'_i ← z_ji)`` (the receiver's step tokens attend to those latent tokens,
   sigmoid gates instead of a softmax; root weight); without ``update_z_cross``, h'_i attends to the
   sender's z'_j directly and z' is kept.
4. ``h_out = LayerNorm(Σ_j h_ji + W_h h)``, ``z_out = LayerNorm(Σ_j z_ji + W_z z)`` (sums over the
   in-edges; ``W_h``, ``W_z`` linear skips of the layer's inputs, zero bias).

Cost per layer O(B · W · K · (N + E) · d) instead of SPIN's O(B · W² · E · d).

Checked against the authors' implementation in torch-spatiotemporal 0.9.5
(``tsl.nn.layers.graph_convs.HierarchicalSpatiotemporalCrossAttention``, default spatial
aggregation ``add``); that code's optional ``aggr='softmax'`` re-weighting of the edges is not
implemented here (named in :mod:`stgraph.models.spin_h`).

Shapes: h (B, W, N, d_h), z (B, K, N, d_z), observed (B, W, N) bool, edge_index (2, E) (source j,
receiver i) -> (h_out (B, W, N, d_h), z_out (B, K, N, d_z)).
"""

from __future__ import annotations

import torch
from torch import nn

from stgraph.nn.temporal_additive_attention import AdditiveTemporalAttention


class HierarchicalSpatiotemporalAttention(nn.Module):
    """One SPIN-H layer (see the module docstring).

    Args:
        h_channels: width of the step tokens. z_channels: width of the latent tokens.
        msg_layers: hidden blocks of every message MLP. update_z_cross: the latent tokens are
            rebuilt from the neighbours' step tokens along each edge (the official default).
        norm: LayerNorm the outputs.
    """

    def __init__(self, h_channels: int, z_channels: int, msg_layers: int = 1, update_z_cross: bool = True,
                 norm: bool = True):  # fmt: skip
        super().__init__()
        dh, dz = h_channels, z_channels
        self.zh_self = AdditiveTemporalAttention(dz, msg_layers, src_channels=dh, root_weight=True, norm=True)
        self.hz_self = AdditiveTemporalAttention(dh, msg_layers, src_channels=dz, root_weight=True)
        self.zh_cross = (
            AdditiveTemporalAttention(dz, msg_layers, src_channels=dh, root_weight=True, norm=True)
            if update_z_cross
            else None
        )
        self.hz_cross = AdditiveTemporalAttention(dh, msg_layers, src_channels=dz, reweigh=None, root_weight=True)
        self.h_skip, self.z_skip = nn.Linear(dh, dh), nn.Linear(dz, dz)
        self.h_norm = nn.LayerNorm(dh) if norm else None
        self.z_norm = nn.LayerNorm(dz) if norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for att in (self.zh_self, self.hz_self, self.zh_cross, self.hz_cross):
            if att is not None:
                att.reset_parameters()
        for lin in (self.h_skip, self.z_skip):
            lin.reset_parameters()
            nn.init.zeros_(lin.bias)
        for norm in (self.h_norm, self.z_norm):
            if norm is not None:
                norm.reset_parameters()

    def forward(
        self,
        h: torch.Tensor,
        z: torch.Tensor,
        observed: torch.Tensor,
        edge_index: torch.Tensor,
        *,
        mask_spatial: bool,
        mask_temporal: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z_self = self.zh_self(z, h, observed if mask_temporal else None)  # (B, K, N, d_z)
        h_self = self.hz_self(h, z_self)  # (B, W, N, d_h)
        src, dst = edge_index
        h_out = torch.zeros_like(h)
        z_out = torch.zeros_like(z_self) if self.zh_cross is not None else z_self
        if src.numel():
            if self.zh_cross is not None:
                keys = observed[:, :, src] if mask_spatial else None
                z_edge = self.zh_cross(z_self[:, :, dst], h_self[:, :, src], keys)  # (B, K, E, d_z)
                z_out = z_out.index_add(2, dst, z_edge)
            else:
                z_edge = z_self[:, :, src]
            h_edge = self.hz_cross(h_self[:, :, dst], z_edge)  # (B, W, E, d_h)
            h_out = h_out.index_add(2, dst, h_edge)
        h_out = h_out + self.h_skip(h)
        z_out = z_out + self.z_skip(z)
        if self.h_norm is not None:
            h_out, z_out = self.h_norm(h_out), self.z_norm(z_out)
        return h_out, z_out
