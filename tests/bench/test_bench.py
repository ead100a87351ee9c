"""The benchmark runner: suites expand and validate, runs resume after an interruption, the
worker pool gives the same numbers as one process, leaderboards aggregate what the runs wrote."""

import json
import os

import pandas as pd
import pytest

import stgraph.bench.execute as runner
from stgraph.bench import load_suite, run_suite, write_leaderboard
from stgraph.bench.suite import suite_from_dict
from stgraph.cli import main
from stgraph.engine.config import ConfigError


def small_suite(**over):
    d = {
        "name": "t",
        "folds": [0, 1],
        "seeds": [0, 1],
        "base": {
            "data": {
                "dataset": "aqi36",
                "target_channels": ["PM2.5"],
                "start": "2014-05-01",
                "end": "2014-07-31",
                "window": 8,
                "eval_steps": [1],
            },
            "split": {"method": "kfold", "n_folds": 4, "val": 2, "time_val": 0.15, "time_test": 0.15},
            "train": {"epochs": 1, "max_train_windows": 32, "max_eval_windows": 16, "batch_size": 16},
        },
        "tasks": {"krige": {"data": {"task": "krige"}}, "short": {"data": {"task": "forecast", "horizon": 4}}},
        "models": {
            "aqnet": {"hparams": {"hidden_channels": 8, "num_layers": 1, "heads": 2, "k": 4}},
            "idw": {},
            "idw-p2": {"model": "idw", "hparams": {"power": 2.0}},
        },
    }
    d.update(over)
    return suite_from_dict(d)


def test_suite_expands_models_tasks_folds_seeds():
    s = small_suite()
    # aqnet: 2 tasks x 2 folds x 2 seeds; each idw row: 2 tasks x 2 folds (no parameters: one seed)
    assert len(s.runs) == 8 + 4 + 4
    assert {r.config.split.fold for r in s.runs} == {0, 1}
    r = next(r for r in s.runs if r.model == "idw-p2")
    assert r.config.model.name == "idw" and r.config.model.hparams == {"power": 2.0}
    assert next(r for r in s.runs if r.task == "short").config.data.horizon == 4
    assert len(s.select(models=["idw"], folds=[1]).runs) == 2


def test_shipped_suites_load_and_cover_every_model():
    from stgraph.models import MODELS
    from stgraph.models.registry import split_name

    uci = load_suite("configs/bench/uci12.yaml")
    aqi = load_suite("configs/bench/aqi36.yaml")
    from pathlib import Path

    others = [load_suite(p) for p in sorted(Path("configs/bench").glob("*.yaml"))]
    names = {split_name(r.config.model.name)[0] for s in others for r in s.runs}  # "pypots:SAITS" -> "pypots"
    assert names == set(MODELS)  # every registered model has a row in a shipped suite
    uci_forecast = load_suite("configs/bench/uci12_forecast.yaml")
    assert {r.task for r in uci.runs} == {"krige"} and {r.task for r in uci_forecast.runs} == {"short"}
    for suite in (uci, uci_forecast):
        assert {r.config.split.fold for r in suite.runs} == {0, 1, 2, 3}
        assert all(r.config.split.val == 2 for r in suite.runs)  # model selection on two val stations
    trained = [r for r in uci.runs if r.config.train.steps]  # the step regime: every test window, whole budgets
    assert trained and all(r.config.train.max_eval_windows is None and not r.config.train.early_stopping
                           and r.config.data.stride == 1 for r in trained)  # fmt: skip
    impute = [r for r in aqi.runs if r.task.startswith("impute")]
    assert impute and all(r.config.split.test_months == [3, 6, 9, 12] for r in impute)
    modes = {r.task: r.config.split.impute_training for r in impute}
    assert modes == {"impute": "out-of-sample", "impute-in-sample": "in-sample"}
    assert aqi.reference["impute"]["GRIN (per cell)"] == 12.08 and "impute-in-sample" not in aqi.reference
    assert {r.model for r in aqi.runs if r.task == "impute-in-sample"} == {"grin", "lerp-knn"}
    assert all(r.config.train.max_eval_windows is None and r.config.data.stride == 1 for r in aqi.runs)


def test_suite_errors_name_the_place():
    with pytest.raises(ConfigError, match="unknown keys"):
        small_suite(typo=1)
    with pytest.raises(ConfigError, match=r"models.x: unknown model 'nope'"):
        small_suite(models={"x": {"model": "nope"}})
    with pytest.raises(ConfigError, match=r"train.epochs"):
        small_suite(models={"aqnet": {"train": {"epochs": "ten"}}})
    with pytest.raises(ValueError, match="unknown model"):
        small_suite().select(models=["gru"])


