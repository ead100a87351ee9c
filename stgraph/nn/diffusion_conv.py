"""Bidirectional random-walk diffusion convolution (Li et al., DCRNN, ICLR 2018, arXiv:1707.01926).

A directed weighted graph is given as ``edge_index`` (2, E), row 0 the sender j and row 1 the
receiver i, with weights w_ji. Written as a dense matrix ``W[i, j] = w_ji`` (message from j to i):

* forward transition ``P_f = D^{-1} W``: node i takes the weighted mean of its in-neighbours
  (rows normalised by the weighted in-degree); on a kNN graph every node has k in-neighbours,
  so every node (a target station with no history too) hears from its nearest stations;
* backward transition ``P_b = D'^{-1} W^T``: node i takes the mean of the nodes it sends to
  (the reversed graph, rows normalised by the weighted out-degree).

A node with zero degree gets a zero row (never NaN). The layer applies K hops in each direction
and a Linear over the concatenation ``[X, P_f X, ..., P_f^K X, P_b X, ..., P_b^K X]``:

* ``recursion="power"``: the paper's terms ``P^k X`` (repeated multiplication);
* ``recursion="chebyshev"``: the official DCRNN (and IGNNK) code's ``X_k = 2 P X_{k-1} - X_{k-2}``
  with ``X_0 = X``, ``X_1 = P X``. Each direction starts from X; the official code carries
  ``X_0`` over from the forward to the backward loop (a known quirk, not reproduced here).
  The two recursions agree for K <= 1.

**Masked transitions** (``mask`` given: which inputs are observed, per node, sample, step and
channel). Missing and hidden neighbours must not count as zeros: the k-hop term is the random
walk's mean over the walks that *end at an observed node*,

    Y_k = P^k (m * X) / P^k m        (0 where P^k m = 0: no observed node within k hops),

so ``Y_1[i] = sum_j w_ji m_j x_j / sum_j w_ji m_j``, the weighted mean of the observed
in-neighbours (IDW's normalisation, not the total edge weight). ``Y_2 = P(d_1 Y_1) / P d_1`` with
``d_1 = P m``: a mean of the neighbours' own estimates weighted by how much of each was observed.
For ``chebyshev`` the masked terms are the Chebyshev polynomials written in these masked powers,
``T_k(P) = sum_j c_kj P^j`` -> ``sum_j c_kj Y_j`` (T_2 -> 2 Y_2 - X): the same span as the power
terms, so the recursions still agree for K <= 1. A channel whose mask is all True gets
``P^k X / P^k 1``, equal to ``P^k X`` wherever the walk loses no mass (on a kNN graph, always
for ``P_f``). Cost: the channels diffused twice (values and mask), on the layer that takes it.

Both directions advance together, one sparse product per hop: ``[P_f; P_b]`` (2N, N) for the
first hop, the block diagonal ``[[P_f, 0], [0, P_b]]`` (2N, 2N) after it. :class:`DiffusionSupports`
holds both, built once per graph and reused across time steps and layers. Features are node-first
inside (N, F), the layout sparse products want.
"""

from __future__ import annotations

import torch
from torch import nn

RECURSIONS = ("power", "chebyshev")


def check_recursion(recursion: str) -> str:
    if recursion not in RECURSIONS:
        raise ValueError(f"recursion must be one of {RECURSIONS}, got {recursion!r}")
    return recursion


