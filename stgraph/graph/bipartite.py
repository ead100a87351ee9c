"""Coarse -> fine bipartite graph: which coarse nodes feed each fine node, and how features cross it.

DiffRecon's stage 2 (Sun et al.) infers a fine map from the completed coarse one. Here coarse nodes
are visible stations or coarse grid cells, fine nodes are hidden stations or fine grid cells, and
every fine node receives edges from its ``k`` nearest coarse nodes (great-circle order, through the
package's kNN on unit-sphere xyz; :func:`stgraph.graph.build.bipartite_knn_graph`).

* :func:`bipartite_knn` builds the edges and their WGS84 lengths.
* :func:`idw_edge_weights` gives inverse-distance weights, normalised per fine node.
* :class:`BipartiteAttention` gives learned weights (a softmax per fine node): the query comes from
  the fine node's position, the key from the coarse node's features and the coarse -> fine offset;
  an inverse-distance prior ``-p·log d`` (learnable power p) is added to every score and the query's
  last layer starts at zero, so at initialisation the weights are exactly IDW with power ``p``.
* :func:`carry_to_fine` is the weighted scatter-mean that carries (B, T, Nc, D) features to
  (B, T, Nf, D).

The paper does not spell out how coarse features reach fine cells (on a grid its U-Net decoder
upsamples); this bipartite carry is the package's graph adapter of that step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import softmax

from stgraph.geo import EARTH_RADIUS_KM, latlon_to_xyz
from stgraph.graph.build import bipartite_knn_graph
from stgraph.graph.weights import inverse_distance


def bipartite_knn(pos_coarse, pos_fine, k: int, *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges from each fine node to its ``k`` nearest coarse nodes.

    Args:
        pos_coarse: (Nc, 2) latitude/longitude in degrees. pos_fine: (Nf, 2).
        k: coarse neighbours per fine node (capped at Nc).
        backend: kNN backend (:mod:`stgraph.graph.knn`; default torch-cluster when importable).
    Returns:
        edge_index (2, Nf·k) long, row 0 = coarse index, row 1 = fine index, grouped by fine node
        (nearest first); dist_km (Nf·k,) float32 WGS84 geodesic length of each edge.
    """
    if int(k) < 1:
        raise ValueError(f"bipartite_knn: k must be >= 1, got {k}")
    g = bipartite_knn_graph(pos_coarse, pos_fine, int(k), weight="none", backend=backend)
    return g.edge_index, g.edge_attr.squeeze(-1)


def _check_edges(edge_index: torch.Tensor, num_coarse: int | None, num_fine: int) -> None:
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must be (2, E) [coarse, fine], got shape {tuple(edge_index.shape)}")
    if edge_index.numel() == 0:
        return
    if edge_index.min() < 0:
        raise ValueError("edge_index has negative node indices")
    if int(edge_index[1].max()) >= num_fine:
        raise ValueError(f"edge_index row 1 (fine) indexes node {int(edge_index[1].max())} but num_fine={num_fine}")
    if num_coarse is not None and int(edge_index[0].max()) >= num_coarse:
        raise ValueError(
            f"edge_index row 0 (coarse) indexes node {int(edge_index[0].max())} but there are {num_coarse} coarse nodes"
        )


def idw_edge_weights(
    edge_index: torch.Tensor, dist_km: torch.Tensor, num_fine: int, power: float = 2.0, eps_km: float = 1e-3
) -> torch.Tensor:
    """Inverse-distance weights ``1 / max(d, eps)^power``, normalised to sum to 1 per fine node.

    Args:
        edge_index: (2, E) [coarse, fine]. dist_km: (E,) edge lengths. num_fine: Nf.
    Returns:
        (E,) weights; a fine node at distance < ``eps_km`` from a coarse node puts almost all
        its weight on it (exactly ``1 / (1 + sum_j (eps/d_j)^power)``).
    """
    _check_edges(edge_index, None, num_fine)
    if dist_km.shape != (edge_index.size(1),):
        raise ValueError(f"dist_km must be (E,) = ({edge_index.size(1)},), got shape {tuple(dist_km.shape)}")
    w = inverse_distance(dist_km.double(), power, eps_km)
    den = torch.zeros(num_fine, dtype=w.dtype, device=w.device).index_add_(0, edge_index[1], w)
    return (w / den[edge_index[1]]).to(dist_km.dtype)


def _carry_static(h: torch.Tensor, edge_index: torch.Tensor, weights: torch.Tensor, num_fine: int) -> torch.Tensor:
    """(E,) weights: one sparse (Nf, Nc) product, so no (B, T, E, D) gather is materialised."""
    b, t, nc, d = h.shape
    order = torch.argsort(edge_index[1] * nc + edge_index[0])  # row-major (fine, coarse): coalesced COO
    idx, w = edge_index[[1, 0]][:, order], weights[order].to(h.dtype)
    mat = torch.sparse_coo_tensor(idx, w, (num_fine, nc), is_coalesced=True, check_invariants=False)
    flat = h.permute(2, 0, 1, 3).reshape(nc, b * t * d)  # (Nc, B·T·D)
    num = torch.sparse.mm(mat, flat).view(num_fine, b, t, d).permute(1, 2, 0, 3)
    den = torch.zeros(num_fine, dtype=h.dtype, device=h.device).index_add(0, edge_index[1], weights.to(h.dtype))
    return num / torch.where(den > 0, den, torch.ones_like(den))[:, None]


