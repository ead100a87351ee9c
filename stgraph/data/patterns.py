"""Sparse observation patterns: which (time, node) cells of a node set are removed.

DiffRecon's three patterns (Sun et al.), on any node set: stations
(positions = latitude/longitude) or the cells of a regular grid (positions at cell centres, and
the grid's shape (I, J) with nodes in row-major order):

- ``fixed``: the same nodes removed at every step: ``round(ratio * N)`` of them, drawn at random;
- ``random``: a new random set of ``round(ratio * N)`` nodes removed at each step;
- ``block``: a contiguous region removed at every step. On a grid, the ``⌊I/2⌋ × ⌊J/2⌋`` cells at
  one corner (``south-east`` = the paper's lower-right quarter); on stations, the
  ``max(1, round(N / 4))`` stations nearest that corner of their bounding box. **``block`` ignores
  ``ratio``** (its size is a quarter, as in the paper), and it draws nothing at random.

The paper's ratios are :data:`STANDARD_RATIOS` (0.2, 0.4, 0.6, 0.8); any ratio in (0, 1) that
removes at least one node and keeps at least one is accepted. Draws are seeded (a
``torch.Generator``) and deterministic. A :class:`SparsePattern` holds the (T, N) ``removed`` mask
with how it was drawn, and saves to / loads from an ``.npz`` file for the run folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CORNERS",
    "PATTERN_KINDS",
    "STANDARD_RATIOS",
    "SparsePattern",
    "block_nodes",
    "draw_removed",
    "fixed_removed",
    "random_removed",
]

PATTERN_KINDS = ("fixed", "random", "block")
STANDARD_RATIOS = (0.2, 0.4, 0.6, 0.8)
CORNERS = ("south-east", "south-west", "north-east", "north-west")


def _removed_count(ratio: float, num_nodes: int) -> int:
    """``round(ratio * num_nodes)``, checked: ratio in (0, 1), at least one node removed and one kept."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(f"pattern ratio must be a number in (0, 1), got {ratio!r}")
    k = int(round(ratio * num_nodes))
    if not 0 < k < num_nodes:
        raise ValueError(
            f"pattern ratio {ratio} of {num_nodes} nodes removes {k} of them; it must remove at least one "
            "node and keep at least one (more nodes, or another ratio)"
        )
    return k


def fixed_removed(num_steps: int, num_nodes: int, ratio: float, gen: torch.Generator) -> np.ndarray:
    """(T, N) bool: the same ``round(ratio * N)`` random nodes removed at every step."""
    k = _removed_count(ratio, num_nodes)
    removed = np.zeros((num_steps, num_nodes), dtype=bool)
    removed[:, torch.randperm(num_nodes, generator=gen)[:k].numpy()] = True
    return removed


def random_removed(num_steps: int, num_nodes: int, ratio: float, gen: torch.Generator) -> np.ndarray:
    """(T, N) bool: ``round(ratio * N)`` random nodes removed at each step, a new set per step."""
    k = _removed_count(ratio, num_nodes)
    ranks = torch.rand(num_steps, num_nodes, generator=gen).argsort(dim=1).argsort(dim=1)  # (T, N): a rank per step
    return (ranks < k).numpy()


def _check_corner(corner: str) -> tuple[bool, bool]:
    """(south, east) of a corner name."""
    if corner not in CORNERS:
        raise ValueError(f"pattern corner must be one of {CORNERS}, got {corner!r}")
    return corner.startswith("south"), corner.endswith("east")


