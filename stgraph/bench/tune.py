"""Equal-budget tuning on Optuna: ``stgraph tune CONFIG --trials N --budget STEPS``.

Every model gets the same budget: N trials of at most STEPS optimiser steps each (``train.steps``),
searching the hyper-parameters its class declares (``search_space`` in the model's file,
:mod:`stgraph.models.search`) plus the learning rate for a trained model. A trial is scored on the
validation stations and period only (the best validation score of its training, the same score
that picks a run's checkpoint); the test period is never evaluated. A trial whose validation is
worse than the median of earlier trials at the same step is stopped (Optuna's median pruner).

Everything lives in ``OUT``: ``study.db`` (the SQLite study: a second call resumes it and runs
only the trials still missing), ``trials/trialNNN/`` (each trial's run folder: config, log,
checkpoints) and ``best.yaml`` (the base config with the best trial's hyper-parameters, ready for
``stgraph train``). The sampler is seeded (TPE, ``seed``), so a study is repeatable.
"""

from __future__ import annotations

import copy
from pathlib import Path

from stgraph.data.station_data import StationData
from stgraph.engine.config import ExperimentConfig, save_config
from stgraph.engine.fitting import fit_model
from stgraph.engine.run import build_experiment, record_run
from stgraph.engine.run_folder import RunDir
from stgraph.engine.trainer import train_model, validate
from stgraph.models.registry import get_model_class
from stgraph.models.search import Choice, FloatRange, IntRange, Range

LR_RANGE = FloatRange(1e-4, 1e-2, log=True)  # train.lr, searched for every trained model
STUDY_FILE = "study.db"
BEST_FILE = "best.yaml"


def model_space(cfg: ExperimentConfig) -> dict[str, Range]:
    """The searched names and ranges: the model's ``search_space`` as ``hparams.<name>``, plus
    ``train.lr`` for a trained model. A name that is not a field of the model's params is an error."""
    import dataclasses

    cls, params = get_model_class(cfg.model.name)
    fields = {f.name for f in dataclasses.fields(params)}
    bad = sorted(set(cls.search_space) - fields)
    if bad:
        raise ValueError(f"model '{cfg.model.name}': search_space names {bad} that are not hyper-parameters")
    space = {f"hparams.{k}": v for k, v in cls.search_space.items()}
    if cls.trainable:
        space["train.lr"] = LR_RANGE
    if not space:
        raise ValueError(f"model '{cfg.model.name}' declares nothing to tune (no search_space, not trained)")
    return space


def _suggest(trial, name: str, r: Range):
    if isinstance(r, IntRange):
        return trial.suggest_int(name, r.low, r.high, log=r.log)
    if isinstance(r, FloatRange):
        return trial.suggest_float(name, r.low, r.high, log=r.log)
    if isinstance(r, Choice):
        return trial.suggest_categorical(name, list(r.values))
    raise TypeError(f"{name}: unknown range {r!r}")


def with_params(cfg: ExperimentConfig, params: dict) -> ExperimentConfig:
    """``cfg`` with ``hparams.<name>`` and ``train.<name>`` values set."""
    out = copy.deepcopy(cfg)
    for key, value in params.items():
        section, name = key.split(".", 1)
        if section == "hparams":
            out.model.hparams = {**out.model.hparams, name: value}
        else:
            setattr(out.train, name, value)
    return out


def tune(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    trials: int,
    steps: int | None,
    data: StationData | None = None,
    seed: int = 0,
) -> dict:
    """Run the study in ``out`` up to ``trials`` finished trials (see the module docstring);
    returns the best value, its parameters and the trial counts, and writes ``best.yaml``.

    ``steps``: each trial's optimiser-step budget (``train.steps``); None keeps the config's."""
    import optuna

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = model_space(cfg)
    base = copy.deepcopy(cfg)
    if steps is not None:
        base.train.steps = steps
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=cfg.name,
        storage=f"sqlite:///{out / STUDY_FILE}",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial) -> float:
        params = {name: _suggest(trial, name, r) for name, r in space.items()}
        trial_cfg = with_params(base, params)
        trial_cfg.name = f"trial{trial.number:03d}"
        exp, model = build_experiment(trial_cfg, data)
        run = RunDir.create(out / "trials", trial_cfg.name)
        record_run(exp, run)
        fit_model(model, exp, run.path)
        if not model.trainable:
            return validate(model, exp)

        def report(_epoch: int) -> None:
            record = run.read_log()[-1]
            trial.report(record["val_mae_scaled"], record["step"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        return train_model(model, exp, run, on_epoch_end=report, progress=False)["best_val"]

    missing = trials - sum(t.state in finished for t in study.trials)
    if missing > 0:
        study.optimize(objective, n_trials=missing)
    best = study.best_trial
    save_config(with_params(base, best.params), out / BEST_FILE)
    states = [t.state for t in study.trials]
    return {
        "best_value": best.value,
        "best_params": best.params,
        "best_trial": best.number,
        "trials": sum(s in finished for s in states),
        "pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states),
        "steps_per_trial": base.train.steps,
    }
