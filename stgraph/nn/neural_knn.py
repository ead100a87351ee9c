"""Neural kNN: learned interpolation from visible stations to locations without history.

Edges are rebuilt at every forward pass by kNN in a *learned* space: keys are each visible
station's position joined with a learned embedding of its encoded history, queries a target's
position joined with a learned embedding of its position (and static covariates); targets have
no history. Weights over the k neighbours are a softmax of

    score_ij = -p · log(d_ij) + gate · (-|key_j - query_i|² / temperature) + s(offset_ij)

with a learnable power p (initialised at ``idw_power``), a learnable gate (initialised at 0) and
a learned function s of the geographic offset (initialised at 0). At initialisation the layer is
exactly inverse-distance weighting over the geographically nearest stations; training on hidden
training stations moves it from there. Messages are the neighbour's prediction plus a learned
correction (initialised at 0) from its features and the offset. kNN selection is discrete, but
every score on the chosen edges is differentiable, so gradients reach the query and key networks
(through the gate).

``exclude_self=True`` runs it station to station: the queries are the visible stations
themselves (``pos_tgt`` is ``pos_src``) and each is estimated from its k nearest *other*
stations in the learned space (k + 1 are searched; the station itself, or else the farthest
candidate, is dropped), as AQ-Net does for the visible stations' missing cells.

A model that anchors its estimate elsewhere (AQ-Net with ``anchor`` on) treats this layer's
IDW start as one term of a zero-initialised residual; see ``stgraph.models.aqnet``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from stgraph.geo import EARTH_RADIUS_KM
from stgraph.graph.knn import knn


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


def local_km(pos: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """(…, 2) lat/lon degrees -> (…, 2) east/north km from ``origin`` (2,) (equirectangular;
    accurate to < 1 % over a city or region, which is what offsets between neighbours need)."""
    lat0 = torch.deg2rad(origin[0])
    d = torch.deg2rad(pos - origin)
    return torch.stack([d[..., 1] * torch.cos(lat0), d[..., 0]], -1) * EARTH_RADIUS_KM


class NeuralKNNInterpolation(MessagePassing):
    """Args:
        feature_channels: F, encoded features per visible station.
        value_channels: V, flattened predictions per station (horizon × out channels).
        static_channels: S, static covariates per station (0 if none).
        key_channels: width of the learned kNN space.
        hidden_channels: width of the score/correction networks.
        k: neighbours per target (capped at the number of visible stations).
        scale_km: length scale that normalises positions and offsets.
        idw_power: initial power p of the inverse-distance prior (the public AQ-Net code uses 1).
        backend: kNN backend (default torch-cluster).

    Shapes:
        z_src: (B, N_src, F); y_src: (B, N_src, V); pos_src: (N_src, 2); pos_tgt: (N_tgt, 2);
        static_*: (N, S) or None -> (B, N_tgt, V). With ``exclude_self``, N_tgt = N_src; a
        query with no other station (N_src = 1) gets 0.
    """

    def __init__(
        self,
        feature_channels: int,
        value_channels: int,
        static_channels: int = 0,
        key_channels: int = 16,
        hidden_channels: int = 64,
        k: int = 20,
        scale_km: float = 50.0,
        idw_power: float = 1.0,
        backend: str | None = None,
    ):
        super().__init__(aggr="add", node_dim=0)
        self.k, self.scale_km, self.backend = k, scale_km, backend
        self.key_net = _mlp(feature_channels + 2 + static_channels, hidden_channels, key_channels)
        self.query_net = _mlp(2 + static_channels, hidden_channels, key_channels)
        self.geo_score = _mlp(3, hidden_channels, 1)
        self.correction = _mlp(feature_channels + 3, hidden_channels, value_channels)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.gate = nn.Parameter(torch.zeros(()))
        self.idw_power = idw_power
        self.log_power = nn.Parameter(torch.zeros(()))
        self.last_edges: tuple[torch.Tensor, torch.Tensor] | None = None  # (edge_index, weights) of the last forward

    def reset_parameters(self) -> None:
        for net in (self.key_net, self.query_net, self.geo_score, self.correction):
            for m in net:
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        for last in (self.correction[-1], self.geo_score[-1]):  # start as plain IDW of the neighbours
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        nn.init.zeros_(self.log_temperature)
        nn.init.zeros_(self.gate)
        with torch.no_grad():
            self.log_power.fill_(float(torch.log(torch.tensor(max(self.idw_power, 1e-3)))))

    def forward(
        self,
        z_src,
        y_src,
        pos_src,
        pos_tgt,
        static_src=None,
        static_tgt=None,
        k: int | None = None,
        *,
        exclude_self: bool = False,
    ):
        b, n_src, _ = z_src.shape
        if exclude_self and pos_tgt.size(0) != n_src:
            raise ValueError("exclude_self: the queries must be the visible stations (pos_tgt = pos_src)")
        n_tgt = pos_tgt.size(0)
        origin = pos_src.mean(0)
        p_src, p_tgt = local_km(pos_src, origin) / self.scale_km, local_km(pos_tgt, origin) / self.scale_km
        key_in = [z_src, p_src.expand(b, n_src, 2)]
        query_in = [p_tgt]
        if static_src is not None:
            key_in.append(static_src.expand(b, n_src, -1))
            query_in.append(static_tgt)
        keys = self.key_net(torch.cat(key_in, -1)).reshape(b * n_src, -1)  # (B*N_src, K)
        query = self.query_net(torch.cat(query_in, -1))  # (N_tgt, K): targets have no history
        queries = query.expand(b, n_tgt, -1).reshape(b * n_tgt, -1)
        batch_src = torch.arange(b, device=z_src.device).repeat_interleave(n_src)
        batch_tgt = torch.arange(b, device=z_src.device).repeat_interleave(n_tgt)
        src_pos = p_src.repeat(b, 1)  # (B*N_src, 2)
        tgt_pos = p_tgt.repeat(b, 1)
        with torch.no_grad():  # edges in the learned space [position, sqrt|gate|·embedding], every forward
            w = self.gate.abs().sqrt()
            points, targets = torch.cat([src_pos, w * keys], -1), torch.cat([tgt_pos, w * queries], -1)
            if exclude_self:
                k_self = min(k or self.k, n_src - 1)
                edge_index = self._edges_without_self(points, targets, k_self, batch_src, batch_tgt)
            else:
                edge_index = knn(
                    points, targets, min(k or self.k, n_src), batch_x=batch_src, batch_y=batch_tgt, backend=self.backend
                )
        out = self.propagate(
            edge_index,
            keys=(keys, queries),
            z=(z_src.reshape(b * n_src, -1), None),
            y=(y_src.reshape(b * n_src, -1), None),
            pos=(src_pos, tgt_pos),
            size=(b * n_src, b * n_tgt),
        )
        self.last_edges = (edge_index, self._alpha)
        return out.reshape(b, n_tgt, -1)

    def _edges_without_self(self, points, queries, k, batch_src, batch_tgt) -> torch.Tensor:
        """Each query's k nearest points other than itself (query q is point q). Searches k + 1,
        then drops the point itself, or the farthest candidate where the point is not among them.
        Returns edge_index (2, M*k)."""
        m = queries.size(0)
        if k < 1:
            return torch.zeros(2, 0, dtype=torch.long, device=points.device)
        ei = knn(points, queries, k + 1, batch_x=batch_src, batch_y=batch_tgt, backend=self.backend)
        if ei.size(1) != m * (k + 1):  # every example holds the same N_src points, so this cannot happen
            raise RuntimeError(f"kNN returned {ei.size(1)} edges for {m} queries x {k + 1}")
        cand = ei[0, ei[1].argsort(stable=True)].view(m, k + 1)  # candidates grouped by query
        rows = torch.arange(m, device=points.device)
        dist = (points[cand] - queries[:, None]).pow(2).sum(-1).masked_fill(cand == rows[:, None], float("inf"))
        keep = torch.ones_like(cand, dtype=torch.bool).scatter_(1, dist.argmax(1, keepdim=True), False)
        return torch.stack([cand[keep], rows.repeat_interleave(k)])

    def message(self, keys_j, keys_i, z_j, y_j, pos_j, pos_i, index, size_i):
        offset = pos_j - pos_i  # (E, 2) in units of scale_km
        geo = torch.cat([offset, offset.norm(dim=-1, keepdim=True)], -1)
        learned_dist = (keys_j - keys_i).pow(2).sum(-1)
        dist_km = (offset.norm(dim=-1) * self.scale_km).clamp_min(0.1)
        score = (
            -self.log_power.exp() * dist_km.log()
            - self.gate * learned_dist / self.log_temperature.exp()
            + self.geo_score(geo).squeeze(-1)
        )
        alpha = softmax(score, index, num_nodes=size_i)  # over each target's k neighbours
        self._alpha = alpha.detach()
        return alpha.unsqueeze(-1) * (y_j + self.correction(torch.cat([z_j, geo], -1)))
