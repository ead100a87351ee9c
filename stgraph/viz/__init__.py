"""Plots: station maps (more to come: errors per station, attention, reanalysis grids)."""

from stgraph.viz.maps import plot_station_map

__all__ = ["plot_station_map"]
