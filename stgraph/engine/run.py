"""One experiment end to end: config -> run folder with config, split, env, checkpoints,
predictions and metrics. ``stgraph train`` and the end-to-end test call :func:`run_experiment`.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from pathlib import Path

import numpy as np
import torch

from stgraph.data.patterns import SparsePattern
from stgraph.data.station_data import StationData
from stgraph.engine import distributed
from stgraph.engine.allocator import set_retain_memory
from stgraph.engine.config import ExperimentConfig, load_config, save_config
from stgraph.engine.evaluate import predict, score
from stgraph.engine.experiment import Experiment, prepare_experiment
from stgraph.engine.fit_curve import fit_training_summary, write_fit_curve
from stgraph.engine.fitting import fit_model
from stgraph.engine.run_folder import RunDir, environment_record, load_checkpoint
from stgraph.engine.run_identity import (
    IDENTITY_FILE,
    check_config,
    compare,
    data_checksums,
    expected_data_checksums,
    flat_config,
    make_identity,
)
from stgraph.engine.run_lock import run_lock
from stgraph.engine.trainer import train_model
from stgraph.models.registry import build_model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seeds third-party code that uses the global RNG)
    torch.manual_seed(seed)


def build_experiment(cfg: ExperimentConfig, data: StationData | None = None):
    """Seeded experiment and a fresh model, as every run starts."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    set_retain_memory(cfg.train.retain_memory)  # every run sets its own mode (a worker runs several)
    seed_everything(cfg.train.seed)
    exp = prepare_experiment(cfg, data)
    model = build_model(cfg.model.name, exp.sizes, cfg.model.hparams)
    return exp, model


PATTERN_FILE = "pattern.npz"


def record_run(exp: Experiment, run: RunDir) -> None:
    """config.yaml, split.json and env.json; for ``reconstruct`` also the sparse pattern: what it is
    in split.json (``pattern``) and its (T, N_visible) removed mask in ``pattern.npz``."""
    save_config(exp.cfg, run.config_path)
    split = {
        "stations": exp.split.to_dict(),
        "time": exp.periods.to_dict(),
        "scaler": exp.train.scaler.state_dict(),
        "channels": list(exp.data.channels),
    }
    if exp.pattern is not None:
        exp.pattern.save(run.path / PATTERN_FILE)
        ids = exp.data.ids(exp.pattern.nodes).tolist()
        split["pattern"] = {**exp.pattern.to_dict(), "stations": ids, "file": PATTERN_FILE}
    run.write_json("split.json", split)
    run.write_json("env.json", environment_record(seed=exp.cfg.train.seed, knn_backend=exp.knn_backend))


def evaluate_model(
    model, exp: Experiment, run: RunDir, training: dict | None = None, *, final: bool = True
) -> dict:
    """Predict and score the test period; ``metrics["evaluation"]`` records its cost (seconds, windows,
    seconds per window: for a sampling model, its sampling time per window).

    ``final=True`` (the end of training) writes ``metrics.json`` and ``predictions.npz``, which mark
    the run finished; ``final=False`` (``stgraph evaluate``) writes ``evaluation.json`` and
    ``evaluation_predictions.npz`` and leaves a crashed run resumable."""
    t0 = time.perf_counter()
    arrays = predict(model, exp, "test", "test")
    seconds = time.perf_counter() - t0
    windows = int(len(arrays["start"]))
    metrics = {
        "test": score(exp, arrays),
        "model": exp.cfg.model.name,
        "task": exp.cfg.data.task,
        "training": training or {},
        "evaluation": {"seconds": seconds, "windows": windows, "seconds_per_window": seconds / max(windows, 1)},
    }
    if getattr(model, "last_k_estimates", None) and len(model.last_k_estimates) > 1:
        metrics["k_eval"] = sorted(model.last_k_estimates)
    initial = metrics["training"].get("initial_test")
    if initial:  # the gain of the trained model over its untrained self (its anchor) on test
        best = metrics["test"]["hidden"]["overall"]["mae"]
        metrics["training"]["test_gain_over_initial"] = 1 - best / initial["mae"] if initial["mae"] else None
    if final:
        run.save_predictions(**arrays)
        run.write_json("metrics.json", metrics)
    else:
        run.save_predictions(EVALUATION_PREDICTIONS, **arrays)
        run.write_json(EVALUATION_FILE, metrics)
    return metrics


EVALUATION_FILE = "evaluation.json"
EVALUATION_PREDICTIONS = "evaluation_predictions.npz"


@functools.lru_cache(maxsize=1)
def code_version() -> str | None:
    """The version of the code this process runs: the git tree of the ``stgraph`` package (else the
    commit), read once: the code loaded at start."""
    env = environment_record(seed=0, knn_backend="")
    return env.get("code_tree") or env.get("git_commit")


FIT_FILE = "fit.json"  # a fitted model's record, written when its fit hook returns