def transition_weights(
    edge_index: torch.Tensor, edge_weight: torch.Tensor | None, num_nodes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-edge entries of the two random-walk transitions.

    Args:
        edge_index: (2, E) rows (sender j, receiver i). edge_weight: (E,) non-negative, or None (ones).
    Returns:
        w_fwd: (E,) ``w_ji / sum_j' w_j'i``, the entry ``P_f[i, j]``;
        w_bwd: (E,) ``w_ji / sum_i' w_ji'``, the entry ``P_b[j, i]``. Zero where a degree is zero.
    """
    src, dst = edge_index
    if edge_weight is None:
        edge_weight = torch.ones(src.numel(), device=edge_index.device)
    deg_in = edge_weight.new_zeros(num_nodes).index_add_(0, dst, edge_weight)
    deg_out = edge_weight.new_zeros(num_nodes).index_add_(0, src, edge_weight)
    inv_in = torch.where(deg_in > 0, 1.0 / deg_in.clamp_min(1e-30), torch.zeros_like(deg_in))
    inv_out = torch.where(deg_out > 0, 1.0 / deg_out.clamp_min(1e-30), torch.zeros_like(deg_out))
    return edge_weight * inv_in[dst], edge_weight * inv_out[src]


class DiffusionSupports:
    """Both transitions of one graph as sparse matrices: ``first`` = ``[P_f; P_b]`` (2N, N) and
    ``matrix`` = ``[[P_f, 0], [0, P_b]]`` (2N, 2N).

    Args:
        edge_index: (2, E) rows (sender j, receiver i); edge_weight: (E,) or None; num_nodes: N.
        dtype: of the matrix (that of the features it multiplies).
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor | None,
        num_nodes: int,
        dtype: torch.dtype = torch.float32,
    ):
        self.num_nodes = num_nodes
        edge_index = edge_index.long()
        if edge_weight is not None:
            edge_weight = edge_weight.detach().to(dtype)
        w_fwd, w_bwd = transition_weights(edge_index, edge_weight, num_nodes)
        src, dst = edge_index
        w = torch.cat([w_fwd, w_bwd]).to(dtype)
        n = num_nodes
        # block diagonal [[P_f, 0], [0, P_b]] for hops after the first, and [P_f; P_b] for the first
        self.matrix = _sparse(torch.cat([dst, n + src]), torch.cat([src, n + dst]), w, (2 * n, 2 * n))
        self.first = _sparse(torch.cat([dst, n + src]), torch.cat([src, dst]), w, (2 * n, n))

    def first_hop(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (2N, F): ``[P_f X; P_b X]``."""
        return torch.sparse.mm(self.first, x)

    def hop(self, z: torch.Tensor) -> torch.Tensor:
        """(2N, F) stacked [forward; backward] features -> one more hop of each."""
        return torch.sparse.mm(self.matrix, z)


class DenseSupports:
    """The transitions of :class:`DiffusionSupports` as dense matrices, with its interface: on small
    graphs dense products are several times faster than sparse ones (and their backward allocates
    no zero-filled buffers). ``first`` is ``[P_f; P_b]`` (2N, N); later hops multiply each
    direction by its own (N, N) block (``pair``, (2, N, N)), not the (2N, 2N) block diagonal.
    """

    def __init__(self, supports: DiffusionSupports):
        n = self.num_nodes = supports.num_nodes
        self.first = supports.first.to_dense()
        self.pair = self.first.view(2, n, n)

    def first_hop(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (2N, F)."""
        return self.first @ x

    def hop(self, z: torch.Tensor) -> torch.Tensor:
        """(2N, F) -> (2N, F): each direction's rows times its own transition."""
        n = self.num_nodes
        return torch.bmm(self.pair, z.view(2, n, -1)).view(2 * n, -1)


def fast_supports(supports: DiffusionSupports) -> DiffusionSupports | DenseSupports:
    """Dense transitions where a dense product costs at most ~64x the sparse one's multiply-adds
    (dense BLAS is that much faster per operation on CPU: measured crossover at ~3 % density, a
    kNN graph of k = 8 on ~256 nodes); the sparse ones otherwise. Every model that diffuses builds
    its supports through :func:`make_supports`, which applies this."""
    n = supports.num_nodes
    return DenseSupports(supports) if 4 * n * n <= 64 * supports.matrix._nnz() else supports




def make_supports(
    edge_index: torch.Tensor, edge_weight: torch.Tensor | None, num_nodes: int, dtype: torch.dtype = torch.float32
) -> DiffusionSupports | DenseSupports:
    """:class:`DiffusionSupports` of the graph, dense where that is faster (:func:`fast_supports`)."""
    return fast_supports(DiffusionSupports(edge_index, edge_weight, num_nodes, dtype))


def _sparse(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    index = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(index, values, size, check_invariants=False).coalesce()


def _power_hops(flat: torch.Tensor, supports: DiffusionSupports, K: int, recursion: str) -> list[torch.Tensor]:
    """(N, F) -> K tensors (2N, F), forward rows then backward rows: hop k's term in each direction."""
    n = flat.size(0)
    z_prev, z = flat, supports.first_hop(flat)
    hops = [z]
    for _ in range(1, K):
        z_next = supports.hop(z)
        if recursion == "chebyshev":  # X_k = 2 P X_{k-1} - X_{k-2}; X_0 = X in both directions
            z_next = (2 * z_next).view(2, n, -1).sub(z_prev.view(-1, n, flat.size(1))).view(2 * n, -1)
        z_prev, z = z, z_next
        hops.append(z)
    return hops


def _chebyshev_in_powers(K: int) -> list[list[float]]:
    """Coefficients c[k][j] of T_k(x) = sum_j c[k][j] x^j, k = 0..K."""
    coef = [[1.0], [0.0, 1.0]]
    for k in range(2, K + 1):
        two_x = [0.0, *(2 * c for c in coef[k - 1])]
        prev = coef[k - 2] + [0.0] * (k + 1 - len(coef[k - 2]))
        coef.append([a - b for a, b in zip(two_x, prev, strict=True)])
    return coef[: K + 1]


MASK_EPS = 1e-8  # P^k m below this: no observed node within reach (a float32-safe zero)


def _masked_hops(
    x: torch.Tensor, mask: torch.Tensor, supports: DiffusionSupports, K: int, recursion: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The masked terms (see the module docstring). x, mask: (N, *, C) -> x zeroed where unobserved
    (N, *, C) and K tensors (2, N, *, C): [forward; backward] masked mean at hop k."""
    mask = mask.expand_as(x)
    x0 = torch.where(mask, x, torch.zeros_like(x))
    n, f = x.size(0), x[0].numel()
    both = torch.cat([x0.reshape(n, f), mask.to(x.dtype).reshape(n, f)], dim=1)  # diffuse values and mask together
    means = []
    for z in _power_hops(both, supports, K, "power"):
        num, den = z.view(2, n, 2, f).unbind(2)
        seen = den > MASK_EPS
        means.append(torch.where(seen, num / den.clamp_min(MASK_EPS), torch.zeros_like(num)).view(2, *x.shape))
    if recursion == "chebyshev" and K > 1:
        powers = [x0.unsqueeze(0).expand(2, *x.shape), *means]
        coef = _chebyshev_in_powers(K)
        means = [means[0], *(sum(c * y for c, y in zip(coef[k], powers, strict=False) if c) for k in range(2, K + 1))]
    return x0, means


def diffusion_features(
    x: torch.Tensor,
    supports: DiffusionSupports,
    K: int,
    recursion: str = "power",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The diffusion terms of node features, concatenated on the channel axis.

    Args:
        x: (N, *, C) node-first features (any batch dims between the node and channel axes).
        supports: the graph's transitions. K: hops per direction. recursion: ``power`` | ``chebyshev``.
        mask: None (the ordinary transitions) or a bool (N, *, C) (broadcastable) observation mask:
            the masked transitions of the module docstring; x is read only where it is True.
    Returns:
        (N, *, (2K + 1) * C): ``[X, P_f X, ..., P_f^K X, P_b X, ..., P_b^K X]`` (Chebyshev terms
        instead of powers for ``chebyshev``; masked means with ``mask``, and X zeroed where unobserved).
    """
    check_recursion(recursion)
    if mask is not None and K == 0:
        return torch.where(mask.expand_as(x), x, torch.zeros_like(x))
    if K == 0:
        return x
    n, c = x.size(0), x.size(-1)
    if n != supports.num_nodes:
        raise ValueError(f"features have {n} nodes, the graph {supports.num_nodes}")
    if mask is None:
        hops = [z.view(2, *x.shape) for z in _power_hops(x.reshape(n, -1), supports, K, recursion)]
    else:
        x, hops = _masked_hops(x, mask, supports, K, recursion)
    fwd, bwd = zip(*(z.unbind(0) for z in hops), strict=True)  # unbind: no zero-filled grads
    terms = [x, *fwd, *bwd]
    return torch.stack(terms, dim=-2).view(*x.shape[:-1], (2 * K + 1) * c)  # one copy into place


class DiffusionConv(nn.Module):
    """Diffusion convolution: Linear over the K-hop bidirectional random-walk terms.

    Args:
        in_channels: C. out_channels: output channels. K: hops per direction (0: a plain Linear).
        recursion: ``power`` (paper) or ``chebyshev`` (official DCRNN/IGNNK code). bias: add a bias.

    Shapes:
        x: (..., N, C), node dim second to last; the graph is ``edge_index`` (2, E) (sender,
        receiver) with ``edge_weight`` (E,), or precomputed ``supports``; ``mask``: None or bool
        (..., N, C) where x is observed (masked transitions); returns (..., N, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, K: int = 2, recursion: str = "power", bias: bool = True):
        super().__init__()
        if K < 0:
            raise ValueError(f"K must be >= 0, got {K}")
        self.K = K
        self.recursion = check_recursion(recursion)
        self.lin = nn.Linear((2 * K + 1) * in_channels, out_channels, bias=bias)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_weight: torch.Tensor | None = None,
        supports: DiffusionSupports | DenseSupports | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if supports is None:
            if edge_index is None:
                raise ValueError("DiffusionConv needs edge_index or supports")
            supports = make_supports(edge_index, edge_weight, x.size(-2), x.dtype)
        if mask is not None:
            mask = mask.expand_as(x).movedim(-2, 0)
        feats = diffusion_features(x.movedim(-2, 0), supports, self.K, self.recursion, mask).movedim(0, -2)
        return self.lin(feats)
