"""Model registry: names -> (class, hyperparameter dataclass)."""

from __future__ import annotations

import dataclasses
import typing

from stgraph.models.aqnet import AQNet, AQNetParams, AQNetRef
from stgraph.models.base import DataSizes, StationModel
from stgraph.models.baselines.idw import IDW, IDWParams

MODELS: dict[str, tuple[type[StationModel], type]] = {
    "aqnet": (AQNet, AQNetParams),
    "aqnet-ref": (AQNetRef, AQNetParams),
    "idw": (IDW, IDWParams),
}


def get_model_class(name: str) -> tuple[type[StationModel], type]:
    key = name.strip().lower().replace("_", "-")
    if key not in MODELS:
        raise KeyError(f"unknown model '{name}'; choose one of {sorted(MODELS)}")
    return MODELS[key]


def build_model(name: str, sizes: DataSizes, hparams: dict | None = None) -> StationModel:
    """Instantiate a registered model; unknown or mistyped hyperparameters are an error."""
    cls, params_cls = get_model_class(name)
    hparams = dict(hparams or {})
    allowed = {f.name for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(hparams) - allowed)
    if unknown:
        raise ValueError(f"model '{name}': unknown hyperparameters {unknown}; allowed: {sorted(allowed)}")
    hints = typing.get_type_hints(params_cls)
    for key, value in hparams.items():
        want = hints[key]
        base = typing.get_origin(want) or want
        if base in (int, float, bool) and (
            isinstance(value, bool) != (base is bool) or not isinstance(value, (int, float))
        ):
            raise ValueError(f"model '{name}': hyperparameter {key}={value!r} should be {want}")
        if base is float:
            hparams[key] = float(value)
    return cls(sizes, params_cls(**hparams))
