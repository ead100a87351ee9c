"""DiffRecon as a graph model: two-stage conditional diffusion that completes the visible
stations (stage 1, :mod:`~stgraph.models.diffrecon.coarse`) and infers the hidden ones (stage 2,
:mod:`~stgraph.models.diffrecon.fine`), with S samples per estimate; the model and its training
schedule are in :mod:`~stgraph.models.diffrecon.model`."""

from stgraph.models.diffrecon.model import DiffRecon, DiffReconParams

__all__ = ["DiffRecon", "DiffReconParams"]