def _check_pos(pos: np.ndarray) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) == 0:
        raise ValueError(f"node positions must be (N, 2) latitude/longitude with N >= 1, got shape {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("node positions hold non-finite values")
    return pos


def block_nodes(pos: np.ndarray, corner: str = "south-east", grid_shape: tuple[int, int] | None = None) -> np.ndarray:
    """(N,) bool: the nodes of the ``block`` pattern.

    Args:
        pos: (N, 2) latitude, longitude in degrees.
        corner: one of :data:`CORNERS`.
        grid_shape: (I, J) for a grid (nodes in row-major order, ``I * J = N``): the ``⌊I/2⌋ × ⌊J/2⌋``
            cells at the corner. Which end of the rows is south and which end of the columns is east
            is read from ``pos`` (ERA5's rows run north to south, so there ``south-east`` is the
            lower-right quarter of the array). None: stations, the ``max(1, round(N / 4))`` nearest
            the corner of their bounding box (equirectangular distance; ties by node order).
    """
    pos = _check_pos(pos)
    south, east = _check_corner(corner)
    n = len(pos)
    if grid_shape is not None:
        rows, cols = (int(v) for v in grid_shape)
        if rows * cols != n or rows < 2 or cols < 2:
            raise ValueError(f"grid_shape {tuple(grid_shape)} must be (I, J) with I, J >= 2 and I * J = N = {n}")
        lat, lon = pos[:, 0].reshape(rows, cols), pos[:, 1].reshape(rows, cols)
        last_row_south = lat[-1].mean() < lat[0].mean()
        last_col_east = lon[:, -1].mean() > lon[:, 0].mean()
        hi, hj = rows // 2, cols // 2
        at_rows = slice(rows - hi, rows) if south == last_row_south else slice(0, hi)
        at_cols = slice(cols - hj, cols) if east == last_col_east else slice(0, hj)
        block = np.zeros((rows, cols), dtype=bool)
        block[at_rows, at_cols] = True
        return block.reshape(n)
    corner_lat = pos[:, 0].min() if south else pos[:, 0].max()
    corner_lon = pos[:, 1].max() if east else pos[:, 1].min()
    coslat = np.cos(np.deg2rad(pos[:, 0].mean()))
    dist = np.hypot(pos[:, 0] - corner_lat, (pos[:, 1] - corner_lon) * coslat)
    k = max(1, int(round(n / 4)))
    block = np.zeros(n, dtype=bool)
    block[np.argsort(dist, kind="stable")[:k]] = True
    return block


def draw_removed(
    kind: str,
    num_steps: int,
    pos: np.ndarray,
    *,
    ratio: float,
    gen: torch.Generator,
    corner: str = "south-east",
    grid_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """(T, N) bool cells removed by pattern ``kind`` over the nodes at ``pos`` (N, 2); see the module
    docstring. ``ratio`` and ``gen`` are not used by ``block``."""
    pos = _check_pos(pos)
    if kind == "fixed":
        return fixed_removed(num_steps, len(pos), ratio, gen)
    if kind == "random":
        return random_removed(num_steps, len(pos), ratio, gen)
    if kind == "block":
        block = block_nodes(pos, corner, grid_shape)
        if block.all():
            raise ValueError(f"the block pattern removes all {len(pos)} nodes; it needs at least 2")
        return np.broadcast_to(block, (num_steps, len(pos))).copy()
    raise ValueError(f"pattern kind must be one of {PATTERN_KINDS}, got {kind!r}")


@dataclass(eq=False)
class SparsePattern:
    """A drawn sparse pattern and how it was drawn.

    Attributes:
        kind: ``fixed``, ``random`` or ``block``.
        ratio: fraction of nodes removed (per step); None for ``block``, which ignores it.
        seed: seed of the draw.
        corner: the ``block`` corner (kept for every kind, so a re-draw is of the same pattern).
        removed: (T, N) bool, True where a cell is removed.
        nodes: (N,) int64 indices of the pattern's nodes in a larger node set (e.g. the visible
            stations among a dataset's); default ``0..N-1``.
        pos: (N, 2) latitude, longitude of those nodes.
        grid_shape: (I, J) when the nodes are a grid's cells (row-major), else None.
    """

    kind: str
    ratio: float | None
    seed: int
    corner: str
    removed: np.ndarray
    nodes: np.ndarray
    pos: np.ndarray
    grid_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATTERN_KINDS:
            raise ValueError(f"pattern kind must be one of {PATTERN_KINDS}, got {self.kind!r}")
        _check_corner(self.corner)
        self.removed = np.asarray(self.removed, dtype=bool)
        self.nodes = np.asarray(self.nodes, dtype=np.int64)
        self.pos = _check_pos(self.pos)
        self.grid_shape = None if self.grid_shape is None else tuple(int(v) for v in self.grid_shape)
        n = len(self.pos)
        if self.removed.ndim != 2 or self.removed.shape[1] != n or self.nodes.shape != (n,):
            raise ValueError(
                f"pattern removed {self.removed.shape}, nodes {self.nodes.shape} and pos {self.pos.shape} must be "
                f"(T, N), (N,) and (N, 2) with the same N"
            )

    @classmethod
    def draw(
        cls,
        kind: str,
        num_steps: int,
        pos: np.ndarray,
        *,
        ratio: float = 0.4,
        seed: int = 0,
        corner: str = "south-east",
        grid_shape: tuple[int, int] | None = None,
        nodes: np.ndarray | None = None,
    ) -> SparsePattern:
        """Draw pattern ``kind`` over ``num_steps`` steps of the nodes at ``pos`` (N, 2), seeded by
        ``seed`` (a fresh ``torch.Generator``); ``nodes``: their indices in a larger set."""
        pos = _check_pos(pos)
        gen = torch.Generator().manual_seed(int(seed))
        removed = draw_removed(kind, num_steps, pos, ratio=ratio, gen=gen, corner=corner, grid_shape=grid_shape)
        nodes = np.arange(len(pos)) if nodes is None else nodes
        return cls(kind, None if kind == "block" else float(ratio), int(seed), corner, removed, nodes, pos, grid_shape)

    def redraw(self, num_steps: int, pos: np.ndarray, gen: torch.Generator) -> np.ndarray:
        """(T', N') bool: a fresh draw of the same kind, ratio and corner over other nodes (``pos``
        (N', 2); stations only, no grid shape), from ``gen``: training re-draws it per batch."""
        return draw_removed(self.kind, num_steps, pos, ratio=self.ratio or 0.0, gen=gen, corner=self.corner)

    @property
    def num_steps(self) -> int:
        return self.removed.shape[0]

    def to_dict(self) -> dict:
        """What the pattern is, for a JSON record (the mask itself goes to :meth:`save`)."""
        return {
            "kind": self.kind,
            "ratio": self.ratio,
            "ratio_note": "block ignores ratio: it removes a quarter" if self.kind == "block" else None,
            "seed": self.seed,
            "corner": self.corner,
            "grid_shape": None if self.grid_shape is None else list(self.grid_shape),
            "num_steps": self.num_steps,
            "nodes": self.nodes.tolist(),
            "removed_cells": int(self.removed.sum()),
            "removed_fraction": float(self.removed.mean()) if self.removed.size else 0.0,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the pattern to an ``.npz`` file atomically (a temporary file, then renamed)."""
        path = Path(path)
        meta = {k: self.to_dict()[k] for k in ("kind", "ratio", "seed", "corner", "grid_shape")}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, removed=self.removed, nodes=self.nodes, pos=self.pos, meta=json.dumps(meta))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SparsePattern:
        """Read a pattern written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("removed", "nodes", "pos", "meta") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a sparse pattern file (lacks {missing})")
            meta = json.loads(str(z["meta"]))
            return cls(removed=z["removed"], nodes=z["nodes"], pos=z["pos"], **meta)

    def same_as(self, other: SparsePattern) -> bool:
        """True when both patterns were drawn alike and remove exactly the same cells of the same nodes."""
        return (
            (self.kind, self.ratio, self.seed, self.corner, self.grid_shape)
            == (other.kind, other.ratio, other.seed, other.corner, other.grid_shape)
            and np.array_equal(self.nodes, other.nodes)
            and np.array_equal(self.removed, other.removed)
        )