def test_runner_resumes_after_interruption(tmp_path, monkeypatch):
    suite = small_suite(folds=[0], seeds=[0, 1])
    real, calls = runner.execute, []

    def flaky(spec, out, threads=None):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third run
        calls.append(spec.name)
        return real(spec, out, threads)

    monkeypatch.setattr(runner, "execute", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path, workers=0)
    first = list(calls)
    stamps = {n: (tmp_path / "runs" / n / "metrics.json").stat().st_mtime_ns for n in first}
    monkeypatch.setattr(runner, "execute", real)
    redo = run_suite(suite, tmp_path, workers=0)
    assert {r.name for r in redo} == {r.name for r in suite.runs} - set(first)  # finished runs are not redone
    assert all((tmp_path / "runs" / n / "metrics.json").stat().st_mtime_ns == t for n, t in stamps.items())
    assert run_suite(suite, tmp_path, workers=0) == []  # nothing left

    md, table = write_leaderboard(suite, tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == len(suite.runs)
    idw = runs[(runs.model == "idw") & (runs.task == "krige")]
    row = table[(table.model == "idw") & (table.task == "krige") & (table.metric == "mae")].iloc[0]
    assert row["mean"] == pytest.approx(idw.mae.mean()) and row["n"] == 1
    metrics = json.loads((tmp_path / "runs/krige/idw/fold0-seed0/metrics.json").read_text())
    assert row["mean"] == pytest.approx(metrics["test"]["hidden"]["overall"]["mae"])
    assert "| `idw` |" in md and (tmp_path / "leaderboard.csv").exists()
    ranks = table[(table.task == "krige") & (table.metric == "mae")].sort_values("mean")["rank"].tolist()
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_worker_pool_matches_one_process(tmp_path):
    suite = small_suite(folds=[0, 1], models={"idw": {}, "idw-p2": {"model": "idw", "hparams": {"power": 2.0}}})
    run_suite(suite, tmp_path / "pool", workers=2)
    run_suite(suite, tmp_path / "solo", workers=0)
    key, cols = ["task", "model", "fold", "seed"], ["mae", "rmse", "count"]
    tables = []
    for d in ("pool", "solo"):
        write_leaderboard(suite, tmp_path / d)
        tables.append(pd.read_csv(tmp_path / d / "runs.csv").sort_values(key)[key + cols].reset_index(drop=True))
    pd.testing.assert_frame_equal(*tables)
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "pool").rglob("bench.json")}
    assert os.getpid() not in pids  # the pool's runs ran in worker processes


