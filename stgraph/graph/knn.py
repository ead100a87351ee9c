"""Nearest-neighbour search behind one function, two backends.

``torch_cluster`` (default when importable) and ``torch``, a chunked exact reference that the
tests compare against. Both return PyG-style ``edge_index`` with ``flow="source_to_target"``:
row 0 indexes the neighbour (message source), row 1 the query (message target), grouped by query
in query order. Memory is O(N·k) plus one chunk of the reference's distance block; never N×N.

torch-cluster's CPU kNN builds a nanoflann kd-tree and answers queries one by one on one thread.
Two things make it fast here: points and queries are first sorted along a Morton curve (the
tree's leaves become contiguous in memory), and queries are split across threads (the op
releases the GIL; each thread builds its own tree). See benchmarks/results/knn.md.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import torch

from stgraph._optional import has_torch_cluster, require_torch_cluster
from stgraph.graph.locality import morton_order

BACKENDS = ("torch_cluster", "torch")
_CHUNK_ELEMENTS = 1 << 24  # reference backend: at most 16 M distances (64 MB float32) at once
_PARALLEL_MIN_QUERIES = 1_024  # below this, one thread is as fast


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


def _neighbours_reference(x: torch.Tensor, y: torch.Tensor, k: int, chunk_elements: int) -> torch.Tensor:
    """Exact brute force in query chunks. Returns (M, k) indices into ``x``, nearest first."""
    rows = max(1, chunk_elements // max(x.size(0), 1))
    out = []
    for lo in range(0, y.size(0), rows):  # chunks of queries, each one vectorised block
        d = torch.cdist(y[lo : lo + rows], x, compute_mode="donot_use_mm_for_euclid_dist")  # (rows, N)
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: starting threads on every call costs more than small queries."""
    return ThreadPoolExecutor(workers, thread_name_prefix="stgraph-knn")


def _neighbours_torch_cluster(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(M, k) indices into ``x``, nearest first, via torch-cluster on Morton-sorted copies."""
    import torch_cluster

    both = torch.cat([x[:, :3], y[:, :3]])
    lo, hi = both.min(0).values, both.max(0).values
    ox, oy = morton_order(x, lo, hi), morton_order(y, lo, hi)
    xs, ys = x[ox].contiguous(), y[oy].contiguous()
    threads = torch.get_num_threads() if y.size(0) >= _PARALLEL_MIN_QUERIES else 1
    chunks = list(ys.chunk(threads))

    def run(chunk: torch.Tensor) -> torch.Tensor:
        tgt, src = torch_cluster.knn(xs, chunk, k)
        return src.view(chunk.size(0), k)  # exactly k per query, since k <= N

    if len(chunks) == 1:
        nbr_sorted = run(chunks[0])
    else:
        nbr_sorted = torch.cat(list(_pool(len(chunks)).map(run, chunks)))
    nbr = torch.empty_like(nbr_sorted)
    nbr[oy] = ox[nbr_sorted]  # back to the caller's indices and query order
    return nbr


@torch.compiler.disable  # a custom kernel Dynamo cannot trace: a compiled model calls it eagerly
def _neighbours(x, y, k, backend, chunk_elements) -> torch.Tensor:
    if backend == "torch_cluster":
        return _neighbours_torch_cluster(x, y, k)
    return _neighbours_reference(x, y, k, chunk_elements)


def _to_edge_index(nbr: torch.Tensor) -> torch.Tensor:
    m, k = nbr.shape
    return torch.stack([nbr.reshape(-1), torch.arange(m, device=nbr.device).repeat_interleave(k)])


def knn(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    *,
    batch_x: torch.Tensor | None = None,
    batch_y: torch.Tensor | None = None,
    backend: str | None = None,
    chunk_elements: int = _CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Bipartite kNN: for every point of ``y`` its ``k`` nearest points of ``x``.

    Args:
        x: (N, D) source points (e.g. training stations); y: (M, D) queries (hidden stations,
           grid points). ``k`` is capped at N.
        batch_x, batch_y: optional (N,) and (M,) sorted example indices: neighbours are searched
           within the same example only (as in PyG); an example with fewer than k sources gives
           its queries fewer edges.
    Returns:
        edge_index (2, E): row 0 indexes ``x`` (source), row 1 indexes ``y`` (target); E = M*k
        without batches.
    """
    _check(x, "x")
    _check(y, "y")
    k = min(int(k), x.size(0))
    if k < 1 or y.size(0) == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=x.device)
    backend = resolve_backend(backend)
    if batch_x is None and batch_y is None:
        return _to_edge_index(_neighbours(x, y, k, backend, chunk_elements))
    if batch_x is None or batch_y is None or batch_x.numel() != x.size(0) or batch_y.numel() != y.size(0):
        raise ValueError("give both batch_x (N,) and batch_y (M,), one entry per point")
    if backend == "torch_cluster":
        import torch_cluster

        tgt, src = torch_cluster.knn(x.contiguous(), y.contiguous(), k, batch_x, batch_y)
        return torch.stack([src, tgt])
    return _batched_reference(x, y, k, batch_x, batch_y, chunk_elements)


