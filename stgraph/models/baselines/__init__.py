"""Baselines that go through the same evaluation path as every model."""

from stgraph.models.baselines.idw import IDW, IDWParams

__all__ = ["IDW", "IDWParams"]
