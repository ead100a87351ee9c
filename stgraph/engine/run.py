"""One experiment end to end: config -> run folder with config, split, env, checkpoints,
predictions and metrics. ``stgraph train`` and the end-to-end test call :func:`run_experiment`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from stgraph.data.patterns import SparsePattern
from stgraph.data.station_data import StationData
from stgraph.engine import distributed
from stgraph.engine.config import ExperimentConfig, load_config, save_config
from stgraph.engine.evaluate import predict, score
from stgraph.engine.experiment import Experiment, prepare_experiment
from stgraph.engine.fitting import fit_model
from stgraph.engine.runs import RunDir, environment_record
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


def evaluate_model(model, exp: Experiment, run: RunDir, training: dict | None = None) -> dict:
    """Predict and score the test period; ``metrics["evaluation"]`` records its cost (seconds, windows,
    seconds per window: for a sampling model, its sampling time per window)."""
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
    run.save_predictions(**arrays)
    run.write_json("metrics.json", metrics)
    return metrics


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    name: str | None = None,
    data: StationData | None = None,
    progress: bool = True,
) -> tuple[RunDir, dict]:
    """Train (resuming if ``out/name`` holds a crashed run) and evaluate on test-role stations."""
    main = distributed.is_main()  # under torchrun only rank 0 writes; the others train and return {}
    # rank 0 makes (or checks) the folder before any other rank looks at it: a rank that checked it
    # while rank 0 was writing its first file would take it for a foreign folder
    run = RunDir.create(out, name or cfg.name) if main else None
    distributed.barrier()
    run = run or RunDir(Path(out) / (name or cfg.name))
    if run.is_finished():
        return run, run.read_json("metrics.json")
    exp, model = build_experiment(cfg, data)
    if main:
        record_run(exp, run)
    distributed.barrier()
    training = {}
    fitted = fit_model(model, exp, run.path if main else None)
    if fitted and main:
        run.write_json("fit.json", fitted)
        training["fit"] = fitted
    if model.trainable:
        training = {**train_model(model, exp, run, progress=progress and main), **training}
        model.load_state_dict(torch.load(run.best_path, weights_only=False)["model"])
    if not main:
        return run, {}
    return run, evaluate_model(model, exp, run, training)


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


def evaluate_run(run_dir: str | Path, data: StationData | None = None) -> dict:
    """Re-evaluate a finished or crashed run from its own config and ``best.pt``."""
    run = RunDir(run_dir)
    cfg = load_config(run.config_path)
    exp, model = build_experiment(cfg, data)
    check_saved_pattern(exp, run)
    fit_model(model, exp)  # deterministic: the same choices as in training
    if model.trainable:
        if not run.best_path.exists():
            raise FileNotFoundError(f"{run.best_path}: no best checkpoint; train the run first")
        model.load_state_dict(torch.load(run.best_path, weights_only=False)["model"])
    training = run.read_json("metrics.json").get("training", {}) if run.metrics_path.exists() else {}
    return evaluate_model(model, exp, run, training)