def check_identity(run: RunDir, cfg: ExperimentConfig, checksums: dict | None) -> None:
    """Refuse ``run`` for ``cfg`` / data ``checksums`` when it answers for another one (see
    :mod:`stgraph.engine.run_identity`); a folder without ``identity.json`` (older runs) is checked
    on its ``config.yaml``."""
    finished = run.is_finished()
    if run.identity_path.exists():
        code = code_version() if not finished else None
        compare(run.path, run.read_json(IDENTITY_FILE), cfg, checksums, code, finished=finished)
    elif run.config_path.exists():
        check_config(run.path, flat_config(load_config(run.config_path)), cfg)


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    name: str | None = None,
    data: StationData | None = None,
    progress: bool = True,
) -> tuple[RunDir, dict]:
    """Train (resuming if ``out/name`` holds a crashed run of the same config, data and code) and
    evaluate on test-role stations. The folder is locked for the whole call (one writer); a folder
    that answers for another config or data is refused (:mod:`stgraph.engine.run_identity`)."""
    main = distributed.is_main()  # under torchrun only rank 0 writes; the others train and return {}
    # rank 0 makes (or checks) the folder before any other rank looks at it: a rank that checked it
    # while rank 0 was writing its first file would take it for a foreign folder
    run = RunDir.create(out, name or cfg.name) if main else None
    distributed.barrier()
    run = run or RunDir(Path(out) / (name or cfg.name))
    with run_lock(run.path) if main else contextlib.nullcontext():
        return _run_locked(cfg, run, data, progress, main)


def _run_locked(cfg: ExperimentConfig, run: RunDir, data: StationData | None, progress: bool, main: bool):
    if run.is_finished():
        check_identity(run, cfg, data_checksums(data) if data is not None else expected_data_checksums(cfg))
        return run, run.read_json("metrics.json")
    check_identity(run, cfg, None)  # the config, before the data is loaded
    exp, model = build_experiment(cfg, data)
    checksums = exp.source_checksums
    if main:
        if run.identity_path.exists():
            check_identity(run, cfg, checksums)  # resume: same data and code; nothing is rewritten
        else:
            record_run(exp, run)
            env = run.read_json("env.json")
            run.write_json(IDENTITY_FILE, make_identity(cfg, checksums, env))
    # a crashed run whose fit had finished (same config, data and code: checked above) loads that fit
    # instead of repeating it (a model that saves nothing refits, deterministically); its record stays
    fitted_before = (run.path / FIT_FILE).exists()
    distributed.barrier()
    training = {}
    fitted = fit_model(model, exp, run.path if main else None, restore_dir=run.path if fitted_before else None)
    if fitted_before and main:
        training["fit"] = run.read_json(FIT_FILE)
    elif fitted and main:
        run.write_json(FIT_FILE, fitted)
        training["fit"] = fitted
        write_fit_curve(fitted, run.path, f"{cfg.model.name} / {cfg.data.task}", cfg.train.tensorboard)
    if not model.trainable and "fit" in training:  # a fit hook that trains in its own loop: its summary
        training.update(fit_training_summary(training["fit"]))
    if model.trainable:
        training = {**train_model(model, exp, run, progress=progress and main), **training}
        if cfg.train.score_initial and main:
            training["initial_test"] = score_initial(model, exp, run)
        model.load_state_dict(load_checkpoint(run.best_path)["model"])
    if not main:
        return run, {}
    return run, evaluate_model(model, exp, run, training)


def score_initial(model, exp: Experiment, run: RunDir) -> dict:
    """Test scores (hidden group, overall) of the model before any step (``initial.pt``), then
    ``initial.pt`` is removed. For an anchored model this is its anchor (IDW, lerp-kNN ...)."""
    path = run.path / "initial.pt"
    model.load_state_dict(load_checkpoint(path)["model"])
    overall = score(exp, predict(model, exp, "test", "test"))["hidden"]["overall"]
    path.unlink()
    return {k: v for k, v in overall.items() if isinstance(v, (int, float))}


def check_saved_pattern(exp: Experiment, run: RunDir) -> None:
    """The experiment's sparse pattern (re-drawn from the config's seed) must be the run's saved
    one, so a re-evaluation scores exactly the cells the run removed."""
    if exp.pattern is None:
        return
    path = run.path / PATTERN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the run's sparse pattern is missing; a reconstruct run saves it")
    if not SparsePattern.load(path).same_as(exp.pattern):
        raise ValueError(
            f"{path}: the sparse pattern drawn from the run's config differs from the one the run saved "
            "(different data or drawing code); re-run the experiment"
        )


def load_trained(run_dir: str | Path, data: StationData | None = None):
    """(run, experiment, model) of a run folder: rebuilt from its own config, checked against its
    identity (the data must be the data it was trained on), fitted models refitted (deterministic),
    trained ones loaded from ``best.pt`` (plain data only). Shared by evaluate and reanalyse."""
    run = RunDir(run_dir)
    if not run.path.is_dir() or not run.config_path.exists():
        raise FileNotFoundError(f"{run.path}: not a run folder (no config.yaml); give a folder `stgraph train` wrote")
    cfg = load_config(run.config_path)
    exp, model = build_experiment(cfg, data)
    if run.identity_path.exists():
        compare(run.path, run.read_json(IDENTITY_FILE), cfg, exp.source_checksums, None, finished=True)
    check_saved_pattern(exp, run)
    fit_model(model, exp, restore_dir=run.path)  # deterministic, or loaded from the run's saved fit
    if model.trainable:
        if not run.best_path.exists():
            raise FileNotFoundError(f"{run.best_path}: no best checkpoint; train the run first (`stgraph train`)")
        model.load_state_dict(load_checkpoint(run.best_path)["model"])
    return run, exp, model


def evaluate_run(run_dir: str | Path, data: StationData | None = None) -> dict:
    """Re-evaluate a finished or crashed run from its own config and ``best.pt``; writes
    ``evaluation.json`` (never ``metrics.json``: a crashed run stays resumable). Holds the run's lock."""
    folder = Path(run_dir)
    with run_lock(folder):
        run, exp, model = load_trained(folder, data)
        training = run.read_json("metrics.json").get("training", {}) if run.metrics_path.exists() else {}
        return evaluate_model(model, exp, run, training, final=False)
