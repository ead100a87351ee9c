"""Nearest-neighbour search behind one function, two backends.

``torch_cluster`` (default when importable) and ``torch``, a chunked exact reference that the
tests compare against. Both return PyG-style ``edge_index`` with ``flow="source_to_target"``:
row 0 indexes the neighbour (message source), row 1 the query (message target). Memory is
O(N·k) plus one chunk of the reference's distance block; never an N×N matrix.
"""

from __future__ import annotations

import torch

from stgraph._optional import has_torch_cluster, require_torch_cluster

BACKENDS = ("torch_cluster", "torch")
_CHUNK_ELEMENTS = 1 << 24  # reference backend: at most 16 M distances (64 MB float32) at once


def default_backend() -> str:
    return "torch_cluster" if has_torch_cluster() else "torch"


def resolve_backend(backend: str | None) -> str:
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend '{backend}'; choose one of {BACKENDS}")
    if backend == "torch_cluster":
        require_torch_cluster("the 'torch_cluster' kNN backend")
    return backend


def _check(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be (num_points, dim), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has non-finite coordinates")


def _knn_reference(x: torch.Tensor, y: torch.Tensor, k: int, exclude_self: bool, chunk_elements: int):
    """Exact brute force in row chunks. Returns (query index, neighbour index), each (M*k,)."""
    m, n = y.size(0), x.size(0)
    rows = max(1, chunk_elements // max(n, 1))
    nbrs = []
    for lo in range(0, m, rows):  # chunks of queries, each one vectorised block
        yc = y[lo : lo + rows]
        d = torch.cdist(yc, x, compute_mode="donot_use_mm_for_euclid_dist")  # (rows, n)
        if exclude_self:
            q = torch.arange(lo, lo + yc.size(0), device=x.device)
            d[torch.arange(yc.size(0), device=x.device), q] = float("inf")
        nbrs.append(d.topk(k, dim=1, largest=False).indices)
    col = torch.cat(nbrs)  # (m, k)
    row = torch.arange(m, device=x.device).repeat_interleave(k)
    return row, col.reshape(-1)


def knn(
    x: torch.Tensor, y: torch.Tensor, k: int, *, backend: str | None = None, chunk_elements: int = _CHUNK_ELEMENTS
) -> torch.Tensor:
    """Bipartite kNN: for every point of ``y`` its ``k`` nearest points of ``x``.

    Args:
        x: (N, D) source points (e.g. training stations); y: (M, D) queries (hidden stations,
           grid points). ``k`` is capped at N.
    Returns:
        edge_index (2, M*k): row 0 indexes ``x`` (source), row 1 indexes ``y`` (target).
    """
    _check(x, "x")
    _check(y, "y")
    k = min(int(k), x.size(0))
    if k < 1 or y.size(0) == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=x.device)
    backend = resolve_backend(backend)
    if backend == "torch_cluster":
        import torch_cluster

        tgt, src = torch_cluster.knn(x.contiguous(), y.contiguous(), k)
    else:
        tgt, src = _knn_reference(x, y, k, exclude_self=False, chunk_elements=chunk_elements)
    return torch.stack([src, tgt])


def knn_graph(
    pos: torch.Tensor, k: int, *, loop: bool = False, backend: str | None = None, chunk_elements: int = _CHUNK_ELEMENTS
) -> torch.Tensor:
    """kNN graph on one point set: every node receives edges from its ``k`` nearest nodes.

    Args:
        pos: (N, D) points; for stations, unit-sphere xyz (:func:`~stgraph.graph.geo.latlon_to_xyz`).
        k: neighbours per node, capped at N-1 (N with ``loop=True``).
        loop: count the node itself among its neighbours.
    Returns:
        edge_index (2, N*k), directed neighbour -> node.
    """
    _check(pos, "pos")
    n = pos.size(0)
    k = min(int(k), n if loop else n - 1)
    if k < 1:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    backend = resolve_backend(backend)
    if backend == "torch_cluster":
        import torch_cluster

        return torch_cluster.knn_graph(pos.contiguous(), k, loop=loop, flow="source_to_target")
    tgt, src = _knn_reference(pos, pos, k, exclude_self=not loop, chunk_elements=chunk_elements)
    return torch.stack([src, tgt])


def radius(
    x: torch.Tensor,
    y: torch.Tensor,
    r: float,
    *,
    max_num_neighbors: int = 32,
    backend: str | None = None,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Bipartite radius search: for each ``y`` the points of ``x`` within Euclidean ``r`` (the
    nearest ``max_num_neighbors`` of them). Returns edge_index (2, E), row 0 into ``x``."""
    _check(x, "x")
    _check(y, "y")
    backend = resolve_backend(backend)
    k = min(int(max_num_neighbors), x.size(0))
    if k < 1 or y.size(0) == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=x.device)
    if backend == "torch_cluster":
        # torch-cluster's radius keeps the first max_num_neighbors found, not the nearest; take
        # the k nearest and cut at r instead, so both backends agree exactly.
        import torch_cluster

        tgt, src = torch_cluster.knn(x.contiguous(), y.contiguous(), k)
    else:
        tgt, src = _knn_reference(x, y, k, exclude_self=False, chunk_elements=chunk_elements)
    keep = (x[src] - y[tgt]).norm(dim=-1) <= r
    return torch.stack([src[keep], tgt[keep]])


def radius_graph(
    pos: torch.Tensor, r: float, *, loop: bool = False, max_num_neighbors: int = 32, backend: str | None = None
) -> torch.Tensor:
    """Edges between nodes closer than Euclidean ``r`` (the nearest ``max_num_neighbors``)."""
    ei = radius(pos, pos, r, max_num_neighbors=max_num_neighbors + (0 if loop else 1), backend=backend)
    if not loop:
        ei = ei[:, ei[0] != ei[1]]
    return ei
