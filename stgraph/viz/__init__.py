"""Plots (matplotlib, PNG): station maps, reanalysis maps, hidden-station series, error against
distance to the nearest visible station, leaderboard bars, learning curves (``stgraph plot``)."""

from stgraph.viz.figures import error_vs_distance, leaderboard_bars, learning_curves, reanalysis_map, station_series
from stgraph.viz.maps import plot_station_map

__all__ = [
    "plot_station_map",
    "reanalysis_map",
    "station_series",
    "error_vs_distance",
    "leaderboard_bars",
    "learning_curves",
]
