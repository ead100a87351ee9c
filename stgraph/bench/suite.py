"""A benchmark suite: one YAML file that expands into every (task, model, fold, seed) run.

```yaml
name: uci12
base: {data: {...}, split: {...}, train: {...}}   # an experiment config every run starts from
tasks:                                             # task label -> overrides of base
  krige: {data: {task: krige, window: 24}}
  impute: {data: {task: impute}, folds: [0]}       # a task may narrow folds / seeds / models (models: [..])
models:                                            # row label -> model and overrides
  aqnet: {hparams: {hidden_channels: 32}}
  idw-p2: {model: idw, hparams: {power: 2.0}}
  dcrnn: {hparams: {...}, data: {stride: 16}, seeds: [0], tasks: {long: {train: {max_train_windows: 64}}}}
folds: [0, 1, 2, 3]                                # station folds (split.fold)
seeds: [0, 1, 2]                                   # training seeds (train.seed)
reference: {krige: {"published model": 12.3}}      # published MAE printed beside a task's table
```

A model runs only on tasks it declares (``StationModel.tasks``); a model with no parameters
runs once per fold (its seeds would be copies). Every run's config is validated when the suite is
loaded, so a typo fails before hours of training.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stgraph.engine.config import ConfigError, ExperimentConfig, _parse_yaml, config_from_dict
from stgraph.engine.tasks import TASK_CLASSES
from stgraph.models.registry import get_model_class

SUITE_KEYS = {"name", "description", "base", "tasks", "models", "folds", "seeds", "reference", "workers", "tune"}
MODEL_KEYS = {"model", "hparams", "train", "data", "tasks", "seeds"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")  # a task or model label is one folder name below OUT/runs


def deep_merge(base: dict, over: dict) -> dict:
    """A copy of ``base`` with ``over`` merged in (mappings recursively, anything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One run of a suite. ``name`` is its folder below ``OUT/runs``: ``task/model/foldF-seedS``."""

    task: str
    model: str
    fold: int
    seed: int
    config: ExperimentConfig = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.model}/fold{self.fold}-seed{self.seed}"


@dataclass
class Suite:
    name: str
    runs: list[RunSpec]
    tasks: list[str]
    models: list[str]
    reference: dict[str, dict[str, float]]
    description: str = ""
    workers: int | None = None
    source: str = "<dict>"
    tune: dict | None = None  # {"trials": N, "steps": S}: every tunable row tuned per fold before its runs

    def select(self, *, models=None, tasks=None, folds=None, seeds=None) -> Suite:
        """The sub-suite of the given models / tasks / folds / seeds (None: all)."""
        for label, want, have in (("model", models, self.models), ("task", tasks, self.tasks)):
            unknown = sorted(set(want or []) - set(have))
            if unknown:
                raise ValueError(f"{self.source}: unknown {label}(s) {unknown}; the suite has {have}")
        for label, want, have in (("fold", folds, {r.fold for r in self.runs}),
                                  ("seed", seeds, {r.seed for r in self.runs})):  # fmt: skip
            unknown = sorted(set(want or []) - have)
            if unknown:
                raise ValueError(f"{self.source}: --{label}s {unknown}: the suite has {label}s {sorted(have)}")
        keep = [
            r
            for r in self.runs
            if (models is None or r.model in models)
            and (tasks is None or r.task in tasks)
            and (folds is None or r.fold in folds)
            and (seeds is None or r.seed in seeds)
        ]
        return Suite(
            self.name,
            keep,
            [t for t in self.tasks if tasks is None or t in tasks],
            [m for m in self.models if models is None or m in models],
            self.reference,
            self.description,
            self.workers,
            self.source,
            self.tune,
        )


def _require(cond: bool, source: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: {msg}")


def suite_from_dict(d: dict[str, Any], *, source: str = "<dict>") -> Suite:
    _require(isinstance(d, dict), source, "a suite is a mapping")
    unknown = sorted(set(d) - SUITE_KEYS)
    _require(not unknown, source, f"unknown keys {unknown}; allowed: {sorted(SUITE_KEYS)}")
    for key in ("name", "tasks", "models"):
        _require(key in d, source, f"missing '{key}'")
    tasks, models = d["tasks"], d["models"]
    _require(isinstance(tasks, dict) and tasks, source, "'tasks' must map task labels to config overrides")
    _require(isinstance(models, dict) and models, source, "'models' must map row labels to model settings")
    folds, seeds = d.get("folds", [0]), d.get("seeds", [0])
    for key, value in (("folds", folds), ("seeds", seeds)):
        _require(
            isinstance(value, list) and value and all(isinstance(v, int) for v in value),
            source,
            f"'{key}': list of int",
        )
    for kind, labels in (("tasks", tasks), ("models", models)):
        for label in labels:
            _require(
                isinstance(label, str) and bool(LABEL.match(label)) and ".." not in label, source,
                f"{kind}: label {label!r} must be a single folder name (letters, digits, '.', '_', '-', '+', '='; "
                "no '/', no '..')",
            )
    runs = []
    for label, spec in models.items():
        spec = spec or {}
        _require(isinstance(spec, dict), source, f"models.{label}: expected a mapping")
        bad = sorted(set(spec) - MODEL_KEYS)
        _require(not bad, source, f"models.{label}: unknown keys {bad}; allowed: {sorted(MODEL_KEYS)}")
        name = spec.get("model", label)
        try:
            cls, _ = get_model_class(name)
        except KeyError as e:
            raise ConfigError(f"{source}: models.{label}: {e.args[0]}") from None
        per_task = spec.get("tasks") or {}
        bad = sorted(set(per_task) - set(tasks))
        _require(not bad, source, f"models.{label}.tasks: {bad} are not tasks of this suite {sorted(tasks)}")
        for task, over in tasks.items():
            over = dict(over or {})
            task_folds, task_seeds = over.pop("folds", folds), over.pop("seeds", seeds)
            task_models = over.pop("models", None)
            if task_models is not None and label not in task_models:
                continue
            merged = deep_merge(d.get("base") or {}, over)
            merged = deep_merge(merged, {"model": {"name": name, "hparams": spec.get("hparams") or {}}})
            merged = deep_merge(merged, {"train": spec.get("train") or {}, "data": spec.get("data") or {}})
            merged = deep_merge(merged, per_task.get(task) or {})
            name_of_task = (merged.get("data") or {}).get("task", "forecast")
            if name_of_task in TASK_CLASSES and TASK_CLASSES[name_of_task].kind not in cls.tasks:
                continue  # an unknown task name is left to the config's own error below
            if spec.get("seeds") is not None:  # a model may run fewer seeds (a heavy model's CPU budget)
                task_seeds = [x for x in task_seeds if x in spec["seeds"]]
            for fold in task_folds:
                for seed in task_seeds if (cls.trainable or cls.fits) else task_seeds[:1]:  # fits: seeded too
                    one = deep_merge(merged, {"name": f"{d['name']}-{task}-{label}-fold{fold}-seed{seed}"})
                    one = deep_merge(one, {"split": {"fold": fold}, "train": {"seed": seed}})
                    cfg = config_from_dict(one, source=f"{source} [task {task}, model {label}]")
                    runs.append(RunSpec(task, label, fold, seed, cfg))
    order = {t: i for i, t in enumerate(tasks)}
    runs.sort(key=lambda r: order[r.task])  # task by task (stable: models in suite order within a task)
    reference = d.get("reference") or {}
    _require(isinstance(reference, dict), source, "'reference' must map tasks to {label: MAE}")
    tune = d.get("tune")
    if tune is not None:
        _require(
            isinstance(tune, dict) and set(tune) == {"trials", "steps"}
            and all(isinstance(tune[k], int) and tune[k] >= 1 for k in tune),
            source, "'tune' must be {trials: N, steps: S} with N, S >= 1 (trials per fold, optimiser steps per trial)",
        )  # fmt: skip
    return Suite(
        name=str(d["name"]),
        runs=runs,
        tasks=list(tasks),
        models=list(models),
        reference={t: dict(v) for t, v in reference.items()},
        description=str(d.get("description", "")),
        workers=d.get("workers"),
        source=source,
        tune=dict(tune) if tune else None,
    )


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"suite file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        raw = _parse_yaml(text)  # the config dialect: 1e-3 is a float
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return suite_from_dict(raw, source=str(path))  # the config dialect: 1e-3 is a float
