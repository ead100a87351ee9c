"""Stacking on arrays: grouped (and time-blocked) out-of-fold predictions, the meta-learner, the
learners, determinism and bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from stgraph.models import stacking
from stgraph.models.stacking import LEARNERS, StackConfig, fit_stack, fold_rows, group_folds

FAST = {"n_estimators": 80, "learning_rate": 0.1, "num_leaves": 15, "mlp_epochs": 8, "mlp_hidden": (32,)}


def regression(n: int = 1500, seed: int = 0):
    """y = 2 sin(x0) + x1·x2 + 0.5 x3 + group offset + noise; x3 missing on 20% of rows; 10 groups."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    groups = rng.integers(0, 10, n)
    y = 2 * np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] + 0.1 * groups / 10 + 0.1 * rng.normal(size=n)
    x[rng.random(n) < 0.2, 3] = np.nan
    return x, y, groups


NAMES = ["a", "b", "c", "d", "noise"]


def test_stack_beats_the_worst_learner_and_matches_the_best():
    x, y, g = regression()
    xv, yv, _ = regression(600, seed=1)
    stack = fit_stack(x, y, g, NAMES, StackConfig(seed=0, meta="ridge", passthrough=(3,), **FAST), x_val=xv, y_val=yv)
    rec = stack.record
    per = {k: v["val_mae"] for k, v in rec["learners"].items()}
    assert set(per) == {"lgbm", "mlp", "ridge"}
    assert rec["val_mae"] < max(per.values()) and rec["val_mae"] <= 1.05 * min(per.values())
    assert per["ridge"] > 1.5 * per["lgbm"]  # the problem is nonlinear: the check can fail
    w = rec["meta"]["weights"]
    assert all(w[f"pred:{m}"] >= 0 for m in per) and "d" in w and "d:missing" in w
    assert rec["folds"] == 5 and sum(te for _, te in rec["fold_rows"]) == len(y)
    assert np.isfinite(stack.predict(xv)).all()


def test_feature_importance_ranks_the_informative_features():
    x, y, g = regression()
    imp = fit_stack(x, y, g, NAMES, StackConfig(learners=("lgbm",), **FAST)).feature_importance()
    assert set(imp) == set(NAMES)
    assert imp["noise"] < min(imp[k] for k in ("a", "b", "c"))


class Spy:
    """A learner that records the groups (last column) and time blocks (second to last) of the rows
    it trains on and of those it predicts, and predicts the mean of its training targets."""

    calls: list = []

    def __init__(self, cfg, seed):
        self.trained = None

    def fit(self, x, y, x_val=None, y_val=None):
        self.trained = (set(x[:, -1].astype(int)), set(x[:, -2].astype(int)))
        self.mean = float(np.mean(y))
        return self

    def predict(self, x):
        Spy.calls.append((self.trained, set(x[:, -1].astype(int)), set(x[:, -2].astype(int)), len(x)))
        return np.full(len(x), self.mean)

    def info(self):
        return {}


@pytest.mark.parametrize("blocked", [False, True])
def test_no_fold_model_predicts_a_group_it_trained_on(monkeypatch, blocked):
    monkeypatch.setitem(LEARNERS, "spy", Spy)
    Spy.calls = []
    rng = np.random.default_rng(0)
    n = 900
    groups, blocks = rng.integers(0, 9, n), rng.integers(0, 12, n)
    x = np.stack([rng.normal(size=n), blocks, groups], 1).astype(np.float32)
    y = rng.normal(size=n)
    cfg = StackConfig(learners=("spy",), n_folds=3, meta="ridge")
    fit_stack(x, y, groups, ["v", "block", "group"], cfg, blocks=blocks if blocked else None)
    assert len(Spy.calls) == 3 and sum(c[3] for c in Spy.calls) == n  # each row predicted once
    for (trained_groups, trained_blocks), predicted_groups, predicted_blocks, _ in Spy.calls:
        assert trained_groups and not trained_groups & predicted_groups
        if blocked:  # the fold's own time blocks are out of its training rows
            held = [b for b in range(12) if b not in trained_blocks]
            assert held and set(held) <= predicted_blocks
        else:
            assert len(trained_blocks) == 12


def test_group_folds_keep_groups_whole_and_balance_rows():
    groups = np.repeat(np.arange(10), np.arange(1, 11) * 10)  # sizes 10..100
    fold = group_folds(groups, 4)
    for gid in range(10):
        assert len(set(fold[groups == gid])) == 1
    load = np.bincount(fold)
    assert len(load) == 4 and load.max() - load.min() <= 30
    assert len(fold_rows(groups[:30], None, 5, 0)) == 2  # capped at the number of groups


def test_same_seed_gives_bit_identical_predictions_and_another_seed_does_not():
    x, y, g = regression(800)
    xv, yv, _ = regression(300, seed=1)
    blocks = np.arange(len(y)) // 100

    def run(seed):
        cfg = StackConfig(seed=seed, colsample=0.7, **FAST)
        return fit_stack(x, y, g, NAMES, cfg, blocks=blocks, x_val=xv, y_val=yv).predict(xv)

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_one_layer_averages_the_learners_fitted_on_all_rows():
    x, y, g = regression(600)
    single = fit_stack(x, y, g, NAMES, StackConfig(learners=("lgbm",), layers=1, **FAST))
    direct = stacking.LGBMLearner(single.cfg, stacking._learner_seed(0, 0, 0)).fit(x, y)
    np.testing.assert_array_equal(single.predict(x), direct.predict(x))
    both = fit_stack(x, y, g, NAMES, StackConfig(learners=("lgbm", "ridge"), layers=1, **FAST))
    ridge = both.models["ridge"][0].predict(x)
    np.testing.assert_allclose(both.predict(x), (both.models["lgbm"][0].predict(x) + ridge) / 2)
    assert "meta" not in both.record and len(both.models["lgbm"]) == 1


