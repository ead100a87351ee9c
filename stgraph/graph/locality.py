"""Space-filling-curve order for point sets: nearby points end up nearby in memory."""

from __future__ import annotations

import torch


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """10-bit integers -> 30-bit integers with two zero bits between the original bits."""
    v = v & 0x3FF
    v = (v | (v << 16)) & 0x30000FF
    v = (v | (v << 8)) & 0x300F00F
    v = (v | (v << 4)) & 0x30C30C3
    return (v | (v << 2)) & 0x9249249


def morton_order(pos: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
    """Permutation sorting ``pos`` (N, D) along a 3-D Morton (Z-order) curve of its first three
    coordinates, quantised to 1024 cells per axis inside ``[lo, hi]`` (default: its bounding box).

    Any permutation leaves a kNN result unchanged; this one makes a kd-tree's leaves contiguous in
    memory, which speeds up torch-cluster's kNN on large point sets (``benchmarks/knn.py`` measures
    the kNN build).
    """
    p = pos[:, :3].float()
    if p.size(1) < 3:
        p = torch.cat([p, p.new_zeros(p.size(0), 3 - p.size(1))], 1)
    lo = p.min(0).values if lo is None else lo[:3].float()
    hi = p.max(0).values if hi is None else hi[:3].float()
    if lo.numel() < 3:
        lo, hi = torch.cat([lo, lo.new_zeros(3 - lo.numel())]), torch.cat([hi, hi.new_zeros(3 - hi.numel())])
    q = ((p - lo) / (hi - lo).clamp_min(1e-12) * 1023).clamp(0, 1023).long()
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << 1) | (_spread_bits(q[:, 2]) << 2)
    return code.argsort()
