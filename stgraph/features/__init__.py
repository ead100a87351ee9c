"""Tabular features from station graphs, for fitted learners (AMLSG's stack, gradient-boosted trees).

:func:`station_features` gives one row per output cell, built from the visible stations only.
"""

from __future__ import annotations

from stgraph.features.graph_features import FeatureConfig, station_features

__all__ = ["FeatureConfig", "station_features"]
