"""ST-PointFormer: attention over the observed (time, node) points of a window (DiffRecon, Sun et al. §IV-C).

Every observed spatiotemporal point (t, n) is embedded as the paper's eq. 14,

    e(t, n) = value(x_tn, mask_tn) + time(t) + position(lat/lon_n) + external(calendar_t, node channels_tn),

with a learnable time embedding (index within the window), a Fourier-feature MLP of the node's
position (east/north km from the nodes' centroid, divided by their radius) and a linear map of
the calendar encodings and optional per-node channels. The observed points go through
``num_self_layers`` multi-head self-attention layers (eqs. 15-21: attention, residual, LayerNorm,
ReLU feed-forward). Every cell of the window (observed or not) then forms a query from the same
embeddings without the value, plus the caller's per-cell features (``cell_feats``: the noisy
diffusion input, the conditional values, the diffusion-step embedding ...), and reads the encoded
point set through ``num_cross_layers`` cross-attention layers. The result is one
``d_model`` vector per cell.

Values of unobserved cells never enter: they are replaced by 0 before the value embedding and
their points are not keys. Only the observed points are gathered (padded to the batch's largest
count, with a key mask), so attention costs O(T·N · S) for S observed points per sample, through
``F.scaled_dot_product_attention`` (no (S, S) weights kept for the backward pass by the fused kernel).

Deviations from the paper, named:

* Graph adapter: the paper embeds grid cells and aligns the encoded points with the U-Net's
  downsampled map by stacking each subregion's points (eqs. 24-25). Here nodes are stations or
  grid cells with lat/lon, and the output stays per cell, (B, T, N, d_model); the denoiser fuses it
  with the intra-map encoder per node (e.g. concat + linear, the paper's eq. 13 ``S_intra ⊕ S_inter``).
* Query/key split: the paper's self-attention runs over all t·I·J ST-points; here the observed
  points attend to each other and every cell queries them (cross-attention), so a missing cell
  reads the observed set rather than carrying a placeholder value into the keys.
* A learned null key is always present, so a sample with no observed point still has a defined
  softmax (the cells then read only the null token) and attention can choose "nothing".
* The feed-forward sublayer has a residual connection and LayerNorm (standard post-LN
  Transformer); the paper's eq. 22 has neither and applies a ReLU after the second linear map.
* Position is a continuous lat/lon encoding rather than a learnable table per grid index, so the
  layer works for any node set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.nn.neural_knn import local_km


class LatLonEncoding(nn.Module):
    """(N, 2) latitude/longitude degrees -> (N, d) position embedding.

    East/north km from ``origin`` (default the nodes' mean lat/lon), divided by ``scale_km``
    (default the largest distance of a node from the origin, so u ∈ [-1, 1]²), then
    [u, sin(π 2^f u), cos(π 2^f u)] for f < num_frequencies, through a two-layer MLP. Give a
    fixed origin and scale when the same encoder sees different node sets that must agree.
    """

    def __init__(self, d: int, num_frequencies: int = 6, origin=None, scale_km: float | None = None):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32))
        self.origin = None if origin is None else torch.as_tensor(origin, dtype=torch.float32)
        self.scale_km = scale_km
        self.mlp = nn.Sequential(nn.Linear(2 + 4 * num_frequencies, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, pos: torch.Tensor, origin=None, scale_km: float | None = None) -> torch.Tensor:
        """``origin`` (2,) and ``scale_km`` override the module's frame for this call (e.g. the
        frame of another node set, so that these nodes are placed in it)."""
        if pos.dim() != 2 or pos.size(-1) != 2:
            raise ValueError(f"pos must be (N, 2) latitude/longitude degrees, got shape {tuple(pos.shape)}")
        pos = pos.double()  # float32 degrees carry ~0.5 m of rounding, visible at the finest frequency
        origin = origin if origin is not None else self.origin
        origin = pos.mean(0) if origin is None else torch.as_tensor(origin).to(pos)
        u = local_km(pos, origin)  # (N, 2)
        scale_km = scale_km if scale_km is not None else self.scale_km
        scale = u.norm(dim=-1).max().clamp_min(1e-3) if scale_km is None else scale_km
        u = (u / scale).to(self.freqs.dtype)
        phase = (u[..., None] * self.freqs).flatten(-2)  # (N, 2F)
        return self.mlp(torch.cat([u, phase.sin(), phase.cos()], -1))


class MaskedAttention(nn.Module):
    """Multi-head attention of ``query`` (B, L, d) over ``memory`` (B, S, d) with a key mask (B, S)
    (True = may be attended), through ``F.scaled_dot_product_attention``. -> (B, L, d)."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model={d} must be divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, lq, d = query.shape
        s, h = memory.size(1), self.heads
        q = self.q(query).view(b, lq, h, d // h).transpose(1, 2)  # (B, H, L, dh)
        k, v = self.kv(memory).view(b, s, 2, h, d // h).permute(2, 0, 3, 1, 4)  # (B, H, S, dh) each
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(o.transpose(1, 2).reshape(b, lq, d))


class AttentionLayer(nn.Module):
    """Post-LN Transformer layer: x = LN(x + MA(x, memory)); x = LN(x + FFN(x)), FFN with ReLU (paper eqs. 21-22)."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.attn = MaskedAttention(d, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, memory, key_mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


@dataclass
class PointMemory:
    """ST-PointFormer's encoded point set of a batch, reused at every diffusion step.

    Attributes:
        common: (B, T, N, d) the cells' embeddings without value (time + position + external).
        memory: (B, 1 + S, d) the null token and the encoded observed points (self-attention done).
        key_mask: (B, 1 + S) bool, True at real keys.
    """

    common: torch.Tensor
    memory: torch.Tensor
    key_mask: torch.Tensor


class STPointFormer(nn.Module):
    """Args:
        value_channels: C, value channels per cell.
        d_model: embedding width. heads: attention heads. d_ff: feed-forward width (default 2·d_model).
        num_self_layers: self-attention layers over the observed points.
        num_cross_layers: cross-attention layers, every cell -> observed points.
        time_features: width of the calendar encodings (6 for ``stgraph.data.encodings``; 0: none).
        node_features: E, per-node external channels (0: none).
        cell_features: D_c, width of ``cell_feats`` (0: none).
        max_steps: longest window (size of the learnable time embedding).
        num_frequencies: Fourier frequencies of the position encoding.
        dropout: attention / feed-forward dropout.

    Shapes:
        x: (B, T, N, C) values (anything where unobserved, NaN included); mask: (B, T, N, C) bool,
        a point (t, n) is observed where any channel is; pos: (N, 2) lat/lon degrees;
        time_enc: (B, T, time_features) or None; node_feats: (B, T, N, E) or None;
        cell_feats: (B, T, N, D_c) or None -> (B, T, N, d_model).
    """

    def __init__(
        self,
        value_channels: int = 1,
        d_model: int = 64,
        heads: int = 4,
        d_ff: int | None = None,
        num_self_layers: int = 2,
        num_cross_layers: int = 1,
        time_features: int = 6,
        node_features: int = 0,
        cell_features: int = 0,
        max_steps: int = 256,
        num_frequencies: int = 6,
        dropout: float = 0.0,
    ):
        super().__init__()
        d_ff = d_ff or 2 * d_model
        self.value_channels, self.d_model, self.max_steps = value_channels, d_model, max_steps
        self.time_features, self.node_features, self.cell_features = time_features, node_features, cell_features
        self.value_embed = nn.Linear(2 * value_channels, d_model)  # [x·mask, mask]
        self.time_embed = nn.Embedding(max_steps, d_model)
        self.pos_embed = LatLonEncoding(d_model, num_frequencies)
        ext = time_features + node_features
        self.ext_embed = nn.Linear(ext, d_model) if ext > 0 else None
        self.cell_embed = nn.Linear(cell_features, d_model) if cell_features > 0 else None
        self.null_token = nn.Parameter(torch.randn(d_model) * 0.02)
        self.self_layers = nn.ModuleList(AttentionLayer(d_model, heads, d_ff, dropout) for _ in range(num_self_layers))
        self.cross_layers = nn.ModuleList(
            AttentionLayer(d_model, heads, d_ff, dropout) for _ in range(num_cross_layers)
        )

    def _check(self, x, mask, pos, time_enc, node_feats, cell_feats) -> None:
        if x.dim() != 4 or x.size(-1) != self.value_channels:
            raise ValueError(f"x must be (B, T, N, C={self.value_channels}), got shape {tuple(x.shape)}")
        b, t, n, _ = x.shape
        if mask.shape != x.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor shaped like x {tuple(x.shape)}, got {tuple(mask.shape)}")
        if t > self.max_steps:
            raise ValueError(f"window of {t} steps exceeds max_steps={self.max_steps}")
        if pos.shape != (n, 2):
            raise ValueError(f"pos must be (N={n}, 2) lat/lon degrees, got shape {tuple(pos.shape)}")
        for name, v, want, width in (
            ("time_enc", time_enc, (b, t), self.time_features),
            ("node_feats", node_feats, (b, t, n), self.node_features),
            ("cell_feats", cell_feats, (b, t, n), self.cell_features),
        ):
            if width == 0 and v is not None:
                raise ValueError(f"{name} was given but the layer was built with 0 {name} channels")
            if width > 0 and (v is None or v.shape != (*want, width)):
                got = None if v is None else tuple(v.shape)
                raise ValueError(f"{name} must be {(*want, width)}, got {got}")

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        time_enc: torch.Tensor | None = None,
        node_feats: torch.Tensor | None = None,
        cell_feats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # encode checks the inputs, read checks cell_feats
        return self.read(self.encode(x, mask, pos, time_enc, node_feats), cell_feats)

    def encode(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        time_enc: torch.Tensor | None = None,
        node_feats: torch.Tensor | None = None,
    ) -> PointMemory:
        """x, mask (B, T, N, C); pos (N, 2); time_enc (B, T, F) or None; node_feats (B, T, N, E) or None."""
        b, t, n, _ = x.shape
        dummy = None if self.cell_embed is None else x.new_zeros(()).expand(b, t, n, self.cell_features)
        self._check(x, mask, pos, time_enc, node_feats, dummy)
        common = self.time_embed.weight[:t, None, :] + self.pos_embed(pos.to(x.device))[None]  # (T, N, d)
        common = common.expand(b, t, n, self.d_model)
        if self.ext_embed is not None:
            ext = []
            if time_enc is not None:
                ext.append(time_enc.to(x.dtype)[:, :, None, :].expand(b, t, n, -1))
            if node_feats is not None:
                ext.append(node_feats.to(x.dtype))
            common = common + self.ext_embed(torch.cat(ext, -1))
        values = torch.where(mask, x, torch.zeros_like(x))
        points = (common + self.value_embed(torch.cat([values, mask.to(x.dtype)], -1))).reshape(b, t * n, -1)
        observed = mask.any(-1).reshape(b, t * n)  # (B, T·N)
        count = observed.sum(1)  # (B,)
        s = int(count.max())
        order = torch.argsort((~observed).to(torch.int8), dim=1, stable=True)[:, :s]  # observed points first
        memory = points.gather(1, order[..., None].expand(b, s, self.d_model))  # (B, S, d)
        key_mask = torch.arange(s, device=x.device)[None] < count[:, None]  # (B, S)
        memory = torch.cat([self.null_token.expand(b, 1, -1), memory], 1)  # (B, 1 + S, d)
        key_mask = torch.cat([key_mask.new_ones(b, 1), key_mask], 1)
        for layer in self.self_layers:
            memory = layer(memory, memory, key_mask)
        return PointMemory(common, memory, key_mask)

    def read(self, points: PointMemory, cell_feats: torch.Tensor | None = None, reps: int = 1) -> torch.Tensor:
        """Every cell of ``reps`` copies of the batch (sample-major, as the samplers fold them)
        queries the encoded points. cell_feats: (reps·B, T, N, D_c) or None -> (reps·B, T, N, d)."""
        b, t, n, d = points.common.shape
        common = points.common if reps == 1 else points.common.repeat(reps, 1, 1, 1)
        if self.cell_embed is not None:
            if cell_feats is None or cell_feats.shape != (reps * b, t, n, self.cell_features):
                got = None if cell_feats is None else tuple(cell_feats.shape)
                raise ValueError(f"cell_feats must be {(reps * b, t, n, self.cell_features)}, got {got}")
            common = common + self.cell_embed(cell_feats.to(common.dtype))
        elif cell_feats is not None:
            raise ValueError("cell_feats was given but the layer was built with 0 cell_feats channels")
        queries = common.reshape(reps * b, t * n, d)
        memory, key_mask = points.memory, points.key_mask
        if reps > 1:
            memory, key_mask = memory.repeat(reps, 1, 1), key_mask.repeat(reps, 1)
        for layer in self.cross_layers:
            queries = layer(queries, memory, key_mask)
        return queries.view(reps * b, t, n, d)