def _batched_reference(x, y, k, batch_x, batch_y, chunk_elements) -> torch.Tensor:
    """Brute force with cross-example distances set to infinity, then dropped."""
    rows = max(1, chunk_elements // max(x.size(0), 1))
    src, tgt = [], []
    for lo in range(0, y.size(0), rows):  # chunks of queries, each one vectorised block
        d = torch.cdist(y[lo : lo + rows], x, compute_mode="donot_use_mm_for_euclid_dist")
        d = d.masked_fill(batch_y[lo : lo + rows, None] != batch_x[None, :], float("inf"))
        dist, idx = d.topk(k, dim=1, largest=False)
        keep = torch.isfinite(dist)
        src.append(idx[keep])
        tgt.append((torch.arange(idx.size(0), device=x.device)[:, None] + lo).expand_as(idx)[keep])
    return torch.stack([torch.cat(src), torch.cat(tgt)])


def knn_graph(
    pos: torch.Tensor, k: int, *, loop: bool = False, backend: str | None = None, chunk_elements: int = _CHUNK_ELEMENTS
) -> torch.Tensor:
    """kNN graph on one point set: every node receives edges from its ``k`` nearest nodes.

    Args:
        pos: (N, D) points; for stations, unit-sphere xyz (:func:`~stgraph.geo.latlon_to_xyz`).
        k: neighbours per node, capped at N-1 (N with ``loop=True``).
        loop: count the node itself among its neighbours.
    Returns:
        edge_index (2, N*k), directed neighbour -> node. Exactly k per node, also when points
        coincide (the node itself is removed, or else its farthest candidate).
    """
    _check(pos, "pos")
    n = pos.size(0)
    k = min(int(k), n if loop else n - 1)
    if k < 1:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    backend = resolve_backend(backend)
    if loop:
        return _to_edge_index(_neighbours(pos, pos, k, backend, chunk_elements))
    nbr = _neighbours(pos, pos, k + 1, backend, chunk_elements)  # (N, k+1), usually self first
    drop = nbr == torch.arange(n, device=pos.device)[:, None]
    drop[:, -1] |= ~drop.any(1)  # self not found (duplicates): drop the farthest instead
    return _to_edge_index(nbr[~drop].view(n, k))


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
    nearest ``max_num_neighbors`` of them). Returns edge_index (2, E), row 0 into ``x``.

    torch-cluster's own radius keeps the first ``max_num_neighbors`` it finds, not the nearest;
    here both backends take the nearest candidates and cut at ``r``, so they agree exactly."""
    ei = knn(x, y, max_num_neighbors, backend=backend, chunk_elements=chunk_elements)
    keep = (x[ei[0]] - y[ei[1]]).norm(dim=-1) <= r
    return ei[:, keep]


def radius_graph(
    pos: torch.Tensor, r: float, *, loop: bool = False, max_num_neighbors: int = 32, backend: str | None = None
) -> torch.Tensor:
    """Edges between nodes closer than Euclidean ``r`` (the nearest ``max_num_neighbors``)."""
    ei = radius(pos, pos, r, max_num_neighbors=max_num_neighbors + (0 if loop else 1), backend=backend)
    if not loop:
        ei = ei[:, ei[0] != ei[1]]
    return ei
