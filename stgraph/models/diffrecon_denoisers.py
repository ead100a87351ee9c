"""DiffRecon's two noise predictors on a station graph (seed 002 §IV-B..D; the model is
:mod:`stgraph.models.diffrecon`).

* :class:`CoarseDenoiser` (Diffusion-C, stage 1, on the visible / coarse nodes): ε̂ at every
  (t, n) cell of the window from the intra-map encoder (:class:`~stgraph.nn.intra_map_gnn.IntraMapGNN`
  over the station kNN graph, the paper's U-Net encoder) fused with ST-PointFormer
  (:class:`~stgraph.nn.st_pointformer.STPointFormer`, attention of every cell to the observed
  points) by concatenation and a linear map (eq. 13, ``S_intra ⊕ S_inter``), then a small MLP
  decoder. Each cell's input is CSDI's: the noisy value (0 at the conditioning cells), the
  conditioning value and mask, plus an anchor estimate (an interpolation of the conditioning
  cells, PriSTI's conditional feature), the diffusion-step embedding and the calendar. The
  conditioning cells are the same at every step and for every sample, so ST-PointFormer's point
  set is encoded once per batch (:meth:`STPointFormer.encode`) and only read at each step.
* :class:`FineDenoiser` (Diffusion-F, stage 2, on the fine / hidden nodes): the completed coarse
  series are embedded (eq. 26, with the calendar) and encoded by T-PatternNet
  (:class:`~stgraph.nn.t_patternnet.TPatternNet`), carried to the fine nodes over the bipartite
  coarse → fine kNN graph (:mod:`stgraph.graph.bipartite`: inverse-distance or learned attention
  weights), and a small head predicts ε̂ at the fine nodes from the noisy fine value, the carried
  features, the IDW of the completed coarse values at the fine node (an anchor channel), the step
  embedding and the calendar. The conditioning does not change along the reverse process, so
  :meth:`FineDenoiser.condition` runs once per sampling and only the head runs at each step.

Deviations from the paper, named (the model's docstring lists the model-level ones):

* Stage 1's intra-map encoder is a station-graph GNN (residual Chebyshev convolutions, optional
  graph U-Net levels) instead of a 2-D U-Net, and its output stays per node; the decoder is an MLP
  per cell (the paper's U-Net decoder is not specified beyond eq. 13).
* Stage 2's denoiser: the paper fuses a U-Net on the fine map with T-PatternNet; fine stations
  have no grid, so the fine nodes' own structure is a per-node head: ``num_blocks`` residual blocks, each a
  temporal convolution (kernel 3, over the window) and a feed-forward layer, after the carried
  coarse features are added. Fine nodes do not see each other (a fine station set may be a single
  station); the coarse → fine carry is where space enters.
* The anchor channels (stage 1: an interpolation of the conditioning cells; stage 2: IDW of the
  completed coarse values) are additions of this package (PriSTI, Liu et al. 2023, showed that
  conditioning on an interpolation is what helps a CSDI-style imputer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.diffusion import DiffusionStepEmbedding
from stgraph.graph.bipartite import BipartiteAttention, bipartite_knn, carry_to_fine, idw_edge_weights
from stgraph.nn.intra_map_gnn import IntraMapGNN, IntraMapGraph
from stgraph.nn.st_pointformer import PointMemory, STPointFormer
from stgraph.nn.t_patternnet import TPatternNet

TIME_FEATURES = 6  # the calendar encodings of stgraph.data.encodings (GraphBatch.x_time)
CARRIES = ("idw", "attention")


def _zero_linear(i: int, o: int) -> nn.Linear:
    """A linear map whose weight and bias start at 0 (CSDI zero-initialises its output projection)."""
    lin = nn.Linear(i, o)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class _ZeroOut(nn.Module):
    """Decoder: LayerNorm -> SiLU -> Linear(d, d) -> SiLU -> Linear(d, C), the last one zero at
    initialisation (so ε̂ = 0 at the start, as CSDI's output projection)."""

    def __init__(self, d: int, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.hidden = nn.Linear(d, d)
        self.out = _zero_linear(d, c)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.hidden.reset_parameters()
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.hidden(F.silu(self.norm(h)))))


