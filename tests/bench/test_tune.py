"""``stgraph tune``: an Optuna study of a few trials on validation stations, resumable from its
SQLite file, the best configuration written as a config; every declared search space is valid."""

import dataclasses
import json

import optuna
import pytest

from stgraph.bench.tune import BEST_FILE, STUDY_FILE, model_space, tune
from stgraph.cli import main
from stgraph.engine.config import config_from_dict, load_config
from stgraph.models import MODELS, get_model_class
from stgraph.models.search import FloatRange, IntRange
from stgraph.testing import synthetic_stations

DATA = synthetic_stations(num_nodes=10, num_steps=24 * 8, seed=4)


def cfg(model="ignnk", **hparams):
    return config_from_dict(
        {
            "name": "study",
            "data": {"target_channels": ["x0"], "task": "krige", "window": 12, "eval_steps": []},
            "split": {"method": "kfold", "n_folds": 4, "fold": 0, "val": 2},
            "model": {"name": model, "hparams": hparams},
            "train": {"batch_size": 8, "val_every": 4, "max_eval_windows": 16, "early_stopping": False},
        }
    )


def test_a_study_runs_resumes_and_writes_the_best_config(tmp_path):
    first = tune(cfg(), tmp_path, trials=3, steps=8, data=DATA, seed=1)
    assert first["trials"] == 3 and first["steps_per_trial"] == 8
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert len(study.trials) == 3
    again = tune(cfg(), tmp_path, trials=4, steps=8, data=DATA, seed=1)  # resumes: one more trial only
    storage = f"sqlite:///{tmp_path / STUDY_FILE}"
    assert again["trials"] == 4 and len(optuna.load_study(study_name="study", storage=storage).trials) == 4
    best = load_config(tmp_path / BEST_FILE)
    space = get_model_class("ignnk")[0].search_space
    for name, r in space.items():
        assert r.low <= best.model.hparams[name] <= r.high
    chosen = {k.split(".", 1)[1]: v for k, v in again["best_params"].items() if k.startswith("hparams.")}
    assert best.model.hparams == chosen
    assert best.train.lr == again["best_params"]["train.lr"] and best.train.steps == 8
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert again["best_value"] <= min(t.value for t in completed)  # validation scores only
    assert not list(tmp_path.rglob("metrics.json"))  # no trial was evaluated on the test period


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_declared_search_space_names_real_hyperparameters(name):
    cls, params = get_model_class(name)
    fields = {f.name: f for f in dataclasses.fields(params)}
    for key, r in cls.search_space.items():
        assert key in fields, f"{name}: {key} is not a hyper-parameter"
        assert isinstance(r, (IntRange, FloatRange)) and r.low <= r.high


def test_nothing_to_tune_is_an_error_and_the_cli_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="declares nothing to tune"):
        model_space(cfg("idw"))
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: cli\ndata: {dataset: aqi36, target_channels: [PM2.5], start: '2014-05-01', end: '2014-06-30',"
        " window: 8, eval_steps: [], task: krige}\nsplit: {method: kfold, n_folds: 4, val: 2}\n"
        "model: {name: ignnk, hparams: {hidden_channels: 8, k: 3}}\n"
        "train: {batch_size: 8, val_every: 2, max_eval_windows: 8, max_val_windows: 8}\n"
    )
    assert main(["tune", str(path), "--trials", "2", "--budget", "4", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "2 trials" in out and "best config:" in out and (tmp_path / "s" / BEST_FILE).exists()


def test_a_suite_tunes_each_tunable_row_per_fold_before_its_runs(tmp_path):
    from stgraph.bench import run_suite, write_leaderboard
    from stgraph.bench.tune import TUNED_FILE, TUNING_DIR, tuned_suite
    from tests.bench.test_bench import small_suite

    suite = small_suite(
        folds=[0, 1],
        seeds=[0],
        tasks={"krige": {"data": {"task": "krige"}}},
        models={"ignnk": {"hparams": {"hidden_channels": 8, "k": 3}}, "idw": {}},
        tune={"trials": 2, "steps": 4},
    )
    run_suite(suite, tmp_path, workers=0)
    studies = sorted(p.relative_to(tmp_path / TUNING_DIR).parent for p in (tmp_path / TUNING_DIR).rglob(TUNED_FILE))
    assert [str(p) for p in studies] == ["krige/ignnk/fold0", "krige/ignnk/fold1"]  # per fold; idw has nothing
    tuned = tuned_suite(suite, tmp_path, run_trials=False)
    for spec in tuned.runs:
        if spec.model == "ignnk":
            best = json.loads((tmp_path / TUNING_DIR / "krige" / "ignnk" / f"fold{spec.fold}" / TUNED_FILE).read_text())
            assert spec.config.train.lr == best["best_params"]["train.lr"]
            assert spec.config.train.steps == suite.runs[0].config.train.steps  # the run keeps its own budget
    md, _ = write_leaderboard(suite, tmp_path)
    assert "`ignnk` (2 studies)" in md
    assert run_suite(suite, tmp_path, workers=0) == []  # resumes: nothing is tuned or run again