def carry_to_fine(h: torch.Tensor, edge_index: torch.Tensor, weights: torch.Tensor, num_fine: int) -> torch.Tensor:
    """Weighted scatter-mean of coarse features onto fine nodes: out_f = Σ_e w_e h_c(e) / Σ_e w_e.

    Args:
        h: (B, T, Nc, D) coarse features.
        edge_index: (2, E) [coarse, fine] (e.g. from :func:`bipartite_knn`).
        weights: (E,) static non-negative weights, or (B, T, E) / (B, 1, E) per sample and step
            (e.g. :class:`BipartiteAttention`). Need not be normalised; the mean divides by their sum.
        num_fine: Nf.
    Returns:
        (B, T, Nf, D); a fine node with no edge (or zero total weight) gets 0.
    """
    if h.dim() != 4:
        raise ValueError(f"carry_to_fine: h must be (B, T, Nc, D), got shape {tuple(h.shape)}")
    _check_edges(edge_index, h.size(2), num_fine)
    e = edge_index.size(1)
    if weights.shape[-1] != e or weights.dim() not in (1, 3):
        raise ValueError(f"carry_to_fine: weights must be (E,) or (B, T, E) with E={e}, got {tuple(weights.shape)}")
    if weights.dim() == 1:
        return _carry_static(h, edge_index, weights, num_fine)
    b, t, _, d = h.shape
    w = weights.to(h.dtype).expand(b, t, e)
    msg = h[:, :, edge_index[0], :] * w[..., None]  # (B, T, E, D)
    num = h.new_zeros(b, t, num_fine, d).index_add(2, edge_index[1], msg)
    den = h.new_zeros(b, t, num_fine).index_add(2, edge_index[1], w)
    return num / torch.where(den > 0, den, torch.ones_like(den))[..., None]


class BipartiteAttention(nn.Module):
    """Learned coarse -> fine weights, a softmax over each fine node's coarse neighbours.

    score_e = <q(pos_f), key(h_c, offset_cf)> / sqrt(hidden) - p · log(max(d_cf, eps) / scale)

    q is an MLP of the fine node's position (its 3-D chord offset in km from the coarse nodes'
    centroid, divided by the coarse nodes' radius around it); key is a linear map of the coarse
    features plus an MLP of the coarse -> fine chord offset and distance (divided by ``scale``). The query's
    last layer is zero at initialisation, so the weights start as IDW with power ``idw_power``.

    Args:
        channels: D, coarse feature width. hidden: attention width.
        idw_power: initial p (learned, kept positive). scale_km: length that normalises edge
            offsets and distances (None: the mean edge length of each call). eps_km: distance floor.

    Shapes:
        h: (B, T, Nc, D); pos_coarse: (Nc, 2), pos_fine: (Nf, 2) degrees; edge_index (2, E);
        dist_km (E,) -> weights (B, T, E), summing to 1 over each fine node's edges.

    Cost: the feature term gathers a (B, T, E, D) tensor (as does :func:`carry_to_fine` with
    per-sample weights): B·T·E·D floats, e.g. 57 M on a 32 × 48 fine grid with k = 4, B·T = 288
    and D = 32, where fixed IDW weights gather none.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 32,
        idw_power: float = 2.0,
        scale_km: float | None = None,
        eps_km: float = 1e-3,
    ):
        super().__init__()
        if idw_power <= 0:
            raise ValueError(f"BipartiteAttention: idw_power must be positive, got {idw_power}")
        self.hidden, self.scale_km, self.eps_km = hidden, scale_km, eps_km
        self.query = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.key_feat = nn.Linear(channels, hidden)
        self.key_geo = nn.Sequential(nn.Linear(4, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.log_power = nn.Parameter(torch.tensor(math.log(idw_power)))
        nn.init.zeros_(self.query[-1].weight)
        nn.init.zeros_(self.query[-1].bias)

    def forward(
        self,
        h: torch.Tensor,
        pos_coarse: torch.Tensor,
        pos_fine: torch.Tensor,
        edge_index: torch.Tensor,
        dist_km: torch.Tensor,
    ) -> torch.Tensor:
        nf = pos_fine.size(0)
        _check_edges(edge_index, pos_coarse.size(0), nf)
        if h.dim() != 4 or h.size(2) != pos_coarse.size(0):
            raise ValueError(f"h must be (B, T, Nc={pos_coarse.size(0)}, D), got shape {tuple(h.shape)}")
        src, dst = edge_index
        if self.scale_km is not None:
            scale = float(self.scale_km)
        else:
            scale = float(dist_km.mean().clamp_min(self.eps_km)) if dist_km.numel() else 1.0
        xc = latlon_to_xyz(pos_coarse.double()) * EARTH_RADIUS_KM  # (Nc, 3) km; float64: offsets of metres
        xf = latlon_to_xyz(pos_fine.double()) * EARTH_RADIUS_KM
        centre = xc.mean(0)
        extent = (xc - centre).norm(dim=-1).max().clamp_min(self.eps_km)  # the coarse nodes' radius
        q = self.query(((xf - centre) / extent).to(h.dtype))  # (Nf, H)
        d = dist_km.to(h.dtype)
        offset = ((xf[dst] - xc[src]) / scale).to(h.dtype)
        geo = torch.cat([offset, (d / scale)[:, None]], -1)  # (E, 4)
        q_e = q[dst]  # (E, H)
        # <q, W h_c + g_e> without the (B, T, E, H) tensor: (W^T q_e)·h_c + q_e·g_e
        q_feat = q_e @ self.key_feat.weight  # (E, D)
        score = (h[:, :, src, :] * q_feat).sum(-1) + (q_e * (self.key_geo(geo) + self.key_feat.bias)).sum(-1)
        score = score / math.sqrt(self.hidden) - self.log_power.exp() * torch.log(d.clamp_min(self.eps_km) / scale)
        return softmax(score, dst, num_nodes=nf, dim=-1)
