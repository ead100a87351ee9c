"""Plain operations on masked station tensors, below the models and the features: IDW, the
last observation and the observations around a gap, neighbour order and the kNN mean,
``lerp-knn``, sample quantiles, masked losses. No parameters, no state; every function is vectorised."""

from stgraph.ops.idw import idw_weights, masked_idw
from stgraph.ops.lerp import lerp_in_time, lerp_knn
from stgraph.ops.losses import LOSSES, masked_l1, masked_mse
from stgraph.ops.neighbours import canonical_order, knn_mean, neighbour_order
from stgraph.ops.observed import last_observed, locf_nocb, observations_around, persisted_last
from stgraph.ops.quantiles import QUANTILE_LEVELS, sample_quantiles

__all__ = [
    "idw_weights",
    "masked_idw",
    "lerp_in_time",
    "lerp_knn",
    "canonical_order",
    "LOSSES",
    "masked_l1",
    "masked_mse",
    "knn_mean",
    "neighbour_order",
    "last_observed",
    "locf_nocb",
    "observations_around",
    "persisted_last",
    "QUANTILE_LEVELS",
    "sample_quantiles",
]
