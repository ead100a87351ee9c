"""Layers shared by models."""

from stgraph.nn.encoder import LSTMAttentionEncoder
from stgraph.nn.intra_map_gnn import IntraMapGNN, intra_map_graph
from stgraph.nn.neural_knn import NeuralKNNInterpolation, local_km
from stgraph.nn.st_pointformer import STPointFormer
from stgraph.nn.t_patternnet import TPatternNet
from stgraph.nn.unet2d import UNet2d

__all__ = [
    "LSTMAttentionEncoder",
    "NeuralKNNInterpolation",
    "local_km",
    "STPointFormer",
    "TPatternNet",
    "IntraMapGNN",
    "intra_map_graph",
    "UNet2d",
]
