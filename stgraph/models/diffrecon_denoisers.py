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
from stgraph.nn.csdi_residual import CSDIBody
from stgraph.nn.fine_mixer import FineLayout, FineMixer, fine_layout
from stgraph.nn.intra_map_gnn import IntraMapGNN, IntraMapGraph
from stgraph.nn.neural_knn import local_km
from stgraph.nn.st_pointformer import LatLonEncoding, PointMemory, STPointFormer
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
        graph: :class:`IntraMapGraph` of the N nodes; points: :meth:`condition` of the
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

    def condition(
        self,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        anchor: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        pos: torch.Tensor,
        graph: IntraMapGraph,
    ) -> PointMemory | None:
        """ST-PointFormer's encoding of the conditioning cells (B, W, N, C) (None without it); the
        anchor and graph enter at each step here (the signature is shared with
        :meth:`CSDICoarseDenoiser.condition`)."""
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
        ``points`` from :meth:`condition` of the B untiled conditions (reps = B' / B)."""
        b, w, n, _ = x_t.shape
        cells = torch.cat([x_t, cond, cond_mask.to(x_t.dtype), anchor], -1)  # (B', W, N, 4C)
        step = self.step_embed(t)  # (B', d)
        z = self.cell_in(cells) + step[:, None, None, :] + self.time_in(time_enc)[:, :, None, :]
        if self.node_in is not None:
            z = z + self.node_in(node_feats)
        h = self.intra(z, graph)  # (B', W, N, d)
        if self.inter is not None:
            if points is None:
                raise ValueError("CoarseDenoiser: ST-PointFormer needs the encoded points (condition)")
            cell_feats = torch.cat([cells, step[:, None, None, :].expand(b, w, n, -1)], -1)
            s_inter = self.inter.read(points, cell_feats, reps=b // points.common.size(0))  # (B', W, N, d)
            h = self.fuse(torch.cat([h, s_inter], -1))
        return self.decoder(h)


@dataclass
class CoarseCondition:
    """What :class:`CSDICoarseDenoiser` is conditioned on, computed once per batch of conditions.

    Attributes:
        side: (B, W, N, d) side information of every cell (calendar, window position, station
            position, conditioning cells and anchor, passed through the intra-map GNN and
            ST-PointFormer).
    """

    side: torch.Tensor


class CSDICoarseDenoiser(nn.Module):
    """Stage 1's ε predictor at CSDI's size: :class:`~stgraph.nn.csdi_residual.CSDIBody` (gated
    residual layers, a time and a station transformer over the noisy state) whose side
    information is DiffRecon's conditioning — the intra-map GNN and ST-PointFormer over the
    conditioning cells, computed once per batch by :meth:`condition` (they do not see the noisy
    state, so sampling runs them once and only the body at each step).

    Args:
        value_channels: C. node_features: E (0: none). d_model: width of the conditioning
            encoders (the side width). heads: ST-PointFormer heads. num_layers: ST-PointFormer
            layers and Chebyshev blocks per GNN level. cheb_k, gnn_levels: the GNN's.
        num_steps: T. step_dim: step table width (CSDI: 128). max_steps: the longest window.
        pointformer: False = no ST-PointFormer (the GNN alone conditions).
        channels, residual_layers, residual_heads: the body's (CSDI: 64, 4, 8).
        conditional: PriSTI's layers: attention with the side information as queries and keys,
            and message passing over the visible stations' graph (the GNN's Laplacian).

    Deviations from CSDI, named: CSDI's side information is a 128-wide sinusoidal embedding of
    the step within the window, a learned 16-wide embedding of each series (station) and the
    conditioning mask; a learned per-station embedding cannot serve a station never seen, so the
    station enters through its position (ST-PointFormer's lat/lon encoding, also in the GNN's
    input), and the side also carries the conditioning values, their anchor (PriSTI's
    conditional feature) and the calendar. The body's input is CSDI's: the conditioning value and
    the noisy value of each cell (0 where the other is defined).

    Shapes: as :class:`CoarseDenoiser`; ``points`` is the :class:`CoarseCondition` of
    :meth:`condition` (B untiled; B' = reps·B at each step).
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
        channels: int = 64,
        residual_layers: int = 4,
        residual_heads: int = 8,
        conditional: bool = False,
    ):
        super().__init__()
        c, d = value_channels, d_model
        self.conditional = conditional
        self.value_channels, self.node_features = c, node_features
        self.cell_in = nn.Linear(3 * c, d)  # [cond, cond_mask, anchor]
        self.time_in = nn.Linear(TIME_FEATURES, d)
        self.window_pos = nn.Embedding(max_steps, d)  # the step within the window (CSDI's time embedding)
        self.station_pos = LatLonEncoding(d)  # where CSDI learns one embedding per series
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
                cell_features=3 * c,
                max_steps=max_steps,
            )  # fmt: skip
            if pointformer
            else None
        )
        self.fuse = nn.Linear(2 * d if pointformer else d, d)
        self.body = CSDIBody(
            2 * c, c, channels=channels, side_channels=d, layers=residual_layers, heads=residual_heads,
            num_steps=num_steps, step_dim=step_dim, conditional=conditional,
        )  # fmt: skip

    def condition(
        self,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        anchor: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        pos: torch.Tensor,
        graph: IntraMapGraph,
    ) -> CoarseCondition:
        """The side information of the (B, W, N, C) conditions (see :class:`CoarseCondition`)."""
        b, w, n, _ = cond.shape
        cells = torch.cat([cond, cond_mask.to(cond.dtype), anchor], -1)  # (B, W, N, 3C)
        z = self.cell_in(cells) + self.time_in(time_enc.to(cond.dtype))[:, :, None, :]
        z = z + self.window_pos.weight[:w, None, :] + self.station_pos(pos.to(cond.device)).to(cond.dtype)[None, None]
        if self.node_in is not None:
            z = z + self.node_in(node_feats)
        h = self.intra(z, graph)  # (B, W, N, d)
        if self.inter is not None:
            points = self.inter.encode(cond, cond_mask, pos, time_enc, node_feats)
            h = torch.cat([h, self.inter.read(points, cells)], -1)
        return CoarseCondition(self.fuse(h))

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
        points: CoarseCondition | None,
    ) -> torch.Tensor:
        """ε̂ (B', W, N, C) for x_t (B', ...); cond tiled to B' already, ``points`` untiled (B)."""
        if not isinstance(points, CoarseCondition):
            raise ValueError("CSDICoarseDenoiser: give the condition computed by condition()")
        side = points.side
        reps = x_t.size(0) // side.size(0)
        if reps > 1:
            side = side.repeat(reps, 1, 1, 1)
        laplacian = graph.laplacians[0].to(x_t.device) if self.conditional else None
        return self.body(torch.cat([cond, x_t], -1), t, side, laplacian)


@dataclass
class FineCondition:
    """What stage 2 is conditioned on, computed once per completion.

    Attributes:
        feats: (B', W, N_f, d) T-PatternNet features of the completed coarse series, carried to the
            fine nodes, plus each fine node's own features (position, static covariates).
        anchor: (B', W, N_f, C) IDW of the completed coarse values at the fine nodes.
        time_enc: (B', W, 6) calendar encodings.
        layout: the fine nodes' :class:`~stgraph.nn.fine_mixer.FineLayout` (None: no mixing).
    """

    feats: torch.Tensor
    anchor: torch.Tensor
    time_enc: torch.Tensor
    layout: FineLayout | None = None


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
        tpatternnet: False = the "no T-PatternNet" ablation (the coarse series' per-cell embedding
            is carried as it is, with no multi-period blocks).
        position: give each fine node its position (lat/lon encoding in the coarse nodes' frame,
            so a node's code does not depend on which other nodes are fine) and its static covariates.
        mixing: fine nodes exchange information after each head block
            (:class:`~stgraph.nn.fine_mixer.FineMixer`: the U-Net on a lattice, a kNN graph otherwise).
        num_static: S, static covariates per fine node (0: none).
        window: W, steps per window (the lattice mixer's U-Net takes the window's steps as channels).

    Shapes: :meth:`condition`: completed (B', W, N_c, C), time_enc (B', W, 6), pos_coarse (N_c, 2),
    pos_fine (N_f, 2), static_fine (N_f, S) or None -> :class:`FineCondition`; :meth:`forward`:
    x_t (B', W, N_f, C), t (B',), a FineCondition of the same B' -> ε̂ (B', W, N_f, C).
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
        tpatternnet: bool = True,
        position: bool = True,
        mixing: bool = True,
        num_static: int = 0,
        window: int = 1,
    ):
        super().__init__()
        if carry not in CARRIES:
            raise ValueError(f"FineDenoiser: carry must be one of {CARRIES}, got {carry!r}")
        c, d = value_channels, d_model
        self.fine_k, self.idw_power = fine_k, idw_power
        self.coarse_in = nn.Linear(c + TIME_FEATURES, d)  # eq. 26, with the external (calendar) features
        self.patterns = (
            TPatternNet(d, num_blocks=num_blocks, top_k=top_k, num_kernels=num_kernels) if tpatternnet else None
        )
        self.position = LatLonEncoding(d) if position else None
        self.static_in = nn.Linear(num_static, d) if position and num_static else None
        self.mixers = nn.ModuleList(FineMixer(d, window) for _ in range(num_blocks)) if mixing else None
        self.attention = BipartiteAttention(d, hidden=d, idw_power=idw_power) if carry == "attention" else None
        self.step_embed = DiffusionStepEmbedding(num_steps, step_dim, d)
        self.fine_in = nn.Linear(2 * c, d)  # [x_t, anchor]
        self.time_in = nn.Linear(TIME_FEATURES, d)
        self.blocks = nn.ModuleList(_TemporalBlock(d) for _ in range(num_blocks))
        self.decoder = _ZeroOut(d, c)

    def condition(
        self,
        completed: torch.Tensor,
        time_enc: torch.Tensor,
        pos_coarse: torch.Tensor,
        pos_fine: torch.Tensor,
        static_fine: torch.Tensor | None = None,
        layout: FineLayout | None = None,
    ) -> FineCondition:
        """``layout``: :func:`~stgraph.nn.fine_mixer.fine_layout` of ``pos_fine`` if already known
        (it depends on positions only), else computed here when mixing."""
        nf = pos_fine.size(0)
        edge_index, dist, idw = bipartite_idw(pos_coarse, pos_fine, self.fine_k, self.idw_power)
        cal = time_enc.to(completed.dtype)[:, :, None, :].expand(-1, -1, completed.size(2), -1)
        h = self.coarse_in(torch.cat([completed, cal], -1))  # (B', W, N_c, d)
        if self.patterns is not None:
            h = self.patterns(h)
        weights = idw if self.attention is None else self.attention(h, pos_coarse, pos_fine, edge_index, dist)
        feats = carry_to_fine(h, edge_index, weights, nf)
        if self.position is not None:
            pc = pos_coarse.detach().double()
            origin = pc.mean(0)
            scale = float(local_km(pc, origin).norm(dim=-1).max().clamp_min(1e-3))
            own = self.position(pos_fine, origin=origin, scale_km=scale).to(feats.dtype)  # (N_f, d)
            if self.static_in is not None:
                if static_fine is None:
                    raise ValueError("FineDenoiser: built with static covariates, got static_fine=None")
                own = own + self.static_in(static_fine.to(feats.dtype))
            feats = feats + own
        if self.mixers is not None and layout is None:
            layout = fine_layout(pos_fine)
        anchor = carry_to_fine(completed, edge_index, idw, nf)
        return FineCondition(feats, anchor, time_enc, layout)

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
        for i, block in enumerate(self.blocks):
            z = block(z)
            if self.mixers is not None:
                z = self.mixers[i](z, cond.layout)
        return self.decoder(z)
