"""SPIN's sparse spatiotemporal attention layer (Marisca, Cini, Alippi, "Learning to Reconstruct
Missing Data from Spatiotemporal Graphs with Sparse Observations", NeurIPS 2022, §4).

Every (node i, step t) token is updated from the tokens (j, s) of its graph neighbours j at every
step s of the window (cross attention along each edge), and from its own node's tokens at the
other steps (temporal self-attention), with *additive* attention: for a target token h_i^t and
a source token h_j^s,

    m = MLP(PReLU(W_src h_j^s + W_tgt h_i^t)),   a = softmax_s(w^T m),   r_{j->i}^t = Σ_s a m,

and the node's update is ``LayerNorm(Σ_j r_{j->i} + r_{i->i} + W_skip h_i)``. Only tokens that
are allowed to speak are keys: while ``mask_spatial`` (SPIN's first ``eta`` layers) a neighbour
speaks only at its observed steps, and the self-attention never attends a token's own step and
(``mask_temporal``) only the node's observed steps. A target with no allowed key receives 0.

Checked against the authors' implementation in torch-spatiotemporal 0.9.5
(``tsl.nn.blocks.encoders.mlp_attention.MLPAttention`` / ``TemporalMLPAttention`` and
``tsl.nn.layers.graph_convs.SpatiotemporalCrossAttention``): the message MLP is PReLU (slope 0.2),
then ``msg_layers`` blocks of Linear + PReLU (PyTorch's default slope 0.25), then a Linear read-out;
``W_src`` and ``W_tgt`` are Glorot-initialised, ``W_src`` with a zero bias and ``W_tgt`` without
one; with ``reweigh=None`` the weights are sigmoid gates (with a bias) instead of a softmax. That
code runs PyG message passing over an edge list of (source step, target step) pairs; this one is
dense over the pairs, which is the same function.

Shapes: h (B, W, N, d), observed (B, W, N) bool, edge_index (2, E) rows (source j, receiver i).
Vectorised over batch, steps, edges and nodes: the attention tensors are (B, W_t, E, W_s, d). The
PReLUs are :class:`~stgraph.nn.scalar_prelu.ScalarPReLU` (``nn.PReLU`` on faster kernels): the
message MLP on every pair is most of a SPIN step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stgraph.nn.scalar_prelu import ScalarPReLU


class AdditiveTemporalAttention(nn.Module):
    """Additive attention of target sequences over source sequences along time (tsl's
    ``TemporalMLPAttention``).

    ``forward(target, source, key_mask, pair_mask)``: target (B, T, E, d_tgt) and source
    (B, S, E, d_src) are the token sequences at the two ends of each of E pairs; key_mask
    (B, S, E) bool or None says which source tokens may be attended; pair_mask (T, S) bool or None
    forbids (target step, source step) pairs. Returns (B, T, E, d): each target token's
    attention-weighted message (0 where it has no allowed key), plus ``W_skip target`` with
    ``root_weight``, through a LayerNorm with ``norm``.

    Args:
        d: output (and message) width. msg_layers: hidden blocks of the message MLP.
        src_channels, tgt_channels: source and target widths (default d).
        reweigh: ``"softmax"`` over the allowed source steps, or None: independent sigmoid gates.
        root_weight: add a bias-free linear map of the target. norm: LayerNorm the output.
    """

    def __init__(
        self,
        d: int,
        msg_layers: int = 1,
        *,
        src_channels: int | None = None,
        tgt_channels: int | None = None,
        reweigh: str | None = "softmax",
        root_weight: bool = False,
        norm: bool = False,
    ):
        super().__init__()
        if reweigh not in ("softmax", None):
            raise ValueError(f"AdditiveTemporalAttention: reweigh must be 'softmax' or None, got {reweigh!r}")
        self.reweigh = reweigh
        self.lin_src = nn.Linear(src_channels or d, d)
        self.lin_tgt = nn.Linear(tgt_channels or d, d, bias=False)
        layers: list[nn.Module] = [ScalarPReLU(init=0.2)]
        for _ in range(msg_layers):
            layers += [nn.Linear(d, d), ScalarPReLU()]
        layers.append(nn.Linear(d, d))
        self.msg = nn.Sequential(*layers)
        self.gate = nn.Linear(d, 1, bias=reweigh is None)
        self.skip = nn.Linear(tgt_channels or d, d, bias=False) if root_weight else None
        self.norm = nn.LayerNorm(d) if norm else None

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        nn.init.xavier_uniform_(self.lin_src.weight)
        nn.init.zeros_(self.lin_src.bias)
        nn.init.xavier_uniform_(self.lin_tgt.weight)

    def forward(
        self,
        target: torch.Tensor,
        source: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        pair_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # (B, T, E, S, d): one (target step, edge) row holds its source steps contiguously, so the
        # sum over them is a batched (1 x S) @ (S x d) product with no permuted copy of the pairs
        src = self.lin_src(source).transpose(1, 2)  # (B, E, S, d)
        e = self.lin_tgt(target).unsqueeze(3) + src.unsqueeze(1)
        # The message MLP's last layer is linear, so it is applied after the attention sum instead of
        # to every (t, s, edge) pair: with z its input, msg = W z + b, the score w^T msg = (W^T w)^T z +
        # w^T b (+ the gate's bias) and Σ_s a msg = W (Σ_s a z) + b Σ_s a. The same function as the MLP
        # then the sum (a test holds it to a loop over pairs), one (B, T, E, S, d) product fewer.
        last = self.msg[-1]
        z = self.msg[:-1](e)
        score = z @ (last.weight.t() @ self.gate.weight.t()).squeeze(-1)  # (B, T, E, S)
        allowed = None if key_mask is None else key_mask.transpose(1, 2).unsqueeze(1)  # (B, 1, E, S)
        if pair_mask is not None:
            pairs = pair_mask[None, :, None, :]  # (1, T, 1, S)
            allowed = pairs if allowed is None else allowed & pairs
        if self.reweigh == "softmax":  # the constant w^T b cancels
            if allowed is not None:
                score = score.masked_fill(~allowed, float("-inf"))
            alpha = torch.softmax(score, dim=-1)
            if allowed is not None:
                alpha = torch.where(allowed, alpha, torch.zeros_like(alpha))  # rows with no key: 0, not NaN
        else:
            alpha = torch.sigmoid(score + (self.gate.weight @ last.bias + self.gate.bias))
            if allowed is not None:
                alpha = alpha * allowed
        summed = (alpha.unsqueeze(-2) @ z).squeeze(-2)  # Σ_s a z: (B, T, E, d)
        out = F.linear(summed, last.weight) + alpha.sum(-1).unsqueeze(-1) * last.bias  # (B, T, E, d)
        if self.skip is not None:
            out = out + self.skip(target)
        return out if self.norm is None else self.norm(out)


class SparseSpatiotemporalAttention(nn.Module):
    """One SPIN layer (tsl's ``SpatiotemporalCrossAttention``): cross attention along every edge,
    temporal self-attention, a skip and a LayerNorm (see the module docstring)."""

    def __init__(self, d: int, msg_layers: int = 1, temporal_self_attention: bool = True):
        super().__init__()
        self.cross = AdditiveTemporalAttention(d, msg_layers)
        self.self_attention = AdditiveTemporalAttention(d, msg_layers) if temporal_self_attention else None
        self.skip = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.cross.reset_parameters()
        if self.self_attention is not None:
            self.self_attention.reset_parameters()
        self.skip.reset_parameters()
        nn.init.zeros_(self.skip.bias)
        self.norm.reset_parameters()

    def forward(
        self,
        h: torch.Tensor,
        observed: torch.Tensor,
        edge_index: torch.Tensor,
        *,
        mask_spatial: bool,
        mask_temporal: bool = True,
    ) -> torch.Tensor:
        # h: [batch, steps, nodes, d]; observed: [batch, steps, nodes]
        _, w, n, _ = h.shape
        src, dst = edge_index
        out = torch.zeros_like(h)
        if src.numel():
            keys = observed[:, :, src] if mask_spatial else None
            msg = self.cross(h[:, :, dst], h[:, :, src], keys, None)  # (B, W, E, d)
            out = out.index_add(2, dst, msg)  # sum over in-edges
        if self.self_attention is not None:
            keys = observed if mask_temporal else None
            not_self = ~torch.eye(w, dtype=torch.bool, device=h.device)
            out = out + self.self_attention(h, h, keys, not_self)
        return self.norm(out + self.skip(h))
