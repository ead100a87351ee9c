"""Edge weights from geodesic distances, and symmetrisation."""

from __future__ import annotations

import torch
from torch_geometric.utils import to_undirected

WEIGHTS = ("gaussian", "inverse", "none")


def gaussian_kernel(dist_km: torch.Tensor, sigma_km: float | None = None) -> torch.Tensor:
    """``exp(-(d / sigma)^2)``; ``sigma`` defaults to the std of the given distances (DCRNN's
    choice, taken over the graph's edges rather than all N² pairs)."""
    if sigma_km is None:
        sigma_km = float(dist_km.std()) if dist_km.numel() > 1 else 0.0
        if not sigma_km > 0:
            sigma_km = float(dist_km.abs().max()) if dist_km.numel() else 1.0
            sigma_km = sigma_km if sigma_km > 0 else 1.0
    if sigma_km <= 0:
        raise ValueError(f"sigma_km must be positive, got {sigma_km}")
    return torch.exp(-((dist_km / sigma_km) ** 2))


def inverse_distance(dist_km: torch.Tensor, power: float = 1.0, eps_km: float = 1e-3) -> torch.Tensor:
    """``1 / max(d, eps)^power``: the weights of inverse-distance weighting."""
    return dist_km.clamp_min(eps_km).pow(-power)


def edge_weights(dist_km: torch.Tensor, kind: str = "gaussian", sigma_km: float | None = None) -> torch.Tensor:
    if kind == "gaussian":
        return gaussian_kernel(dist_km, sigma_km)
    if kind == "inverse":
        return inverse_distance(dist_km)
    if kind == "none":
        return torch.ones_like(dist_km)
    raise ValueError(f"unknown edge weight '{kind}'; choose one of {WEIGHTS}")


def symmetrize(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Add the reverse of every edge (once); the result is sorted and free of duplicates."""
    return to_undirected(edge_index, num_nodes=num_nodes)
