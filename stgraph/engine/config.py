"""Experiment configuration: small typed dataclasses loaded from YAML and validated strictly.

Every key is checked against the dataclass fields, so a typo (``train.lrr``) or a wrong type
(``train.epochs: "ten"``) fails at load time with the file, the dotted key and what was expected.
Sizes (number of stations, channels, time steps) come from the data, never from YAML. Overrides of
the form ``a.b=value`` are parsed as YAML and validated the same way; under ``model.hparams`` any
key may be set, because the model validates its own hyper-parameters.

The YAML dialect differs from PyYAML's defaults in two places, both so values mean what they look
like: ``1e-3`` is a float (not the string ``"1e-3"``) and ``2014-01-01`` stays a string (not a
``datetime.date``). There is no arithmetic or interpolation.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from stgraph.engine.tasks import TASK_CLASSES, foreign_options

__all__ = [
    "ConfigError",
    "DataConfig",
    "SplitConfig",
    "ModelConfig",
    "TrainConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "save_config",
]


class ConfigError(ValueError):
    """An invalid configuration. The message names the source file, the dotted key and what was expected."""


@dataclass
class DataConfig:
    """Which dataset, which channels and which windows.

    Args:
        dataset: Registered dataset name (see ``stgraph.list_datasets``).
        data_dir: Folder to read the dataset from; None = the loader's default search path.
        long: Your own long-format table (CSV/Parquet: station, time, <variables>) named inline
            instead of a dataset name (``dataset`` is then only the data's name); read with
            :func:`stgraph.data.readers.read_long_table`. A named dataset
            (``stgraph datasets add``) records checksums; an inline file does not.
        stations: The stations table for ``long`` (None: ``long`` has latitude/longitude columns).
        reader: ``read_long_table`` options for ``long`` (``irregular``, ``negative``,
            ``nonnegative``, ``duplicate_coordinates``, ``variables``, ``units``, ``freq``,
            ``station_column``, ``time_column``).
        input_channels: Channels fed to the model; None = all channels.
        target_channels: Channels predicted and scored.
        start: Optional start of a time slice (anything pandas parses).
        end: Optional end of a time slice.
        task: ``"forecast"``, ``"krige"`` (hidden stations over the input window), ``"impute"``
            (in-sample: the dataset's evaluation cells) or ``"reconstruct"`` (hidden stations and
            the visible stations' cells removed by a sparse pattern: ``split.pattern``); for the
            last three horizon = window. Any task registered with
            :func:`stgraph.engine.tasks.register_task` is accepted.
        window: Input window length in time steps.
        horizon: Forecast horizon in time steps.
        stride: Step between consecutive training window starts (a recorded CPU budget; evaluation
            always takes every start, thinned evenly by ``train.max_eval_windows``).
        eval_stride: Step between evaluation (val and test) window starts; 1 = every start
            (overlapping windows, each cell scored once), ``window`` = non-overlapping windows
            (the CSDI/PriSTI imputation protocol).
        eval_steps: 1-based horizon steps to report separately, each at most the horizon (the window
            for krige / impute / reconstruct); None = those of 6, 12 and 24 that fit; [] = none.
        daily: Score on daily means instead of raw steps.
        eval_days: Days (1-based) to report separately when ``daily`` is set.
        colocated_channels: Protocol option, AMLSG's *hybrid anchor*: input channels (e.g. ``[PM10,
            CO]`` for PM2.5) the protocol declares observed at the target stations too, so a
            reliably observed pollutant anchors the reconstruction of the others. Models get them
            in ``GraphBatch.colocated_tgt`` (targets' values over the input steps, standardised):
            training batches carry the hidden training stations', evaluation the val/test
            stations'. They must be input channels and not target channels; the targets' other
            channels never reach the model. With ``node_masking: sample`` the hidden stations keep
            their co-located channels in ``x`` (their other channels are cleared). Not for ``impute``
            (a station's other channels are already its input). Empty = off.
        aggregate: Protocol option, AMLSG's *downscaling*: ``mean`` gives every model, at each
            input step, the mean of the target channels over the observed stations of the batch's
            universe (``GraphBatch.aggregate``): in training the sampled training stations, hidden
            ones included; at evaluation the train-role stations plus the scored role's (never
            the other hidden role's, never val/test stations in training). **By design this lets
            the hidden stations' values reach the model, through this aggregate and only through
            it** (the city-level series is known, the district values are not): scores under it
            are downscaling scores, not kriging ones. ``none`` (default) = off. Not for ``impute``.
        grid_coarsen: DiffRecon's grid protocol (``reconstruct`` on a grid dataset only): f >= 2
            makes the network the f × f block means of the grid (coarse cells: visible, with the
            sparse pattern) plus the grid's cells (fine cells: the targets). Unlike station
            ``reconstruct``, the fine cells' train-period values are training targets (unseen
            times, not unseen places); see :mod:`stgraph.engine.tasks.grid_reconstruct`. 0 = off.
        scaler: ``channel`` (default): one mean and std per channel over the train-role stations'
            train-period cells; ``station``: one per (station, channel) over each station's own
            train-period cells (CSDI's and PriSTI's normalisation on AQI-36). ``impute`` only: a
            hidden station has no training cells to take its statistics from.
    """

    dataset: str = "uci-beijing-12"
    data_dir: str | None = None
    long: str | None = None
    stations: str | None = None
    reader: dict[str, Any] = field(default_factory=dict)
    input_channels: list[str] | None = None
    target_channels: list[str] = field(default_factory=lambda: ["PM2.5"])
    start: str | None = None
    end: str | None = None
    task: str = "forecast"
    window: int = 24
    horizon: int = 24
    stride: int = 1
    eval_stride: int = 1
    eval_steps: list[int] | None = None
    daily: bool = False
    eval_days: list[int] = field(default_factory=list)
    colocated_channels: list[str] = field(default_factory=list)
    aggregate: Literal["none", "mean"] = "none"
    grid_coarsen: int = 0
    scaler: Literal["channel", "station"] = "channel"


@dataclass
class SplitConfig:
    """How stations (and time) are split into train / val / test.

    Args:
        method: One of ``kfold``, ``spatial_kfold``, ``random``, ``bernoulli``, ``spatial_block``, ``explicit``,
            ``loso``. ``bernoulli`` is KITS's split: each station hidden (test) with probability
            ``test`` for the whole series, ``val`` stations drawn from the visible ones.
        n_folds: Number of folds for the fold-based methods.
        fold: Which fold is the test fold (0-based).
        val: Validation stations: a count (>= 1) or a fraction of the non-test stations.
        test: Test stations: a count or a fraction (methods that do not use folds); for ``bernoulli``
            the probability of hiding each station.
        seed: Seed of the station shuffle.
        test_stations: Station ids for ``explicit`` (and the held-out station for ``loso``).
        val_stations: Station ids for ``explicit``.
        time_val: Fraction of time steps used for validation.
        time_test: Fraction of time steps used for testing.
        time_gap: Steps dropped between time blocks; None = window + horizon.
        test_months: Non-empty: month-based time split, these months (1-12) are test.
        val_months: With ``test_months``: these months (1-12) are the validation period, whole
            and removed from training (CSDI's held-out validation month), instead of the last
            ``time_val`` of each run of training months. Empty = ``time_val``.
        impute_training: ``impute`` only. ``out-of-sample`` (the published setting of GRIN, SPIN,
            CSDI, PriSTI) trains on the train period only (AQI-36: months other than 3/6/9/12 and
            the val steps), its evaluation cells included as observed training data;
            ``out-of-sample-strict`` also withholds the train period's evaluation cells;
            ``in-sample`` trains on the whole series, test months included, without evaluation
            cells. The val and test periods' evaluation cells are never an input in any mode.
        backcast: Protocol option, AMLSG's *temporal backcasting*: the chronological split
            reversed, test | gap | val | gap | train, so models train on the latest part of the
            series and estimate the earliest (``time_test``, ``time_val`` and ``time_gap`` as in
            the forward split). The scaler and training windows come from the train period only.
        periods: Explicit periods ``{train: [start, end], val: [start, end], test: [start, end]}``,
            half-open ``start <= time < end`` like ``data.start``/``data.end`` (anything pandas
            parses), e.g. train on 2015-2017 and estimate 2013-2014. They must not overlap and
            each must hold a whole window; ``time_gap`` steps of train next to val or test, and
            of val next to test, are left out, as in the month split. Empty = fractions.
        pattern: ``reconstruct`` only: the sparse pattern removed from the visible (train-role)
            stations' cells over the whole series (:mod:`stgraph.data.patterns`): ``fixed`` (the
            same stations at every step), ``random`` (new stations each step) or ``block`` (the
            quarter of stations nearest ``pattern_corner``; ignores ``pattern_ratio``).
        pattern_ratio: Fraction of the visible stations removed (per step); 0.2/0.4/0.6/0.8 are
            the standard ratios, any in (0, 1) is accepted.
        pattern_seed: Seed of the pattern; None = ``seed``.
        pattern_corner: Corner of the ``block`` pattern's bounding box.
    """

    method: Literal["kfold", "spatial_kfold", "random", "bernoulli", "spatial_block", "explicit", "loso"] = "kfold"
    n_folds: int = 4
    fold: int = 0
    val: float = 1
    test: float = 0.25
    seed: int = 0
    test_stations: list[str] = field(default_factory=list)
    val_stations: list[str] = field(default_factory=list)
    time_val: float = 0.1
    time_test: float = 0.2
    time_gap: int | None = None
    test_months: list[int] = field(default_factory=list)
    val_months: list[int] = field(default_factory=list)
    impute_training: Literal["out-of-sample", "out-of-sample-strict", "in-sample"] = "out-of-sample"
    backcast: bool = False
    periods: dict[str, list[str]] = field(default_factory=dict)
    pattern: Literal["fixed", "random", "block"] = "random"
    pattern_ratio: float = 0.4
    pattern_seed: int | None = None
    pattern_corner: Literal["south-east", "south-west", "north-east", "north-west"] = "south-east"


@dataclass
class ModelConfig:
    """Which model and its hyper-parameters.

    Args:
        name: Registered model name.
        hparams: Free-form hyper-parameters; the model validates them.
    """

    name: str = "aqnet"
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation settings.

    Two budgets: ``epochs`` (passes over ``max_train_windows`` or all training windows, validated
    after each) or, when ``steps`` is set, a budget in optimiser steps: batches are drawn from a
    shuffled stream over every training window (a new permutation per pass), validated every
    ``val_every`` steps (a *round*: the unit of the log, the checkpoints and resume), and the
    schedules run on the step count.

    Args:
        epochs: Maximum number of epochs (without ``steps``).
        steps: Budget in optimiser steps; None = epochs. With it, ``patience`` and ``lr_patience``
            count rounds of ``val_every`` steps, unless ``patience_steps`` is given.
        val_every: Steps between validations (``steps`` mode).
        patience_steps: ``steps`` mode: steps without validation improvement before stopping;
            None = a quarter of the budget (never less than one round).
        early_stopping: False = run the whole budget (the best validation checkpoint is still the
            one kept), as CSDI and GRIN do.
        score_initial: Also score the untrained model (its anchor: IDW, lerp-kNN ...) on the test
            period, so the run records its gain over it on validation and test (one more evaluation).
        tensorboard: Write the training curves as TensorBoard event files in the run's
            ``tensorboard/`` folder too (:mod:`stgraph.engine.tensorboard_log`); on by default.
        batch_size: Windows per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient-norm clip (0 = none).
        patience: Epochs without validation improvement before stopping.
        seed: Seed of initialisation and batch order.
        max_train_windows: Subsample this many training windows per epoch; None = all (an epoch
            is then one real pass over the training windows). A cap is a recorded CPU budget.
        max_eval_windows: Evaluate on at most this many windows; None = all.
        max_val_windows: Validate (early stopping, model selection) on at most this many val-period
            windows, evenly spaced; None = ``max_eval_windows``. A recorded CPU budget for models
            whose prediction is costly (sampling); test scores are unaffected.
        hide_fraction: Fraction of visible training stations hidden per batch (``impute``: of cells).
        hide_block: ``impute`` only: length in steps of the gaps hidden in training; 1 = single
            cells. Longer gaps mimic evaluation masks made of outages.
        hide_pattern: ``impute`` only: ``random`` (cells or ``hide_block`` gaps at ``hide_fraction``),
            ``history`` (each window hides its observed cells that are missing in another
            training window of the batch: the data's own outage pattern, CSDI's "historical"
            strategy for AQI-36) or ``mix`` (half the windows each way).
        hide_ratio: ``impute`` only: ``fixed`` (every window hides ``hide_fraction`` of its cells)
            or ``uniform`` (each window draws its own fraction from U(0, 1): CSDI's random
            strategy, which trains the model for every missing rate; ``hide_fraction`` is then unused).
        val_score: What validation scores (model selection, early stopping): ``mae`` (the
            estimate's MAE at the validation cells, standardised units; a sampling model samples)
            or ``loss`` (the model's training objective at the same cells with every random draw
            fixed: a diffusion model's ε-MSE at fixed noise and diffusion steps, CSDI's
            ``calc_loss_valid``; no sampling, so it costs one forward pass per window).
        src_loss_weight: Weight of the loss on the visible (source) stations.
        num_threads: ``torch.set_num_threads``; None = torch's default.
        retain_memory: Keep freed memory in the process instead of returning it to the system
            (glibc malloc; :mod:`stgraph.engine.allocator`): much faster steps for a model whose
            tensors are hundreds of megabytes (SPIN), at a higher peak resident size. Changes no
            number the run computes.
        loss: ``l1`` (masked mean absolute error, the default: the metric, and what GRIN, BRITS
            and DCRNN train with) or ``mse``.
        lr_schedule: ``plateau`` (halve the rate after ``lr_patience`` epochs without validation
            improvement), ``cosine`` (to 1 % of ``lr`` over ``epochs``, or per step over ``steps``),
            ``step`` (x0.1 at 75 % and at 90 % of the budget: CSDI's) or ``constant``.
        lr_patience: Epochs without improvement before ``plateau`` halves the rate.
        warmup_steps: Linear learning-rate warm-up over the first optimiser steps (0 = none).
        min_delta: Relative validation improvement that counts as one (early stopping, plateau).
        node_masking: ``batch`` (one hidden station set per batch; hidden stations become targets
            with no input) or ``sample`` (every sampled station stays visible and a different
            set per sample has its mask cleared: IGNNK's training). Not used by ``impute``.
        subgraph_size: Sample this many training stations per batch (IGNNK's random subgraphs);
            None = all. With it, memory per step is bounded by the subgraph, not by the network.
        subgraph: ``random`` (uniform, IGNNK) or ``local`` (a random centre and its
            ``subgraph_size`` nearest training stations: spatially compact station mini-batches;
            in the grid protocol, a patch of fine cells, which a model convolving the fine map
            needs: see :mod:`stgraph.engine.tasks.grid_reconstruct`).
        eval_target_chunk: Evaluate (and validate) the hidden stations in chunks of this many
            per model call; None = all at once.
        eval_neighbours: With ``eval_target_chunk``: each chunk sees only the union of its
            targets' this many nearest visible stations (memory bounded by the chunk, not the
            network); None = every visible station. Local models (IDW/kNN/GP with at most this many
            neighbours) give the same numbers either way; the test holds chunked evaluation to
            whole-network evaluation.
    """

    epochs: int = 30
    steps: int | None = None
    val_every: int = 200
    patience_steps: int | None = None
    early_stopping: bool = True
    score_initial: bool = False
    tensorboard: bool = True
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    patience: int = 5
    seed: int = 0
    max_train_windows: int | None = None
    max_eval_windows: int | None = None
    max_val_windows: int | None = None
    hide_fraction: float = 0.25
    hide_block: int = 1
    hide_pattern: Literal["random", "history", "mix"] = "random"
    hide_ratio: Literal["fixed", "uniform"] = "fixed"
    val_score: Literal["mae", "loss"] = "mae"
    src_loss_weight: float = 1.0
    num_threads: int | None = None
    retain_memory: bool = False
    loss: Literal["l1", "mse"] = "l1"
    lr_schedule: Literal["plateau", "cosine", "step", "constant"] = "plateau"
    lr_patience: int = 2
    warmup_steps: int = 0
    min_delta: float = 1e-3
    node_masking: Literal["batch", "sample"] = "batch"
    subgraph_size: int | None = None
    subgraph: Literal["random", "local"] = "random"
    eval_target_chunk: int | None = None
    eval_neighbours: int | None = None


@dataclass
class ExperimentConfig:
    """A whole experiment: data, split, model and training.

    Args:
        name: Experiment name (used for the run folder).
        data: Data settings.
        split: Split settings.
        model: Model settings.
        train: Training settings.
    """

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --- YAML dialect -------------------------------------------------------------------------------

_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# YAML 1.2 floats: unlike PyYAML's YAML 1.1 resolver, ``1e-3`` (no dot) is a float.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """Safe loader: exponent floats without a dot are floats; dates stay strings; a key given twice
    in one mapping is an error (PyYAML would keep the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # left to the base class, which reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"key {key!r} appears twice in one mapping (line {seen[key] + 1} and line "
                    f"{key_node.start_mark.line + 1}); give it once",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in (_FLOAT_TAG, _TIMESTAMP_TAG)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes every string the loader would read back as something else."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    """Lists of scalars on one line (``[6, 12, 24]``), everything else in block style."""
    flow = all(not isinstance(x, (list, tuple, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # _Loader derives from SafeLoader


# --- generic validation -------------------------------------------------------------------------


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _is_free_dict(hint: Any) -> bool:
    return hint is dict or get_origin(hint) is dict


def _describe(hint: Any) -> str:
    """Human wording of a type annotation, e.g. ``int or null``, ``list of str``."""
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if _is_union(hint):
        return " or ".join("null" if a is type(None) else _describe(a) for a in get_args(hint))
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is list:
        return f"list of {_describe(get_args(hint)[0])}"
    if _is_free_dict(hint):
        return "a mapping"
    if hint is float:
        return "float"
    return getattr(hint, "__name__", str(hint))


def _got(value: Any) -> str:
    if value is None:
        return "null"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(value).__name__} {shown}"


def _check(value: Any, hint: Any, key: str, source: str) -> Any:
    """Validate ``value`` against the annotation ``hint`` and return the converted value.

    Args:
        value: Raw value from YAML or a dict.
        hint: Resolved type annotation (a config dataclass, a union, ``list[...]``, a scalar type ...).
        key: Dotted key path of ``value``, for error messages (``""`` at the top level).
        source: Where the value came from (a file name), for error messages.
    """
    where = key or "<top level>"

    def fail() -> ConfigError:
        return ConfigError(f"{source}: {where}: expected {_describe(hint)}, got {_got(value)}")

    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise fail()
        hints = get_type_hints(hint)
        names = [f.name for f in dataclasses.fields(hint)]
        unknown = [k for k in value if k not in names]
        if unknown:
            keys = ", ".join(repr(_join(key, k)) for k in unknown)
            raise ConfigError(f"{source}: unknown key {keys}; allowed keys under {where}: {', '.join(names)}")
        return hint(**{k: _check(v, hints[k], _join(key, k), source) for k, v in value.items()})
    if _is_union(hint):
        if value is None and type(None) in get_args(hint):
            return None
        others = [a for a in get_args(hint) if a is not type(None)]
        if len(others) == 1:  # ``X | None``: an error inside X's value (``eval_steps[1]``) is X's own
            try:
                return _check(value, others[0], key, source)
            except ConfigError as e:
                if str(e).startswith((f"{source}: {key}[", f"{source}: {key}.")):
                    raise
                raise fail() from None
        for arg in get_args(hint):
            if arg is type(None):
                continue
            try:
                return _check(value, arg, key, source)
            except ConfigError:
                pass
        raise fail()
    if hint is Any:
        return value
    if get_origin(hint) is Literal:
        if isinstance(value, bool) or value not in get_args(hint):
            raise fail()
        return value
    if get_origin(hint) is list:
        if not isinstance(value, (list, tuple)):
            raise fail()
        (item,) = get_args(hint)
        return [_check(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if _is_free_dict(hint):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail()
        args = get_args(hint)
        value_hint = args[1] if args else Any
        return {k: _check(v, value_hint, _join(key, k), source) for k, v in value.items()}
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config annotation {hint!r} at {where} is not supported by the validator")
    if not ok:
        raise fail()
    return value


# --- public API ---------------------------------------------------------------------------------


# (dotted key, test, what is expected): ranges the types cannot say
_RANGES: list[tuple[str, Any, str]] = [
    ("data.window", lambda v: v >= 1, "an integer >= 1 (time steps per window)"),
    ("data.horizon", lambda v: v >= 1, "an integer >= 1 (time steps ahead)"),
    ("data.stride", lambda v: v >= 1, "an integer >= 1"),
    ("data.eval_stride", lambda v: v >= 1, "an integer >= 1"),
    ("data.grid_coarsen", lambda v: v == 0 or v >= 2, "0 (off) or an integer >= 2"),
    ("split.n_folds", lambda v: v >= 2, "an integer >= 2"),
    ("split.fold", lambda v: v >= 0, "an integer >= 0 (0-based)"),
    ("split.val", lambda v: v >= 0, "a count >= 1 or a fraction in [0, 1)"),
    ("split.test", lambda v: v > 0, "a count >= 1 or a fraction in (0, 1)"),
    ("split.time_val", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("split.time_test", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("split.time_gap", lambda v: v is None or v >= 0, "null or an integer >= 0"),
    ("split.pattern_ratio", lambda v: 0 < v < 1, "a fraction in (0, 1)"),
    ("train.epochs", lambda v: v >= 1, "an integer >= 1"),
    ("train.steps", lambda v: v is None or v >= 1, "null or an integer >= 1 (optimiser steps)"),
    ("train.val_every", lambda v: v >= 1, "an integer >= 1 (steps between validations)"),
    ("train.patience_steps", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.batch_size", lambda v: v >= 1, "an integer >= 1 (windows per batch)"),
    ("train.lr", lambda v: 0 < v < float("inf"), "a positive finite number"),
    ("train.weight_decay", lambda v: 0 <= v < float("inf"), "a number >= 0"),
    ("train.grad_clip", lambda v: 0 <= v < float("inf"), "a number >= 0 (0 = no clipping)"),
    ("train.patience", lambda v: v >= 1, "an integer >= 1"),
    ("train.lr_patience", lambda v: v >= 1, "an integer >= 1"),
    ("train.warmup_steps", lambda v: v >= 0, "an integer >= 0"),
    ("train.min_delta", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("train.hide_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("train.hide_block", lambda v: v >= 1, "an integer >= 1"),
    ("train.src_loss_weight", lambda v: v >= 0, "a number >= 0"),
    ("train.num_threads", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.max_train_windows", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.max_eval_windows", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.max_val_windows", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.subgraph_size", lambda v: v is None or v >= 2, "null or an integer >= 2"),
    ("train.eval_target_chunk", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("train.eval_neighbours", lambda v: v is None or v >= 1, "null or an integer >= 1"),
]


def _check_values(cfg: ExperimentConfig, source: str) -> ExperimentConfig:
    """Ranges and relations the types cannot express, each error naming the dotted key."""
    for key, ok, expected in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"{source}: {key}: expected {expected}, got {_got(value)}")
    sp, dc = cfg.split, cfg.data
    if sp.method in ("kfold", "spatial_kfold") and sp.fold >= sp.n_folds:
        raise ConfigError(f"{source}: split.fold: expected 0 <= fold < split.n_folds ({sp.n_folds}), got {sp.fold}")
    if sp.time_val + sp.time_test >= 1:
        raise ConfigError(f"{source}: split.time_val + split.time_test must be < 1, got {sp.time_val + sp.time_test}")
    for key, months in (("test_months", sp.test_months), ("val_months", sp.val_months)):
        bad_months = [m for m in months if not 1 <= m <= 12]
        if bad_months:
            raise ConfigError(f"{source}: split.{key}: months are 1-12, got {bad_months}")
    if sp.val_months and not sp.test_months:
        raise ConfigError(f"{source}: split.val_months needs split.test_months (a month-based split)")
    both = sorted(set(sp.val_months) & set(sp.test_months))
    if both:
        raise ConfigError(f"{source}: split.val_months and split.test_months share months {both}")
    if dc.task not in TASK_CLASSES:
        raise ConfigError(f"{source}: data.task: expected one of {sorted(TASK_CLASSES)}, got '{dc.task}'")
    problems = TASK_CLASSES[dc.task].check_config(cfg) + foreign_options(cfg)
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")
    return cfg


def config_from_dict(d: Mapping[str, Any] | None, *, source: str = "<dict>") -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested mapping.

    Missing keys take their defaults; unknown keys, wrong types and values out of range (a window
    of 0, a negative learning rate, ...) raise :class:`ConfigError` naming the dotted key.

    Args:
        d: Nested mapping as read from YAML; None means all defaults.
        source: Name of where ``d`` came from, used in error messages.
    """
    return _check_values(_check({} if d is None else d, ExperimentConfig, "", source), source)


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain nested dicts and lists (a deep copy).

    Args:
        cfg: Configuration to convert.
    """
    return dataclasses.asdict(cfg)


def _override_target(parts: list[str], source: str) -> Any:
    """Check an override key path against the schema; return the annotation at its end.

    Under a free-form dict (``model.hparams``) any nested key is allowed and ``Any`` is returned.
    """
    hint: Any = ExperimentConfig
    for i, part in enumerate(parts):
        key, parent = ".".join(parts[: i + 1]), ".".join(parts[:i]) or "<top level>"
        if dataclasses.is_dataclass(hint):
            hints = get_type_hints(hint)
            if part not in hints:
                raise ConfigError(f"{source}: unknown key {key!r}; allowed keys under {parent}: {', '.join(hints)}")
            hint = hints[part]
        elif _is_free_dict(hint):
            return Any
        else:
            raise ConfigError(f"{source}: {parent} is {_describe(hint)}, it has no key {part!r} (in {key!r})")
    return hint


def _apply_override(d: dict[str, Any], override: str, source: str) -> None:
    path, eq, text = override.partition("=")
    parts = path.strip().split(".")
    if not eq or not all(p.strip() for p in parts):
        raise ConfigError(f"{source}: override {override!r} must look like KEY=VALUE, e.g. train.lr=3e-4")
    parts = [p.strip() for p in parts]
    try:
        value = _parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: value of override {override!r} is not valid YAML: {e}") from None
    hint = _override_target(parts, source)
    node = d
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])} is {_got(nxt)}, it has no key {parts[i + 1]!r}")
        node = nxt
    last = parts[-1]
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping) and isinstance(node.get(last), dict):
        node[last].update(value)  # a whole section: merge, unnamed keys keep their values
    else:
        node[last] = value


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment config from YAML, validate it, then apply ``KEY=VALUE`` overrides.

    Args:
        path: YAML file. An empty file means all defaults.
        overrides: Strings like ``train.lr=3e-4``, ``data.eval_steps=[6,12]`` or ``model.hparams.k=10``;
            the value is parsed as YAML and validated like the file.

    Raises:
        ConfigError: (a ValueError) naming the file, the dotted key and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        raw = _parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    cfg = config_from_dict(raw, source=str(path))
    for override in overrides or []:
        source = f"{path} (override {override!r})"
        d = config_to_dict(cfg)
        _apply_override(d, override, source)
        cfg = config_from_dict(d, source=source)
    return cfg


def save_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config (every key, defaults included) as YAML; returns the path.

    The file is written to a temporary name in the same folder and then renamed, so it is never
    half-written. ``load_config(save_config(cfg, p)) == cfg``.

    Args:
        cfg: Configuration to write.
        path: Destination file; its folder must exist.
    """
    path = Path(path)
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("# stgraph experiment config (resolved)\n" + text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
