"""Model registry: names -> (class, hyperparameter dataclass), imported on first use.

Each entry names a module, its model class and its hyperparameter dataclass, so ``import
stgraph`` stays light and a model's dependencies load only when that model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing

from stgraph.models.base import DataSizes, StationModel

MODELS: dict[str, str] = {
    # native graph models: predict at stations with no history
    "aqnet": "stgraph.models.aqnet:AQNet:AQNetParams",
    "aqnet-ref": "stgraph.models.aqnet:AQNetRef:AQNetRefParams",
    "dcrnn": "stgraph.models.dcrnn:DCRNN:DCRNNParams",
    "stgcn": "stgraph.models.stgcn:STGCN:STGCNParams",
    "ignnk": "stgraph.models.ignnk:IGNNK:IGNNKParams",
    "grin": "stgraph.models.grin:GRIN:GRINParams",
    "spin": "stgraph.models.spin:SPIN:SPINParams",
    "spin-h": "stgraph.models.spin_h:SPINH:SPINHParams",
    # two-stage conditional diffusion (Diffusion-C on the visible stations, Diffusion-F on the targets)
    "diffrecon": "stgraph.models.diffrecon:DiffRecon:DiffReconParams",
    # spatial interpolators
    "idw": "stgraph.models.baselines.idw:IDW:IDWParams",
    "knn": "stgraph.models.baselines.knn_mean:KNNMean:KNNMeanParams",
    "gp": "stgraph.models.baselines.gp:GPKriging:GPParams",
    # upsampling a kNN-completed coarse map (DiffRecon's grid baselines)
    "bicubic": "stgraph.models.baselines.upsample:Bicubic:UpsampleParams",
    "idw-upsample": "stgraph.models.baselines.upsample:IDWUpsample:UpsampleParams",
    # fitted tabular models on graph features: AMLSG's stack, and LightGBM alone (RFSI-style)
    "amlsg": "stgraph.models.amlsg:AMLSG:AMLSGParams",
    "lgbm": "stgraph.models.amlsg:LGBM:LGBMParams",
    # interpolation in time (impute), alone and blended with the nearest stations
    "lerp": "stgraph.models.baselines.lerp:Lerp:LerpParams",
    "lerp-knn": "stgraph.models.baselines.lerp:LerpKNN:LerpKNNParams",
    # station-wise temporal models, read out at targets by inverse-distance weighting
    "persistence": "stgraph.models.baselines.persistence:Persistence:PersistenceParams",
    "seasonal-naive": "stgraph.models.baselines.seasonal_naive:SeasonalNaive:SeasonalNaiveParams",
    "linear": "stgraph.models.baselines.linear:LinearRegression:LinearParams",
    "lstm": "stgraph.models.baselines.lstm:LSTMForecaster:LSTMParams",
    "patchtst": "stgraph.models.baselines.patchtst:PatchTST:PatchTSTParams",
    # outside implementations: "pypots:<Name>" is PyPOTS's imputer <Name> (hyperparameter ``model``)
    "pypots": "stgraph.models.pypots_adapter:PyPOTSImputer:PyPOTSParams",
}
PARAMETRIC = {"pypots": "model"}  # "family:<value>" names: the value is this hyperparameter


def split_name(name: str) -> tuple[str, dict]:
    """("pypots", {"model": "SAITS"}) for "pypots:SAITS"; (name, {}) for a plain name."""
    family, sep, value = name.partition(":")
    if not sep:
        return name, {}
    key = _key(family)
    if key not in PARAMETRIC or not value:
        raise KeyError(f"unknown model '{name}': only {sorted(PARAMETRIC)} take 'family:<name>' names")
    return key, {PARAMETRIC[key]: value}


def _key(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in MODELS:
        raise KeyError(f"unknown model '{name}'; choose one of {sorted(MODELS)}")
    return key


def get_model_class(name: str) -> tuple[type[StationModel], type]:
    """(model class, hyperparameter dataclass) of a registered model."""
    module, cls, params = MODELS[_key(split_name(name)[0])].split(":")
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, params)


def build_model(name: str, sizes: DataSizes, hparams: dict | None = None) -> StationModel:
    """Instantiate a registered model; unknown or mistyped hyperparameters, and a task the model
    is not defined for, are errors."""
    cls, params_cls = get_model_class(name)
    name, fixed = split_name(name)
    if fixed and any(k in (hparams or {}) for k in fixed):
        raise ValueError(f"model '{name}:{next(iter(fixed.values()))}': the name already sets {sorted(fixed)}")
    hparams = {**(hparams or {}), **fixed}
    if sizes.task not in cls.tasks:
        raise ValueError(f"model '{name}' is not defined for task '{sizes.task}'; it supports {sorted(cls.tasks)}")
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
