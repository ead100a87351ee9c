"""DiffRecon's stage-2 noise predictor (Diffusion-F, on the fine / hidden nodes; Sun et al.,
§IV-D).

:class:`FineDenoiser`: the completed coarse series are embedded (eq. 26, with the calendar) and
encoded by T-PatternNet (:class:`~stgraph.nn.t_patternnet.TPatternNet`), carried to the fine nodes
over the bipartite coarse → fine kNN graph (:mod:`stgraph.graph.bipartite`: inverse-distance or
learned attention weights), and a head of residual temporal blocks predicts ε̂ at the fine nodes
from the noisy fine value, the carried features, the IDW (or, on grids, optionally the bicubic
interpolation) of the completed coarse values at the fine node (a guide channel), the fine
node's position and static covariates, the step embedding and the calendar; after each block
the fine nodes exchange information (:class:`~stgraph.nn.fine_mixer.FineMixer`: the paper's U-Net
when they fill a lattice, a kNN graph convolution otherwise). The conditioning does not change
along the reverse process, so :meth:`FineDenoiser.condition` runs once per sampling and only the
head runs at each step.

Deviations from the paper, named: the paper fuses a U-Net on the fine map with T-PatternNet over
the whole map as channels; here T-PatternNet runs per coarse node and reaches the fine nodes
through the bipartite carry, and fine stations with no lattice mix over a kNN graph. The IDW
guide channel is an addition of this package (as stage 1's, after PriSTI); its bicubic form on
grids is the conditioning of image super-resolution diffusion (SR3 conditions on the bicubic
upsampling of the low-resolution image), which the paper's U-Net stage may or may not use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.diffusion import DiffusionStepEmbedding
from stgraph.graph.bipartite import BipartiteAttention, bipartite_knn, carry_to_fine, idw_edge_weights
from stgraph.models.baselines.upsample import bicubic_upsample
from stgraph.models.diffrecon.layers import TIME_FEATURES, ZeroOutDecoder
from stgraph.nn.fine_mixer import FineLayout, FineMixer, fine_layout
from stgraph.nn.neural_knn import local_km
from stgraph.nn.st_pointformer import LatLonEncoding
from stgraph.nn.t_patternnet import TPatternNet

CARRIES = ("idw", "attention")
FINE_GUIDES = ("idw", "bicubic")


@dataclass
class FineCondition:
    """What stage 2 is conditioned on, computed once per completion.

    Attributes:
        feats: (B', W, N_f, d) T-PatternNet features of the completed coarse series, carried to the
            fine nodes, plus each fine node's own features (position, static covariates).
        guide: (B', W, N_f, C) the completed coarse values at the fine nodes by the denoiser's
            ``guide`` (IDW or bicubic).
        time_enc: (B', W, 6) calendar encodings.
        layout: the fine nodes' :class:`~stgraph.nn.fine_mixer.FineLayout` (None: no mixing).
    """

    feats: torch.Tensor
    guide: torch.Tensor
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


def guide_to_fine(values: torch.Tensor, pos_coarse: torch.Tensor, pos_fine: torch.Tensor, kind: str, k: int,
                  power: float) -> torch.Tensor:  # fmt: skip
    """Stage 2's guide: (B', W, N_c, C) complete coarse values -> (B', W, N_f, C) by ``kind``
    (``idw``: :func:`idw_to_fine` over the k nearest, power ``power``; ``bicubic``:
    :func:`~stgraph.models.baselines.upsample.bicubic_upsample`, the ``bicubic`` baseline's)."""
    if kind == "bicubic":
        return bicubic_upsample(values, pos_coarse, pos_fine)
    return idw_to_fine(values, pos_coarse, pos_fine, k, power)


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
        guide: the guide channel and skip centre at the fine nodes: ``idw`` (of the ``fine_k``
            nearest completed coarse nodes) or ``bicubic`` (of the completed coarse map; the coarse
            nodes must be the cells of a full regular grid: the grid protocol).

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
        guide: str = "idw",
    ):
        super().__init__()
        if carry not in CARRIES:
            raise ValueError(f"FineDenoiser: carry must be one of {CARRIES}, got {carry!r}")
        if guide not in FINE_GUIDES:
            raise ValueError(f"FineDenoiser: guide must be one of {FINE_GUIDES}, got {guide!r}")
        self.guide_kind = guide
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
        self.fine_in = nn.Linear(2 * c, d)  # [x_t, guide]
        self.time_in = nn.Linear(TIME_FEATURES, d)
        self.blocks = nn.ModuleList(_TemporalBlock(d) for _ in range(num_blocks))
        self.decoder = ZeroOutDecoder(d, c)

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
        if self.guide_kind == "bicubic":
            guide = bicubic_upsample(completed, pos_coarse, pos_fine)
        else:
            guide = carry_to_fine(completed, edge_index, idw, nf)
        return FineCondition(feats, guide, time_enc, layout)

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
        z = self.fine_in(torch.cat([x_t, cond.guide], -1)) + cond.feats
        z = z + self.step_embed(t)[:, None, None, :] + self.time_in(cond.time_enc.to(x_t.dtype))[:, :, None, :]
        for i, block in enumerate(self.blocks):
            z = block(z)
            if self.mixers is not None:
                z = self.mixers[i](z, cond.layout)
        return self.decoder(z)