def test_cli_benchmark_prints_leaderboard_and_map(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: cli\nfolds: [0, 1, 2, 3]\nbase:\n  data: {dataset: aqi36, target_channels: [PM2.5], start: '2014-05-01',"
        " end: '2014-06-30', window: 8, eval_steps: [1], task: krige}\n  split: {method: kfold, n_folds: 4, val: 2}\n"
        "  train: {max_eval_windows: 16}\ntasks:\n  krige: {}\nmodels:\n  idw: {}\n  knn: {}\n"
    )
    assert main(["benchmark", str(path), "--out", str(tmp_path / "out"), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "| `idw` |" in out and "| `knn` |" in out
    assert "tensorboard" not in out  # nothing trained, no curves to point to
    assert list((tmp_path / "out" / "maps").glob("krige_*.png"))


def test_a_changed_suite_does_not_mix_configurations(tmp_path):
    from stgraph.bench.execute import SuiteChangedError

    suite = small_suite(folds=[0], models={"idw": {}})
    run_suite(suite, tmp_path, workers=0)
    changed = small_suite(folds=[0], models={"idw": {"hparams": {"power": 3.0}}})
    with pytest.raises(SuiteChangedError, match=r"model.hparams.power: None -> 3.0"):
        run_suite(changed, tmp_path, workers=0)


def test_two_invocations_on_one_out_share_the_work(tmp_path):
    """A run locked by another process is skipped, one finished meanwhile is not redone."""
    from stgraph.bench.execute import execute, run_lock, run_root

    suite = small_suite(folds=[0], models={"idw": {}})
    first, second = suite.runs
    parent, name = run_root(tmp_path, first)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with run_lock(parent / name), ctx.Pool(1) as pool:  # this process "runs" it; another one tries
        assert pool.apply(execute, (first, str(tmp_path))) == {
            "run": first.name,
            "skipped": "running in another process",
        }
    done = execute(second, str(tmp_path))
    again = execute(second, str(tmp_path))
    assert again["skipped"] == "finished by another process" and again["wall_seconds"] == done["wall_seconds"]


def test_tasks_narrow_models_and_models_narrow_seeds_and_data():
    d = {
        "name": "t",
        "base": {"data": {"dataset": "uci-beijing-12", "window": 8}},
        "folds": [0],
        "seeds": [0, 1, 2],
        "tasks": {"krige": {"data": {"task": "krige"}, "models": ["heavy"]}, "short": {"data": {"task": "forecast"}}},
        "models": {
            "heavy": {"model": "aqnet", "seeds": [0], "data": {"stride": 16}},
            "light": {"model": "aqnet"},
        },
    }
    runs = suite_from_dict(d).runs
    assert {(r.task, r.model) for r in runs} == {("krige", "heavy"), ("short", "heavy"), ("short", "light")}
    assert sorted(r.seed for r in runs if r.model == "heavy") == [0, 0]
    assert sorted(r.seed for r in runs if r.model == "light") == [0, 1, 2]
    assert all(r.config.data.stride == 16 for r in runs if r.model == "heavy")


def test_leaderboard_adds_crps_coverage_and_extra_groups_only_where_reported():
    """Probabilistic and extra-group columns appear only for the models that report them, and
    coverage is ranked by its distance to 0.90 (0.85 beats 0.60 and 0.99)."""
    import pandas as pd

    from stgraph.bench.leaderboard import leaderboard_table, metric_columns, summarise

    s = small_suite()
    runs = pd.DataFrame(
        [
            {"task": "krige", "model": "aqnet", "mae": 1.0, "rmse": 2.0, "crps": 0.8, "coverage90": 0.60},
            {"task": "krige", "model": "idw", "mae": 1.5, "rmse": 2.5, "crps": 0.9, "coverage90": 0.85},
            {
                "task": "krige",
                "model": "idw-p2",
                "mae": 1.2,
                "rmse": 2.2,
                "crps": 0.7,
                "coverage90": 0.99,
                "removed_mae": 3.0,
            },
        ]
    ).assign(wall_seconds=1.0, still_improving=False, near_anchor=False, fold=0, seed=0)
    assert metric_columns(runs) == ["mae", "rmse", "crps", "coverage90", "removed_mae"]
    table = summarise(s, runs).set_index(["task", "model", "metric"])
    cov = table.xs("coverage90", level="metric").loc["krige", "rank"]
    assert cov.to_dict() == {"aqnet": 3, "idw": 1, "idw-p2": 2}
    assert table.loc[("krige", "aqnet", "crps"), "rank"] == 2
    assert ("krige", "aqnet", "removed_mae") not in table.index  # nothing reported: no cell
    assert table.loc[("krige", "idw-p2", "removed_mae"), "mean"] == 3.0
    point = leaderboard_table(s, summarise(s, runs), runs)
    assert "samples" not in point  # no run says how many samples: no column
    runs["samples"] = [100.0, None, 10.0]  # CSDI's headline setting beside a point model and a cheap one
    md = leaderboard_table(s, summarise(s, runs), runs)
    head, rows = (
        md.splitlines()[0],
        {line.split(" | ")[0]: line for line in md.splitlines()[2:] if line.startswith("|")},
    )
    col = head.split(" | ").index("samples")
    assert [rows[f"| `{m}`"].split(" | ")[col] for m in ("aqnet", "idw", "idw-p2")] == ["100", "—", "10"]


def test_rows_are_marked_still_improving_or_near_their_anchor_from_the_training_record():
    """↗ when a run spent its budget with its best validation in the last quarter; ≈ anchor when its
    test error is within 1 % of the same model untrained; an early stop or a parameter-free model is
    never marked, and records written before the rename (``converged``) are still read."""
    from stgraph.bench.leaderboard import near_anchor, still_improving

    spent = {"epochs_run": 10, "steps": 2000, "best_step": 1600, "early_stopped": False}
    assert still_improving(spent)
    assert not still_improving({**spent, "best_step": 1400})  # plateaued before the last quarter
    assert not still_improving({**spent, "early_stopped": True})
    assert not still_improving({})  # parameter-free: nothing to train
    assert still_improving({"epochs_run": 4, "best_epoch": 4, "converged": False})  # older record, epochs
    assert not still_improving({"epochs_run": 4, "best_epoch": 4, "converged": True})
    assert near_anchor({"test_gain_over_initial": 0.008}) and near_anchor({"test_gain_over_initial": -0.0005})
    assert not near_anchor({"test_gain_over_initial": 0.054}) and not near_anchor({})
