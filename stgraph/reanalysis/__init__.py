"""Reanalysis: a gap-free field from a run, at every cell of a lat/lon grid or at given points, as a
CF-conventions NetCDF file (``stgraph reanalyse``)."""

from stgraph.reanalysis.estimate import ReanalysisRun, load_reanalysis_run
from stgraph.reanalysis.netcdf import write_reanalysis
from stgraph.reanalysis.targets import grid_targets, read_points

__all__ = ["ReanalysisRun", "load_reanalysis_run", "write_reanalysis", "grid_targets", "read_points"]
