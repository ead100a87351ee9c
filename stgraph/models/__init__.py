"""Models: one file per model; all share :class:`~stgraph.models.base.StationModel`'s interface."""

from stgraph.models.aqnet import AQNet, AQNetParams, AQNetRef
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.baselines import IDW, IDWParams
from stgraph.models.registry import MODELS, build_model, get_model_class

__all__ = [
    "StationModel",
    "GraphBatch",
    "Prediction",
    "DataSizes",
    "AQNet",
    "AQNetRef",
    "AQNetParams",
    "IDW",
    "IDWParams",
    "MODELS",
    "build_model",
    "get_model_class",
]
