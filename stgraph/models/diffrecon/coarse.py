"""DiffRecon's stage-1 noise predictors (Diffusion-C, on the visible / coarse nodes; Sun et al.,
"From Incomplete Coarse-Grained to Complete Fine-Grained", §IV-B..C).

* :class:`CoarseDenoiser`: ε̂ at every (t, n) cell of the window from the intra-map encoder
  (:class:`~stgraph.nn.intra_map_gnn.IntraMapGNN` over the station kNN graph, the paper's U-Net
  encoder) fused with ST-PointFormer (:class:`~stgraph.nn.st_pointformer.STPointFormer`, attention
  of every cell to the observed points) by concatenation and a linear map (eq. 13,
  ``S_intra ⊕ S_inter``), then a small MLP decoder. Each cell's input is CSDI's: the noisy value
  (0 at the conditioning cells), the conditioning value and mask, plus an guide estimate (an
  interpolation of the conditioning cells, PriSTI's conditional feature), the diffusion-step
  embedding and the calendar. The conditioning cells are the same at every step and for every
  sample, so ST-PointFormer's point set is encoded once per batch (:meth:`STPointFormer.encode`).
* :class:`CSDICoarseDenoiser`: CSDI's gated residual body (:class:`~stgraph.nn.csdi_residual.CSDIBody`)
  over the noisy state, with the same intra-map GNN ⊕ ST-PointFormer encoding of the conditions as
  side information (:class:`CoarseCondition`, computed once per batch).

Deviations from the paper, named (the model's docstring lists the model-level ones): the
intra-map encoder is a station-graph GNN (residual Chebyshev convolutions, optional graph U-Net
levels) instead of a 2-D U-Net, and its output stays per node; the decoder is an MLP per cell
(the paper's U-Net decoder is not specified beyond eq. 13). The guide channel is an addition of
this package (PriSTI, Liu et al. 2023, showed that conditioning on an interpolation is what helps
a CSDI-style imputer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.diffusion import DiffusionStepEmbedding
from stgraph.models.diffrecon.layers import TIME_FEATURES, ZeroOutDecoder
from stgraph.nn.csdi_residual import CSDIBody
from stgraph.nn.intra_map_gnn import IntraMapGNN, IntraMapGraph
from stgraph.nn.st_pointformer import LatLonEncoding, PointMemory, STPointFormer


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
        guide (B', W, N, C); time_enc (B', W, 6); node_feats (B', W, N, E) or None;
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
        self.cell_in = nn.Linear(4 * c, d)  # [x_t, cond, cond_mask, guide]
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
        self.decoder = ZeroOutDecoder(d, c)

    def condition(
        self,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        guide: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        pos: torch.Tensor,
        graph: IntraMapGraph,
    ) -> PointMemory | None:
        """ST-PointFormer's encoding of the conditioning cells (B, W, N, C) (None without it); the
        guide and graph enter at each step here (the signature is shared with
        :meth:`CSDICoarseDenoiser.condition`)."""
        return None if self.inter is None else self.inter.encode(cond, cond_mask, pos, time_enc, node_feats)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        guide: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        graph: IntraMapGraph,
        points: PointMemory | None,
    ) -> torch.Tensor:
        """x_t, t as the class docstring with B' = reps·B; the conditions (B', ...) tiled already;
        ``points`` from :meth:`condition` of the B untiled conditions (reps = B' / B)."""
        b, w, n, _ = x_t.shape
        cells = torch.cat([x_t, cond, cond_mask.to(x_t.dtype), guide], -1)  # (B', W, N, 4C)
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
            position, conditioning cells and guide, passed through the intra-map GNN and
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
    input), and the side also carries the conditioning values, their guide (PriSTI's
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
        self.cell_in = nn.Linear(3 * c, d)  # [cond, cond_mask, guide]
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
        guide: torch.Tensor,
        time_enc: torch.Tensor,
        node_feats: torch.Tensor | None,
        pos: torch.Tensor,
        graph: IntraMapGraph,
    ) -> CoarseCondition:
        """The side information of the (B, W, N, C) conditions (see :class:`CoarseCondition`)."""
        b, w, n, _ = cond.shape
        cells = torch.cat([cond, cond_mask.to(cond.dtype), guide], -1)  # (B, W, N, 3C)
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
        guide: torch.Tensor,
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
