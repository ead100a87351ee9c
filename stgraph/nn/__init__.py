"""Layers shared by models."""

from stgraph.nn.encoder import LSTMAttentionEncoder
from stgraph.nn.neural_knn import NeuralKNNInterpolation, local_km

__all__ = ["LSTMAttentionEncoder", "NeuralKNNInterpolation", "local_km"]