class CoarseDenoiser(nn.Module):
    """Stage 1's ε predictor.

    Args:
        value_channels: C, the target channels (the values diffused).
        node_features: E, per-cell external channels of the coarse nodes (the non-target input
            channels and their masks; 0: none).
        d_model: width. heads: attention heads. num_layers: ST-PointFormer self- and cross-attention
            layers, and Chebyshev blocks per GNN level.
        cheb_k: Chebyshev terms. gnn_levels: graph U-Net depth (1: stacked graph convolutions).
        num_steps: T, the diffusion steps. step_dim: width of the sinusoidal step table.
        max_steps: the longest window. pointformer: False = the "no ST-PointFormer" ablation (GNN only).

    Shapes (B' = batch, samples folded in):
        x_t (B', W, N, C) noisy values (0 at the conditioning cells); t (B',) steps;
        cond (B', W, N, C) conditioning values (0 elsewhere); cond_mask (B', W, N, C) bool;
        anchor (B', W, N, C); time_enc (B', W, 6); node_feats (B', W, N, E) or None;
        graph: :class:`IntraMapGraph` of the N nodes; points: :meth:`encode_points` of the
        conditions (positions (N, 2) enter there) -> ε̂ (B', W, N, C).
    """

    def __init__(
        self,
        value_channels: int,
        node_features: int,
        d_model: int,
        heads: int,
        num_layers: int,
        cheb_k: int,
        gnn_levels: int,
        num_steps: int,
        step_dim: int,
        max_steps: int,
        pointformer: bool = True,
    ):
        super().__init__()
        c, d = value_channels, d_model
        self.value_channels, self.node_features = c, node_features
        self.step_embed = DiffusionStepEmbedding(num_steps, step_dim, d)
        self.cell_in = nn.Linear(4 * c, d)  # [x_t, cond, cond_mask, anchor]
        self.time_in = nn.Linear(TIME_FEATURES, d)
        self.node_in = nn.Linear(node_features, d) if node_features else None
        self.intra = IntraMapGNN(d, num_layers, cheb_k, gnn_levels)
        self.inter = (
            STPointFormer(
                value_channels=c,
                d_model=d,
                heads=heads,
                num_self_layers=num_layers,
                num_cross_layers=num_layers,
                time_features=TIME_FEATURES,
                node_features=node_features,
                cell_features=4 * c + d,
                max_steps=max_steps,
            )
            if pointformer
            else None
        )
        self.fuse = nn.Linear(2 * d, d) if pointformer else None  # eq. 13: S_intra ⊕ S_inter
        self.decoder = _ZeroOut(d, c)

    def encode_points(
        self,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        pos: torch.Tensor,
    ) -> PointMemory | None:
        """ST-PointFormer's encoding of the conditioning cells (B, W, N, C) (None without it)."""
        return None if self.inter is None else self.inter.encode(cond, cond_mask, pos, time_enc, node_feats)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        anchor: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        graph: IntraMapGraph,
        points: PointMemory | None,
    ) -> torch.Tensor:
        """x_t, t as the class docstring with B' = reps·B; the conditions (B', ...) tiled already;
        ``points`` from :meth:`encode_points` of the B untiled conditions (reps = B' / B)."""
        b, w, n, _ = x_t.shape
        cells = torch.cat([x_t, cond, cond_mask.to(x_t.dtype), anchor], -1)  # (B', W, N, 4C)
        step = self.step_embed(t)  # (B', d)
        z = self.cell_in(cells) + step[:, None, None, :] + self.time_in(time_enc)[:, :, None, :]
        if self.node_in is not None:
            z = z + self.node_in(node_feats)
        h = self.intra(z, graph)  # (B', W, N, d)
        if self.inter is not None:
            if points is None:
                raise ValueError("CoarseDenoiser: ST-PointFormer needs the encoded points (encode_points)")
            cell_feats = torch.cat([cells, step[:, None, None, :].expand(b, w, n, -1)], -1)
            s_inter = self.inter.read(points, cell_feats, reps=b // points.common.size(0))  # (B', W, N, d)
            h = self.fuse(torch.cat([h, s_inter], -1))
        return self.decoder(h)


@dataclass
class FineCondition:
    """What stage 2 is conditioned on, computed once per completion.

    Attributes:
        feats: (B', W, N_f, d) T-PatternNet features of the completed coarse series, carried to the fine nodes.
        anchor: (B', W, N_f, C) IDW of the completed coarse values at the fine nodes.
        time_enc: (B', W, 6) calendar encodings.
    """

    feats: torch.Tensor
    anchor: torch.Tensor
    time_enc: torch.Tensor


class _TemporalBlock(nn.Module):
    """x + Conv1d_time(SiLU(LN(x))); x + FFN(LN(x)); over (B', W, N, d), nodes folded into the batch."""

    def __init__(self, d: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, w, n, d = x.shape
        h = F.silu(self.norm1(x)).permute(0, 2, 3, 1).reshape(b * n, d, w)
        x = x + self.conv(h).view(b, n, d, w).permute(0, 3, 1, 2)
        return x + self.ffn(self.norm2(x))


def bipartite_idw(
    pos_coarse: torch.Tensor, pos_fine: torch.Tensor, k: int, power: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The coarse -> fine kNN graph and its inverse-distance weights.

    Args:
        pos_coarse: (N_c, 2), pos_fine: (N_f, 2) lat/lon degrees. k: coarse neighbours per fine
            node (capped at N_c). power: IDW power.
    Returns:
        edge_index (2, E) [coarse, fine], edge lengths (E,) km, IDW weights (E,) (sum 1 per fine node).
    """
    edge_index, dist = bipartite_knn(pos_coarse, pos_fine, min(k, pos_coarse.size(0)))
    edge_index, dist = edge_index.to(pos_coarse.device), dist.to(pos_coarse.device)
    return edge_index, dist, idw_edge_weights(edge_index, dist, pos_fine.size(0), power)


def idw_to_fine(values: torch.Tensor, pos_coarse: torch.Tensor, pos_fine: torch.Tensor, k: int, power: float):
    """(B', W, N_c, C) complete coarse values -> (B', W, N_f, C) their IDW over each fine node's k nearest."""
    edge_index, _, idw = bipartite_idw(pos_coarse, pos_fine, k, power)
    return carry_to_fine(values, edge_index, idw, pos_fine.size(0))


class FineDenoiser(nn.Module):
    """Stage 2's ε predictor.

    Args:
        value_channels: C. d_model: width. num_blocks: TimesBlocks of T-PatternNet and blocks of the head.
        top_k: T-PatternNet periods per block. num_kernels: its inception kernels.
        num_steps: T. step_dim: width of the sinusoidal step table.
        fine_k: coarse neighbours per fine node. carry: ``idw`` (fixed inverse-distance weights) or
            ``attention`` (:class:`BipartiteAttention`, IDW at initialisation). idw_power: IDW power.

    Shapes: :meth:`condition`: completed (B', W, N_c, C), time_enc (B', W, 6), pos_coarse (N_c, 2),
    pos_fine (N_f, 2) -> :class:`FineCondition`; :meth:`forward`: x_t (B', W, N_f, C), t (B',),
    a FineCondition of the same B' -> ε̂ (B', W, N_f, C).
    """

    def __init__(
        self,
        value_channels: int,
        d_model: int,
        num_blocks: int,
        top_k: int,
        num_kernels: int,
        num_steps: int,
        step_dim: int,
        fine_k: int,
        carry: str = "idw",
        idw_power: float = 2.0,
    ):
        super().__init__()
        if carry not in CARRIES:
            raise ValueError(f"FineDenoiser: carry must be one of {CARRIES}, got {carry!r}")
        c, d = value_channels, d_model
        self.fine_k, self.idw_power = fine_k, idw_power
        self.coarse_in = nn.Linear(c + TIME_FEATURES, d)  # eq. 26, with the external (calendar) features
        self.patterns = TPatternNet(d, num_blocks=num_blocks, top_k=top_k, num_kernels=num_kernels)
        self.attention = BipartiteAttention(d, hidden=d, idw_power=idw_power) if carry == "attention" else None
        self.step_embed = DiffusionStepEmbedding(num_steps, step_dim, d)
        self.fine_in = nn.Linear(2 * c, d)  # [x_t, anchor]
        self.time_in = nn.Linear(TIME_FEATURES, d)
        self.blocks = nn.ModuleList(_TemporalBlock(d) for _ in range(num_blocks))
        self.decoder = _ZeroOut(d, c)

    def condition(
        self, completed: torch.Tensor, time_enc: torch.Tensor, pos_coarse: torch.Tensor, pos_fine: torch.Tensor
    ) -> FineCondition:
        b, w, _, _ = completed.shape
        nf = pos_fine.size(0)
        edge_index, dist, idw = bipartite_idw(pos_coarse, pos_fine, self.fine_k, self.idw_power)
        cal = time_enc.to(completed.dtype)[:, :, None, :].expand(-1, -1, completed.size(2), -1)
        h = self.patterns(self.coarse_in(torch.cat([completed, cal], -1)))  # (B', W, N_c, d)
        weights = idw if self.attention is None else self.attention(h, pos_coarse, pos_fine, edge_index, dist)
        feats = carry_to_fine(h, edge_index, weights, nf)
        anchor = carry_to_fine(completed, edge_index, idw, nf)
        return FineCondition(feats, anchor, time_enc)

    def reset_parameters(self) -> None:
        """Every sub-module's own reset, then the attention carry back to exact IDW (zero query)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()
        self.decoder.reset_parameters()
        if self.attention is not None:
            nn.init.zeros_(self.attention.query[-1].weight)
            nn.init.zeros_(self.attention.query[-1].bias)
            with torch.no_grad():
                self.attention.log_power.fill_(math.log(self.idw_power))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: FineCondition) -> torch.Tensor:
        z = self.fine_in(torch.cat([x_t, cond.anchor], -1)) + cond.feats
        z = z + self.step_embed(t)[:, None, None, :] + self.time_in(cond.time_enc.to(x_t.dtype))[:, :, None, :]
        for block in self.blocks:
            z = block(z)
        return self.decoder(z)
