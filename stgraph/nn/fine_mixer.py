"""Exchange between fine nodes: DiffRecon stage 2's intra-map step (Sun et al. §IV-C, the fine U-Net).

Stage 2's per-node head sees each fine node alone; fixed fine-scale structure (a ridge, a coast, a
street canyon between two hidden stations) needs the fine nodes to see each other. The paper's fine
denoiser is a 2-D U-Net over the fine map. Here:

* on a regular lattice (the fine nodes' latitudes, and their longitudes, are whole multiples of
  one spacing from the smallest, each cell holds at most one node, and the bounding I × J map has
  at most ``MAX_CELLS_PER_NODE`` cells per node: an ERA5 grid, or a patch or random subset of one,
  as training draws them), the fine nodes are scattered onto the I × J map (cells without a node
  are zero) and pass through :class:`~stgraph.nn.unet2d.UNet2d` with the window's steps as
  channels (the paper's maps: each node's D features are first reduced to R = ``time_channels``
  per step, so the U-Net sees W·R channels once per window instead of D channels once per step,
  W times cheaper), its output mapped back to D per step; the same layout and weights serve a
  training subset and the whole grid at evaluation (train on patches, ``train.subgraph: local``:
  a uniform subset leaves most of the map zero, which the whole grid never is);
* otherwise (stations), residual Chebyshev graph convolutions over the fine nodes' symmetric kNN
  graph (:class:`~stgraph.nn.intra_map_gnn.IntraMapGNN`, one level).

:func:`fine_layout` decides from positions alone, once per node set; :class:`FineMixer` applies it.
A single fine node has nothing to exchange with: the mixer returns its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stgraph.nn.intra_map_gnn import IntraMapGNN, IntraMapGraph, intra_map_graph
from stgraph.nn.unet2d import UNet2d

LATTICE_DECIMALS = 4  # positions equal to 1e-4 degrees (~10 m) are on the same lattice line
MAX_CELLS_PER_NODE = 8  # a sparser bounding map is not treated as a lattice


@dataclass
class FineLayout:
    """How the N fine nodes are arranged.

    Attributes:
        lattice: (I, J) when the nodes fill a regular lattice, else None.
        cell: (N,) long, each node's flat lattice index i·J + j (lattice only).
        graph: the nodes' kNN graph (not on a lattice, N >= 2), else None.
    """

    lattice: tuple[int, int] | None
    cell: torch.Tensor | None
    graph: IntraMapGraph | None


def _lattice_axis(values: torch.Tensor) -> tuple[int, torch.Tensor] | None:
    """(size, index (N,)) of integer coordinates on one regular axis, or None if not regular."""
    u = torch.unique(values)
    if u.numel() < 2:
        return None
    spacing = int(torch.diff(u).min())
    if bool(((u - u[0]) % spacing).any()):
        return None
    return int((u[-1] - u[0]) // spacing) + 1, (values - u[0]) // spacing


def lattice_cells(pos: torch.Tensor) -> tuple[tuple[int, int], torch.Tensor] | None:
    """((I, J), cell (N,)) if the (N, 2) lat/lon positions sit on a regular lattice (see the module
    docstring), else None. Rows run south to north (latitude ascending), columns west to east; a
    node's cell is i·J + j."""
    n = pos.size(0)
    p = torch.round(pos.detach().double().cpu() * 10**LATTICE_DECIMALS).long()
    rows, cols = _lattice_axis(p[:, 0]), _lattice_axis(p[:, 1])
    if rows is None or cols is None or rows[0] * cols[0] > MAX_CELLS_PER_NODE * n:
        return None
    cell = rows[1] * cols[0] + cols[1]
    if torch.unique(cell).numel() != n:
        return None
    return (rows[0], cols[0]), cell


def fine_layout(pos: torch.Tensor, k: int = 8) -> FineLayout:
    """The layout of (N, 2) fine positions: a lattice if they sit on one, else a kNN graph (N >= 2)."""
    found = lattice_cells(pos)
    if found is not None:
        return FineLayout(found[0], found[1], None)
    if pos.size(0) < 2:
        return FineLayout(None, None, None)
    return FineLayout(None, None, intra_map_graph(pos.detach().cpu(), k=min(k, pos.size(0) - 1)))


class FineMixer(nn.Module):
    """Residual exchange between fine nodes: x + up(U-Net(down(x))) on a lattice, GNN(x) (residual
    blocks) on a graph.

    Args:
        channels: D. window: W, steps per window (the U-Net's channels are W·R). num_layers:
            Chebyshev blocks (graph). cheb_k: their K. unet_hidden: the U-Net's first width.
        time_channels: R, features per step the U-Net sees.

    Shapes: x (B, W, N, D), layout :func:`fine_layout` of the N nodes -> (B, W, N, D).
    """

    def __init__(
        self,
        channels: int,
        window: int,
        num_layers: int = 1,
        cheb_k: int = 2,
        unet_hidden: int = 32,
        time_channels: int = 4,
    ):
        super().__init__()
        self.window = window
        self.graph = IntraMapGNN(channels, num_layers, cheb_k, levels=1)  # residual blocks inside
        self.down = nn.Linear(channels, time_channels)
        self.unet = UNet2d(window * time_channels, unet_hidden)
        self.up = nn.Linear(time_channels, channels)

    def forward(self, x: torch.Tensor, layout: FineLayout) -> torch.Tensor:
        b, w, n, d = x.shape
        if layout.lattice is not None:
            if w != self.window:
                raise ValueError(f"FineMixer: built for windows of {self.window} steps, got {w}")
            rows, cols = layout.lattice
            cell = layout.cell.to(x.device)
            z = self.down(x).permute(0, 2, 1, 3).reshape(b, n, -1)  # (B, N, W·R), step-major channels
            grid = z.new_zeros(b, rows * cols, z.size(-1)).index_copy(1, cell, z)
            out = self.unet(grid.transpose(1, 2).reshape(b, -1, rows, cols))  # (B, W·R, I, J)
            out = out.reshape(b, w, -1, rows * cols)[..., cell].permute(0, 1, 3, 2)  # (B, W, N, R)
            return x + self.up(out)
        if layout.graph is None:
            return x
        return self.graph(x, layout.graph)
