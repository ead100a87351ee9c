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

A suite with ``tune: {trials: N, steps: S}`` tunes every tunable row this way before its runs,
per task and station fold (:func:`tuned_suite`); its leaderboard says which rows were tuned.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from stgraph.bench.data_cache import dataset, source_key
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


TUNING_DIR = "tuning"
TUNED_FILE = "tuned.json"


def tunable(spec_config: ExperimentConfig) -> bool:
    """Whether a run's model has anything to tune (a search space, or a learning rate)."""
    cls, _ = get_model_class(spec_config.model.name)
    return bool(cls.search_space) or cls.trainable


def tuned_suite(suite, out: str | Path, *, run_trials: bool):
    """The suite with every tunable row's runs carrying the hyper-parameters tuned for it.

    With ``suite.tune = {trials, steps}``, each (task, row, fold) is tuned once, on that fold's own
    validation stations and period (never another fold's, whose validation stations may be this
    fold's test stations), with ``trials`` trials of ``steps`` optimiser steps, in
    ``OUT/tuning/TASK/ROW/foldF`` (resumable); all seeds of the fold then run with the best
    parameters. ``run_trials=False`` (reading results) applies the studies that finished and leaves
    the others' rows as they are. Returns the suite unchanged when it has no ``tune``."""
    if not suite.tune:
        return suite
    out = Path(out)
    best: dict[tuple[str, str, int], dict] = {}
    for spec in suite.runs:
        key = (spec.task, spec.model, spec.fold)
        if key in best or not tunable(spec.config):
            continue
        folder = out / TUNING_DIR / spec.task / spec.model / f"fold{spec.fold}"
        done = folder / TUNED_FILE
        if run_trials and not done.exists():
            cfg = copy.deepcopy(spec.config)
            cfg.name = f"{suite.name}-{spec.task}-{spec.model}-fold{spec.fold}"
            result = tune(cfg, folder, trials=suite.tune["trials"], steps=suite.tune["steps"],
                          data=dataset(source_key(cfg.data)), seed=spec.config.train.seed)  # fmt: skip
            done.write_text(json.dumps({**result, **suite.tune}, indent=1, default=str))
        if done.exists():
            best[key] = json.loads(done.read_text())["best_params"]
    runs = [
        dataclasses.replace(s, config=with_params(s.config, best[(s.task, s.model, s.fold)]))
        if (s.task, s.model, s.fold) in best
        else s
        for s in suite.runs
    ]
    return dataclasses.replace(suite, runs=runs)


def tuned_rows(suite, out: str | Path) -> dict[str, int]:
    """Row label -> the number of (task, fold) studies that tuned it (finished ones)."""
    counts: dict[str, int] = {}
    for path in (Path(out) / TUNING_DIR).glob(f"*/*/fold*/{TUNED_FILE}"):
        counts[path.parent.parent.name] = counts.get(path.parent.parent.name, 0) + 1
    return counts