def test_lgbm_meta_and_l1_objective_and_early_stopping():
    x, y, g = regression(800)
    xv, yv, _ = regression(300, seed=1)
    cfg = StackConfig(learners=("lgbm", "ridge"), meta="lgbm", objective="l1", early_stopping_rounds=5, **FAST)
    stack = fit_stack(x, y, g, NAMES, cfg, x_val=xv, y_val=yv)
    assert set(stack.record["meta"]["weights"]["gain"]) == {"pred:lgbm", "pred:ridge"}
    its = [f["best_iteration"] for f in stack.record["learners"]["lgbm"]["fits"]]
    assert all(1 <= i <= 80 for i in its)
    assert stack.record["val_mae"] < 1.0


@pytest.mark.parametrize("positive", [False, True])
def test_ridge_meta_is_least_squares_on_the_out_of_fold_predictions(positive):
    """meta_alpha=0: plain least squares of y on the OOF predictions (with an intercept); with
    ``positive`` the non-negative least squares solution (scipy's NNLS on the centred system)."""
    from scipy.optimize import nnls

    x, y, g = regression(600)
    cfg = StackConfig(learners=("ridge", "lgbm"), meta="ridge", meta_positive=positive, meta_alpha=0.0, **FAST)
    stack = fit_stack(x, y, g, NAMES, cfg)
    a = stack.oof - stack.oof.mean(0)
    want = nnls(a, y - y.mean())[0] if positive else np.linalg.lstsq(a, y - y.mean(), rcond=None)[0]
    np.testing.assert_allclose(stack.meta.coef, want, rtol=1e-6, atol=1e-8)
    assert set(stack.record["meta"]["weights"]) == {"pred:ridge", "pred:lgbm", "intercept"}


def test_greedy_meta_is_caruana_ensemble_selection():
    """The default meta-learner: weights = selection counts of a greedy forward selection with
    replacement minimising the OOF MAE, checked against a direct re-implementation; the weights
    sum to 1, and a learner that is pure noise gets little weight."""
    from stgraph.models.stacking import GreedyMeta

    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    preds = np.stack([y + rng.normal(0, 0.3, 400), y + rng.normal(0, 0.5, 400), rng.normal(size=400)], 1)
    meta = GreedyMeta(StackConfig()).fit(preds, np.zeros((400, 0)), y)
    counts, avg = np.zeros(3), np.zeros(400)
    for r in range(GreedyMeta.GREEDY_ROUNDS):
        errs = [np.abs((avg * r + preds[:, j]) / (r + 1) - y).mean() for j in range(3)]
        j = int(np.argmin(errs))
        counts[j] += 1
        avg = (avg * r + preds[:, j]) / (r + 1)
    np.testing.assert_allclose(meta.coef, counts / counts.sum())
    assert meta.coef.sum() == pytest.approx(1.0) and meta.coef[2] < 0.1 and meta.coef[0] > meta.coef[1] > 0
    np.testing.assert_allclose(meta.predict(preds, None), avg)


def test_a_listed_optional_learner_that_is_missing_names_its_package(monkeypatch):
    x, y, g = regression(100)
    for name in ("xgboost", "catboost"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails, installed or not
        with pytest.raises(ImportError, match=f"pip install {name}"):
            fit_stack(x, y, g, NAMES, StackConfig(learners=("ridge", name)))


def test_bad_input_is_an_error():
    x, y, g = regression(100)
    with pytest.raises(ValueError, match="unknown learner"):
        StackConfig(learners=("forest",))
    with pytest.raises(ValueError, match="meta"):
        StackConfig(meta="mean")
    with pytest.raises(ValueError, match="feature names"):
        fit_stack(x, y, g, NAMES[:2], StackConfig())
    with pytest.raises(ValueError, match="infinite"):
        fit_stack(np.where(x > 2, np.inf, x), y, g, NAMES, StackConfig())
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_stack(x, y, np.zeros(len(y), int), NAMES, StackConfig(learners=("ridge",)))
    with pytest.raises(ValueError, match="passthrough"):
        fit_stack(x, y, g, NAMES, StackConfig(passthrough=(9,)))


def test_meta_rows_val_fits_the_ensemble_on_the_validation_rows():
    """``meta_rows: val``: the greedy weights are those chosen on the bagged base predictions at the
    validation rows; without validation rows the stack falls back to the out-of-fold rows."""
    from stgraph.models.stacking import GreedyMeta

    x, y, g = regression(600)
    xv, yv, _ = regression(300, seed=1)
    cfg = StackConfig(learners=("ridge", "lgbm"), meta_rows="val", **FAST)
    stack = fit_stack(x, y, g, NAMES, cfg, x_val=xv, y_val=yv)
    want = GreedyMeta(cfg).fit(stack.base_predictions(xv), None, yv).coef
    np.testing.assert_array_equal(stack.meta.coef, want)
    assert stack.record["meta_rows"] == "val"
    fallback = fit_stack(x, y, g, NAMES, cfg)
    np.testing.assert_array_equal(fallback.meta.coef, GreedyMeta(cfg).fit(fallback.oof, None, y).coef)
    assert fallback.record["meta_rows"] == "oof"
    with pytest.raises(ValueError, match="meta_rows"):
        StackConfig(meta_rows="test")
