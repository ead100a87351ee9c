"""Chebyshev graph convolution on an edge-index graph, batched over any leading dimensions.

The spectral filter of Defferrard, Bresson and Vandergheynst (NeurIPS 2016, arXiv:1606.09375),
as ST-GCN uses it (Yu, Yin, Zhu, IJCAI 2018):

    out = sum_{k<K} T_k(L~) X Θ_k + b,   L~ = (2 / λ_max) L - I,   L = I - D^{-1/2} W D^{-1/2},

with T_0 = I, T_1 = L~, T_k = 2 L~ T_{k-1} - T_{k-2}. W is the weighted adjacency made symmetric
(both directions of every edge; where both are given, the larger weight), D its degree matrix;
with the default λ_max = 2, L~ = -D^{-1/2} W D^{-1/2}. A node of degree 0 has an empty row in
D^{-1/2} W D^{-1/2} (its D^{-1/2} is taken as 0), so its output stays finite.

Equal (tested to 1e-5) to PyG's ``torch_geometric.nn.ChebConv(normalization="sym")`` with the same
``lambda_max``, given the symmetrised W as its edge list. Two differences in what the edge list
means: PyG uses the list as given (a directed list gives a non-symmetric L), and PyG drops
self-loops where this one counts them as entries of W (as a dense W would).

L~ is a sparse (N, N) tensor (``torch.sparse.mm``), or a dense one where that is faster
(:func:`fast_laplacian`: at 3 % density or more, as for the diffusion supports). The polynomial is
evaluated on whichever side is narrower: on the inputs (K - 1 products with C_in channels) or, by
Clenshaw's recurrence, on the projections X Θ_k (K - 1 products with C_out channels).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import coalesce


def scaled_laplacian(
    edge_index: torch.Tensor, edge_weight: torch.Tensor | None, num_nodes: int, lambda_max: float = 2.0
) -> torch.Tensor:
    """L~ = (2 / λ_max) (I - D^{-1/2} W D^{-1/2}) - I of the symmetrised weighted graph.

    Args:
        edge_index: (2, E) edges (either direction; both are used). Self-loops count as entries of W.
        edge_weight: (E,) non-negative weights, or None for 1.
        num_nodes: N.
        lambda_max: the spectrum bound that scales L (2 bounds every normalised Laplacian).
    Returns:
        (N, N) coalesced sparse COO tensor.
    """
    device = edge_index.device
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), device=device)
    edge_weight = edge_weight.float()
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    ei, w = coalesce(both, torch.cat([edge_weight, edge_weight]), num_nodes, reduce="max")
    deg = torch.zeros(num_nodes, device=device).index_add_(0, ei[0], w)
    dinv = torch.where(deg > 0, deg.clamp_min(torch.finfo(deg.dtype).tiny).rsqrt(), torch.zeros_like(deg))
    scale = 2.0 / lambda_max
    values = -scale * dinv[ei[0]] * w * dinv[ei[1]]
    diag = torch.arange(num_nodes, device=device)
    if scale != 1.0:  # (2/λ - 1) I; vanishes for λ_max = 2
        ei = torch.cat([ei, diag.expand(2, -1)], dim=1)
        values = torch.cat([values, torch.full((num_nodes,), scale - 1.0, device=device)])
    lap = torch.sparse_coo_tensor(ei, values, (num_nodes, num_nodes), check_invariants=False)
    return lap.coalesce()


def fast_laplacian(lap: torch.Tensor) -> torch.Tensor:
    """The sparse (N, N) ``lap`` as a dense tensor where a dense product is faster (at least 3 % of
    the entries set: dense BLAS does ~32x the multiply-adds in the time of a sparse product, measured
    on CPU), else ``lap`` itself. :class:`ChebConv` takes either."""
    n = lap.size(0)
    return lap.to_dense() if lap.is_sparse and 32 * lap._nnz() >= n * n else lap


def _propagate(lap: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L~ @ x for x (N, ...) with nodes first; ``lap`` sparse or dense."""
    flat = x.reshape(x.size(0), -1)
    lap = lap.to(x.dtype)
    return (torch.sparse.mm(lap, flat) if lap.is_sparse else lap @ flat).view_as(x)


class ChebConv(nn.Module):
    """Args:
        in_channels: C_in. out_channels: C_out.
        K: number of Chebyshev terms T_0..T_{K-1} (K = 1: no propagation, a per-node linear map).
        bias: add a learned bias.

    Shapes:
        x: (..., N, C_in) with nodes on ``node_dim`` (default -2) and channels last;
        the graph as ``edge_index`` (2, E) and ``edge_weight`` (E,) or a precomputed
        ``laplacian`` from :func:`scaled_laplacian` (share it between layers; sparse or dense, see
        :func:`fast_laplacian`) -> (..., N, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int, bias: bool = True):
        super().__init__()
        if K < 1:
            raise ValueError(f"ChebConv needs K >= 1 Chebyshev terms, got {K}")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.in_channels + self.out_channels))  # Glorot per term, as PyG's ChebConv
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_weight: torch.Tensor | None = None,
        *,
        laplacian: torch.Tensor | None = None,
        lambda_max: float = 2.0,
        node_dim: int = -2,
    ) -> torch.Tensor:
        n = x.size(node_dim)
        if laplacian is None:
            if edge_index is None:
                raise ValueError("ChebConv needs edge_index or a precomputed laplacian")
            laplacian = scaled_laplacian(edge_index, edge_weight, n, lambda_max)
        xn = x.movedim(node_dim, 0)  # (N, ..., C_in)
        k, c_in, c_out = self.K, self.in_channels, self.out_channels
        if c_out < c_in:  # Clenshaw on Z_k = X Θ_k: sum_k T_k Z_k = Z_0 + L~ b_1 - b_2
            z = (xn @ self.weight.permute(1, 0, 2).reshape(c_in, k * c_out)).unflatten(-1, (k, c_out))
            b1 = b2 = None  # b_{k+1}, b_{k+2}
            for i in range(k - 1, 0, -1):
                b = z[..., i, :]
                if b1 is not None:
                    b = b + 2 * _propagate(laplacian, b1)
                if b2 is not None:
                    b = b - b2
                b1, b2 = b, b1
            out = z[..., 0, :]
            if b1 is not None:
                out = out + _propagate(laplacian, b1)
            if b2 is not None:
                out = out - b2
        else:  # T_k X, then one product with the stacked Θ
            terms = [xn]
            if k > 1:
                terms.append(_propagate(laplacian, xn))
            for _ in range(2, k):
                terms.append(2 * _propagate(laplacian, terms[-1]) - terms[-2])
            out = torch.cat(terms, dim=-1) @ self.weight.reshape(k * c_in, c_out)
        if self.bias is not None:
            out = out + self.bias
        return out.movedim(0, node_dim)
