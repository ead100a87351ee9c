"""Stacked generalisation on plain arrays: base learners, grouped out-of-fold predictions, a meta-learner.

The tabular core of :mod:`stgraph.models.amlsg` (AMLSG: AutoGluon's multi-layer stack of
a torch MLP and gradient-boosted trees with 5-fold bagging), written with real dependencies
(LightGBM, scikit-learn, torch) instead of AutoGluon, and independent of stations and graphs:
rows ``X`` (n, F) float32 with NaN where a feature is undefined, targets ``y`` (n,), a group per
row (the station) and optionally a time block per row.

Layer 1, the base learners (:data:`LEARNERS`): ``lgbm`` (histogram LightGBM, L1 or L2 objective,
early stopping on the validation rows), ``mlp`` (a torch MLP on standardised inputs, NaN -> 0 plus
missing-indicator columns, AdamW, early stopping on the validation rows), ``ridge`` (scikit-learn
ridge on the same imputed matrix); ``xgboost`` and ``catboost`` when those packages are installed
(listing one that is not is an error naming the pip package).

Out-of-fold (OOF) predictions: folds are **grouped by station** (:func:`group_folds`, balanced by
rows as scikit-learn's GroupKFold), so no fold model ever predicts a row of a station it was
trained on. With ``blocks`` they are also **blocked in time** (:func:`block_folds`): fold ``f``'s
model trains on neither the stations of fold ``f`` nor the time blocks of fold ``f``, so the OOF
rows at (fold-f stations, fold-f blocks) are held out in space and time at once; the other OOF rows
of fold-f stations are held out in space only (a full space x time grid would need K² models).
With fewer distinct blocks than folds the folds are grouped by station only (``time_blocked``
false in the record).

Layer 2, the meta-learner: by default ``greedy``, AutoGluon's own last layer (Caruana's ensemble
selection on the OOF predictions, minimising MAE: non-negative weights summing to 1); or ridge
over the OOF predictions (non-negative on them by default, Breiman's stacked regressions, 1996) or
a small LightGBM, both plus a few raw ``passthrough`` features (e.g. the IDW estimate), as
AutoGluon's stacker levels see the original features.

Bagging, as AutoGluon: the K fold models of each base learner are kept and their predictions
averaged at inference (no refit on all rows). ``layers=1`` has no meta-learner: each learner is
fitted once on all rows and the learners' predictions are averaged with equal weights (one
learner: that learner alone).

Everything is seeded: LightGBM runs with ``deterministic=True, force_row_wise=True`` and a fixed
thread count, the MLP draws its initialisation and batch order from a ``torch.Generator``; the same
inputs and seed give bit-identical predictions.

Deviations from AMLSG/AutoGluon: no hyperparameter search, no repeated bagging, no weighted
ensemble of stacker levels (the meta-learner is the last level); folds are grouped by station and
blocked in time where AutoGluon's are random rows (random rows would let a fold model score the
station it trained on).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

OBJECTIVES = ("l1", "l2")
METAS = ("greedy", "ridge", "lgbm")
OPTIONAL = {"xgboost": "xgboost", "catboost": "catboost"}  # learner name -> pip package


@dataclass
class StackOptions:
    """The stack's hyperparameters, with their defaults: the one source of them for the stack
    (:class:`StackConfig`) and for AMLSG (:class:`~stgraph.models.amlsg.AMLSGParams`, which adds
    its features and row caps). A learner reads only its own.

    Attributes:
        learners: base learners, names in :data:`LEARNERS`.
        meta: meta-learner, ``greedy`` (AutoGluon's weighted ensemble), ``ridge`` or ``lgbm`` (``layers=2`` only).
        meta_rows: what the meta-learner is fitted on: ``oof``, the out-of-fold predictions of
            the training rows (classic stacking), or ``val``, the base learners' predictions at the
            validation rows (blending; held-out stations *and* a later period; falls back to
            ``oof`` without validation rows).
        meta_positive: ridge meta-learner's weights on the OOF predictions are >= 0.
        meta_alpha: ridge meta-learner's L2 penalty (inputs: OOF predictions, standardised passthrough).
        layers: 2 (base learners + meta-learner, as AMLSG) or 1 (the learners averaged).
        n_folds: K of the grouped out-of-fold predictions (at most the number of groups).
        objective: ``l1`` or ``l2`` loss of LightGBM, XGBoost, CatBoost and the MLP. Early stopping
            always watches the validation MAE (the benchmark's metric).
        n_estimators, learning_rate, num_leaves, min_child_samples, early_stopping_rounds,
            colsample: LightGBM (and, where they apply, XGBoost/CatBoost) trees.
        mlp_hidden, mlp_epochs, mlp_batch_size, mlp_lr, mlp_weight_decay, mlp_patience: the MLP.
        ridge_alpha: the ridge base learner's L2 penalty.
    """

    learners: tuple[str, ...] = ("lgbm", "mlp", "ridge")
    meta: str = "greedy"
    meta_rows: str = "val"
    meta_positive: bool = True
    meta_alpha: float = 1.0
    layers: int = 2
    n_folds: int = 5
    objective: str = "l1"
    n_estimators: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 40
    early_stopping_rounds: int = 30
    colsample: float = 0.8
    mlp_hidden: tuple[int, ...] = (128, 64)
    mlp_epochs: int = 20
    mlp_batch_size: int = 1024
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-4
    mlp_patience: int = 3
    ridge_alpha: float = 1.0


@dataclass
class StackConfig(StackOptions):
    """:class:`StackOptions` plus what one fit resolves.

    Attributes:
        seed: base seed; each learner and fold derives its own.
        num_threads: threads of LightGBM/XGBoost/CatBoost (fixed, for determinism).
        passthrough: indices of raw feature columns the meta-learner also sees.
    """

    seed: int = 0
    num_threads: int = 1
    passthrough: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.learners:
            raise ValueError("stack: learners must name at least one base learner")
        for name in self.learners:
            if name not in LEARNERS:
                raise ValueError(f"stack: unknown learner {name!r}; choose from {sorted(LEARNERS)}")
        if self.meta_rows not in ("oof", "val"):
            raise ValueError(f"stack: meta_rows must be 'oof' or 'val', got {self.meta_rows!r}")
        if self.meta not in METAS:
            raise ValueError(f"stack: meta must be one of {METAS}, got {self.meta!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"stack: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.layers not in (1, 2):
            raise ValueError(f"stack: layers must be 1 or 2, got {self.layers}")
        if self.layers == 2 and self.n_folds < 2:
            raise ValueError(f"stack: n_folds must be >= 2 for out-of-fold predictions, got {self.n_folds}")
        if self.num_threads < 1:
            raise ValueError(f"stack: num_threads must be >= 1, got {self.num_threads}")


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - y)))


# ---------------------------------------------------------------------------------------------
# preprocessing shared by the MLP, ridge and the ridge meta-learner


class Imputer:
    """Standardise columns on the training rows, NaN -> 0 (the mean), plus an indicator column for
    every feature that had a NaN among the training rows. (n, F) -> (n, F + F_missing) float32.

    Robust to what training never showed: a column with no finite training value is 0 wherever it
    is used (e.g. the k-th neighbour slot when training hides stations and evaluation does not),
    and standardised values are clipped to ±``CLIP`` so a feature outside its training range
    cannot drive a network's output arbitrarily far (trees are indifferent to both)."""

    CLIP = 6.0

    def fit(self, x: np.ndarray) -> Imputer:
        with np.errstate(all="ignore"):
            finite = np.isfinite(x)
            count = finite.sum(0)
            mean = np.where(finite, x, 0).sum(0, dtype=np.float64) / np.maximum(count, 1)
            var = np.where(finite, (x - mean) ** 2, 0).sum(0, dtype=np.float64) / np.maximum(count, 1)
        self.mean = mean.astype(np.float32)
        std = np.sqrt(var)
        self.std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        self.indicate = np.flatnonzero(~finite.all(0))
        self.seen = count > 0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        missing = ~np.isfinite(z)
        z = np.where(missing | ~self.seen, np.float32(0), np.clip(z, -self.CLIP, self.CLIP)).astype(np.float32)
        return np.concatenate([z, missing[:, self.indicate].astype(np.float32)], axis=1)


# ---------------------------------------------------------------------------------------------
# base learners: fit(x, y, x_val, y_val) -> self; predict(x) -> (n,) float64; info() -> dict


class LGBMLearner:
    """LightGBM gradient-boosted trees (histogram, leaf-wise), early stopping on the validation rows."""

    def __init__(self, cfg: StackConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def fit(self, x, y, x_val=None, y_val=None) -> LGBMLearner:
        import lightgbm

        c = self.cfg
        self.model = lightgbm.LGBMRegressor(
            objective="regression_l1" if c.objective == "l1" else "regression",
            n_estimators=c.n_estimators,
            learning_rate=c.learning_rate,
            num_leaves=c.num_leaves,
            min_child_samples=c.min_child_samples,
            colsample_bytree=c.colsample,
            random_state=self.seed,
            n_jobs=c.num_threads,
            deterministic=True,
            force_row_wise=True,
            metric="l1",  # early stopping watches the validation MAE
            verbosity=-1,
        )
        kw = {}
        if x_val is not None and len(x_val):
            stop = lightgbm.early_stopping(c.early_stopping_rounds, first_metric_only=True, verbose=False)
            # LightGBM 4.6 renamed eval_set to eval_X/eval_y; both spellings mean the same
            new_api = "eval_X" in inspect.signature(self.model.fit).parameters
            kw = {"eval_X": (x_val,), "eval_y": (y_val,)} if new_api else {"eval_set": [(x_val, y_val)]}
            kw["callbacks"] = [stop]
        self.model.fit(x, y, **kw)
        return self

    def predict(self, x) -> np.ndarray:
        return self.model.predict(x, num_threads=self.cfg.num_threads).astype(np.float64)

    def gain(self) -> np.ndarray:
        """(F,) total gain of each feature's splits."""
        return self.model.booster_.feature_importance(importance_type="gain").astype(np.float64)

    def info(self) -> dict:
        return {"best_iteration": int(self.model.best_iteration_ or self.model.n_estimators)}


class _Net(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...], gen: torch.Generator):
        super().__init__()
        sizes = [n_in, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            lin = nn.Linear(a, b)
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=gen)  # torch's default, seeded
            nn.init.uniform_(lin.bias, -1 / math.sqrt(a), 1 / math.sqrt(a), generator=gen)
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


class MLPLearner:
    """A ReLU MLP on the imputed, standardised matrix (target standardised too), AdamW, minibatches
    drawn from a seeded generator, early stopping on the validation MAE (best epoch restored)."""

    def __init__(self, cfg: StackConfig, seed: int):
        self.cfg, self.seed = cfg, seed

    def fit(self, x, y, x_val=None, y_val=None) -> MLPLearner:
        c = self.cfg
        gen = torch.Generator().manual_seed(self.seed)
        self.imputer = Imputer().fit(x)
        xt = torch.from_numpy(self.imputer.transform(x))
        self.y_mean, self.y_std = float(np.mean(y)), float(np.std(y)) or 1.0
        yt = torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32))
        self.net = _Net(xt.size(1), tuple(c.mlp_hidden), gen)
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.mlp_lr, weight_decay=c.mlp_weight_decay)
        loss_fn = nn.L1Loss() if c.objective == "l1" else nn.MSELoss()
        watch = x_val is not None and len(x_val) > 0
        best, best_state, stale, self.epochs = math.inf, None, 0, 0
        for _ in range(c.mlp_epochs):
            self.net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(c.mlp_batch_size):
                loss = loss_fn(self.net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            self.epochs += 1
            if watch:
                score = mae(self.predict(x_val), y_val)
                if score < best - 1e-7:
                    best, best_state, stale = score, copy.deepcopy(self.net.state_dict()), 0
                else:
                    stale += 1
                    if stale >= c.mlp_patience:
                        break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.best_val = best if watch else None
        return self

    @torch.no_grad()
    def predict(self, x) -> np.ndarray:
        self.net.eval()
        out = torch.cat([self.net(b) for b in torch.from_numpy(self.imputer.transform(x)).split(65536)])
        return out.double().numpy() * self.y_std + self.y_mean

    def info(self) -> dict:
        return {"epochs": self.epochs}


class RidgeLearner:
    """scikit-learn ridge regression on the imputed, standardised matrix (closed form)."""

    def __init__(self, cfg: StackConfig, seed: int):
        self.cfg = cfg

    def fit(self, x, y, x_val=None, y_val=None) -> RidgeLearner:
        from sklearn.linear_model import Ridge

        self.imputer = Imputer().fit(x)
        self.model = Ridge(alpha=self.cfg.ridge_alpha).fit(self.imputer.transform(x).astype(np.float64), y)
        return self

    def predict(self, x) -> np.ndarray:
        return self.model.predict(self.imputer.transform(x).astype(np.float64)).astype(np.float64)

    def info(self) -> dict:
        return {}


def _import_optional(name: str):
    try:
        return importlib.import_module(OPTIONAL[name])
    except ImportError as err:
        raise ImportError(
            f"stack: learner '{name}' needs the '{OPTIONAL[name]}' package: pip install {OPTIONAL[name]}"
        ) from err


class XGBLearner:
    """XGBoost (histogram trees), early stopping on the validation MAE; needs ``pip install xgboost``."""

    def __init__(self, cfg: StackConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.xgb = _import_optional("xgboost")

    def fit(self, x, y, x_val=None, y_val=None) -> XGBLearner:
        c = self.cfg
        watch = x_val is not None and len(x_val) > 0
        self.model = self.xgb.XGBRegressor(
            n_estimators=c.n_estimators,
            learning_rate=c.learning_rate,
            max_leaves=c.num_leaves,
            grow_policy="lossguide",
            min_child_weight=c.min_child_samples,
            colsample_bytree=c.colsample,
            objective="reg:absoluteerror" if c.objective == "l1" else "reg:squarederror",
            eval_metric="mae",
            tree_method="hist",
            random_state=self.seed,
            n_jobs=c.num_threads,
            early_stopping_rounds=c.early_stopping_rounds if watch else None,
        )
        self.model.fit(x, y, eval_set=[(x_val, y_val)] if watch else None, verbose=False)
        return self

    def predict(self, x) -> np.ndarray:
        return self.model.predict(x).astype(np.float64)

    def info(self) -> dict:
        return {"best_iteration": int(getattr(self.model, "best_iteration", self.cfg.n_estimators - 1)) + 1}


class CatBoostLearner:
    """CatBoost (oblivious trees), early stopping on the validation MAE; needs ``pip install catboost``."""

    def __init__(self, cfg: StackConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.cb = _import_optional("catboost")

    def fit(self, x, y, x_val=None, y_val=None) -> CatBoostLearner:
        c = self.cfg
        watch = x_val is not None and len(x_val) > 0
        self.model = self.cb.CatBoostRegressor(
            iterations=c.n_estimators,
            learning_rate=c.learning_rate,
            depth=max(1, min(10, round(math.log2(max(c.num_leaves, 2))))),
            loss_function="MAE" if c.objective == "l1" else "RMSE",
            eval_metric="MAE",
            random_seed=self.seed,
            thread_count=c.num_threads,
            allow_writing_files=False,
            verbose=False,
        )
        kw = {"eval_set": (x_val, y_val), "early_stopping_rounds": c.early_stopping_rounds} if watch else {}
        self.model.fit(x, y, **kw)
        return self

    def predict(self, x) -> np.ndarray:
        return self.model.predict(x).astype(np.float64)

    def info(self) -> dict:
        return {"best_iteration": int(self.model.get_best_iteration() or self.cfg.n_estimators - 1) + 1}


LEARNERS: dict[str, Callable[[StackConfig, int], object]] = {
    "lgbm": LGBMLearner,
    "mlp": MLPLearner,
    "ridge": RidgeLearner,
    "xgboost": XGBLearner,
    "catboost": CatBoostLearner,
}


# ---------------------------------------------------------------------------------------------
# folds


def group_folds(groups: np.ndarray, n_folds: int) -> np.ndarray:
    """(n,) fold of each row such that a group's rows share one fold, folds balanced by row count
    (largest group first into the fold with fewest rows, ties by group id: scikit-learn's
    GroupKFold rule, deterministic). ``n_folds`` is capped at the number of groups."""
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    k = min(n_folds, len(uniq))
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    for g in np.lexsort((uniq, -counts)):  # loop over groups (stations), not rows
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += counts[g]
    return fold_of_group[inverse]


def block_folds(blocks: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """(n,) fold of each row's time block: the distinct blocks, shuffled with ``seed``, dealt
    round-robin to ``n_folds`` folds."""
    uniq, inverse = np.unique(blocks, return_inverse=True)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    fold_of_block = np.empty(len(uniq), dtype=np.int64)
    fold_of_block[perm] = np.arange(len(uniq)) % n_folds
    return fold_of_block[inverse]


def fold_rows(
    groups: np.ndarray, blocks: np.ndarray | None, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train rows, out-of-fold rows)] per fold: fold f predicts every row of its groups, from a
    model trained on the other groups' rows outside fold f's time blocks (when ``blocks`` given).
    Fewer distinct blocks than folds cannot block every fold: then ``blocks`` is not used (see
    :func:`fit_stack`'s record, ``time_blocked``)."""
    gf = group_folds(groups, n_folds)
    k = int(gf.max()) + 1
    bf = block_folds(blocks, k, seed) if blocks is not None and len(np.unique(blocks)) >= k else None
    out = []
    for f in range(k):
        train = gf != f
        if bf is not None:
            train &= bf != f
        out.append((np.flatnonzero(train), np.flatnonzero(gf == f)))
    return out


# ---------------------------------------------------------------------------------------------
# meta-learners over the base predictions (n, L) and passthrough features (n, P)


class RidgeMeta:
    """Ridge over [base predictions, standardised passthrough (NaN -> 0) and its missing
    indicators], with an intercept; with ``positive`` the weights on the base predictions are
    constrained >= 0 (bounded least squares on the ridge-augmented system, scipy's BVLS). The
    penalty is ``meta_alpha * ||w||²`` on centred inputs (scikit-learn's convention)."""

    def __init__(self, cfg: StackConfig):
        self.cfg = cfg

    def _design(self, preds: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return np.concatenate([preds, self.imputer.transform(raw).astype(np.float64)], axis=1)

    def fit(self, preds, raw, y, preds_val=None, raw_val=None, y_val=None) -> RidgeMeta:
        from scipy.optimize import lsq_linear

        self.imputer = Imputer().fit(raw)
        a = self._design(preds, raw)
        self.center = a.mean(0)
        y_mean = float(np.mean(y))
        ac = a - self.center
        p = a.shape[1]
        aug = np.concatenate([ac, math.sqrt(self.cfg.meta_alpha) * np.eye(p)])
        rhs = np.concatenate([y - y_mean, np.zeros(p)])
        lower = np.full(p, -np.inf)
        if self.cfg.meta_positive:
            lower[: preds.shape[1]] = 0.0
        if np.isfinite(lower).any():
            self.coef = lsq_linear(aug, rhs, bounds=(lower, np.full(p, np.inf)), method="bvls").x
        else:
            self.coef = np.linalg.lstsq(aug, rhs, rcond=None)[0]
        self.intercept = y_mean
        return self

    def predict(self, preds, raw) -> np.ndarray:
        return (self._design(preds, raw) - self.center) @ self.coef + self.intercept

    def weights(self, names: list[str]) -> dict:
        cols = list(names)
        n_base = len(cols) - int(self.imputer.mean.shape[0])
        cols += [f"{c}:missing" for c in np.asarray(names[n_base:])[self.imputer.indicate]]
        w = {c: float(v) for c, v in zip(cols, self.coef, strict=True)}
        # the intercept on the original scale: the design's centring folded in
        w["intercept"] = float(self.intercept - self.center @ self.coef)
        return w


class GreedyMeta:
    """AutoGluon's last layer, ``WeightedEnsemble``: Caruana et al.'s ensemble selection (ICML 2004)
    — starting empty, add (with replacement) the base learner whose inclusion gives the lowest
    mean absolute error of the running average over the out-of-fold predictions, ``GREEDY_ROUNDS``
    times; the weights are the selection counts / rounds (non-negative, summing to 1). It optimises
    the scored metric directly and cannot extrapolate; passthrough features are not used."""

    GREEDY_ROUNDS = 50

    def __init__(self, cfg: StackConfig):
        self.cfg = cfg

    def fit(self, preds, raw, y, preds_val=None, raw_val=None, y_val=None) -> GreedyMeta:
        n_learners = preds.shape[1]
        counts = np.zeros(n_learners)
        running = np.zeros(len(y))
        for r in range(self.GREEDY_ROUNDS):
            cand = (running[:, None] * r + preds) / (r + 1)  # (n, L): the average with each learner added
            best = int(np.argmin(np.abs(cand - y[:, None]).mean(0)))  # ties: the first learner
            counts[best] += 1
            running = cand[:, best]
        self.coef = counts / counts.sum()
        return self

    def predict(self, preds, raw) -> np.ndarray:
        return preds @ self.coef

    def weights(self, names: list[str]) -> dict:
        return {c: float(v) for c, v in zip(names, self.coef, strict=False)}


class LGBMMeta:
    """A small LightGBM (15 leaves) over [base predictions, passthrough], early stopping on validation."""

    def __init__(self, cfg: StackConfig):
        meta_cfg = copy.copy(cfg)
        meta_cfg.num_leaves, meta_cfg.colsample = min(cfg.num_leaves, 15), 1.0
        self.learner = LGBMLearner(meta_cfg, cfg.seed + 7919)

    def fit(self, preds, raw, y, preds_val=None, raw_val=None, y_val=None) -> LGBMMeta:
        val = None if preds_val is None else np.concatenate([preds_val, raw_val], axis=1)
        self.learner.fit(np.concatenate([preds, raw], axis=1), y, val, y_val)
        return self

    def predict(self, preds, raw) -> np.ndarray:
        return self.learner.predict(np.concatenate([preds, raw], axis=1))

    def weights(self, names: list[str]) -> dict:
        return {"gain": dict(zip(names, map(float, self.learner.gain()), strict=True)), **self.learner.info()}


# ---------------------------------------------------------------------------------------------
# the stack


@dataclass
class Stack:
    """A fitted stack. ``models[name]``: the learner's fold models (layers=2, bagged) or its one
    model (layers=1). ``record``: what was fitted and how it scored (JSON-ready)."""

    cfg: StackConfig
    names: list[str]
    models: dict[str, list] = field(default_factory=dict)
    meta: GreedyMeta | RidgeMeta | LGBMMeta | None = None
    record: dict = field(default_factory=dict)
    oof: np.ndarray | None = None  # (n, L) out-of-fold predictions the meta-learner was fitted on

    def base_predictions(self, x: np.ndarray) -> np.ndarray:
        """(n, L): each learner's prediction (its fold models averaged)."""
        cols = [np.mean([m.predict(x) for m in self.models[name]], axis=0) for name in self.cfg.learners]
        return np.stack(cols, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, F) float32 with NaN -> (n,) float64."""
        x = _check_x(x, len(self.names), "X")
        if not len(x):
            return np.zeros(0)
        preds = self.base_predictions(x)
        if self.meta is None:
            return preds.mean(1)
        return self.meta.predict(preds, x[:, list(self.cfg.passthrough)])

    def feature_importance(self) -> dict[str, float]:
        """Feature name -> LightGBM gain, averaged over the ``lgbm`` base learner's fold models
        ({} without an ``lgbm`` base learner)."""
        lgbm = self.models.get("lgbm", [])
        if not lgbm:
            return {}
        gain = np.mean([m.gain() for m in lgbm], axis=0)
        return {n: float(g) for n, g in zip(self.names, gain, strict=True)}


def _check_x(x, n_features: int | None, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        raise ValueError(f"stack: {what} must be (n, {n_features or 'F'}), got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError(f"stack: {what} holds infinite values (use NaN for undefined features)")
    return x


def _learner_seed(seed: int, learner: int, fold: int) -> int:
    return (seed * 1_000_003 + learner * 9_973 + fold * 101) % (2**31 - 1)


def fit_stack(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    names: list[str],
    cfg: StackConfig,
    *,
    blocks: np.ndarray | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> Stack:
    """Fit the stack.

    Args:
        x: (n, F) float32 features, NaN where undefined. y: (n,) finite targets.
        groups: (n,) int group (station) of each row; folds never split a group.
        names: the F feature names.
        cfg: :class:`StackConfig`.
        blocks: (n,) int time block of each row, or None (folds grouped by station only).
        x_val, y_val: (n_val, F), (n_val,) validation rows for early stopping and the record
            (rows of other stations and another period), or None.
    Returns:
        :class:`Stack` with ``record``: rows, folds, per-learner OOF and validation MAE and fitting
        seconds (the only entries that vary between identical fits), meta weights, stack
        validation MAE.
    """
    x = _check_x(x, None, "X")
    n, n_feat = x.shape
    y = np.asarray(y, dtype=np.float64)
    groups = np.asarray(groups)
    if len(names) != n_feat:
        raise ValueError(f"stack: {len(names)} feature names for {n_feat} columns")
    if y.shape != (n,) or groups.shape != (n,) or (blocks is not None and np.shape(blocks) != (n,)):
        raise ValueError(f"stack: y, groups and blocks must be ({n},) like X's rows")
    if n == 0 or not np.isfinite(y).all():
        raise ValueError(f"stack: need at least one row and finite targets (got {n} rows)")
    bad = [i for i in cfg.passthrough if not 0 <= i < n_feat]
    if bad:
        raise ValueError(f"stack: passthrough columns {bad} out of range for {n_feat} features")
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        x_val = _check_x(x_val, n_feat, "X_val")
        y_val = np.asarray(y_val, dtype=np.float64)
        if y_val.shape != (len(x_val),) or not np.isfinite(y_val).all():
            raise ValueError(f"stack: y_val must be ({len(x_val)},) finite")
    else:
        x_val = y_val = None
    stack = Stack(cfg, list(names))
    rec: dict = {"rows": n, "features": n_feat, "groups": int(len(np.unique(groups))), "learners": {}}
    if cfg.layers == 1:
        for li, name in enumerate(cfg.learners):
            tic = time.perf_counter()
            stack.models[name] = [LEARNERS[name](cfg, _learner_seed(cfg.seed, li, 0)).fit(x, y, x_val, y_val)]
            rec["learners"][name] = {"seconds": round(time.perf_counter() - tic, 3)}
    else:
        blocks = None if blocks is None else np.asarray(blocks)
        folds = fold_rows(groups, blocks, cfg.n_folds, cfg.seed)
        if len(folds) < 2:
            raise ValueError("stack: out-of-fold predictions need at least 2 groups (stations)")
        rec["folds"] = len(folds)
        rec["time_blocked"] = blocks is not None and len(np.unique(blocks)) >= len(folds)
        rec["fold_rows"] = [[int(len(tr)), int(len(te))] for tr, te in folds]
        oof = np.full((n, len(cfg.learners)), np.nan)
        for li, name in enumerate(cfg.learners):
            tic = time.perf_counter()
            models = []
            for f, (train, held) in enumerate(folds):
                if not len(train):
                    raise ValueError(f"stack: fold {f} has no training rows (too few groups or time blocks)")
                model = LEARNERS[name](cfg, _learner_seed(cfg.seed, li, f)).fit(x[train], y[train], x_val, y_val)
                oof[held, li] = model.predict(x[held])
                models.append(model)
            stack.models[name] = models
            rec["learners"][name] = {"oof_mae": mae(oof[:, li], y), "seconds": round(time.perf_counter() - tic, 3)}
        raw = x[:, list(cfg.passthrough)]
        pv = rv = None
        if has_val:
            pv, rv = stack.base_predictions(x_val), x_val[:, list(cfg.passthrough)]
        stack.oof = oof
        meta_cls = {"greedy": GreedyMeta, "ridge": RidgeMeta, "lgbm": LGBMMeta}[cfg.meta]
        if cfg.meta_rows == "val" and has_val:  # blending on the held-out val stations / val period
            stack.meta = meta_cls(cfg).fit(pv, rv, y_val)
        else:
            stack.meta = meta_cls(cfg).fit(oof, raw, y, pv, rv, y_val)
        rec["meta_rows"] = "val" if cfg.meta_rows == "val" and has_val else "oof"
        meta_names = [f"pred:{m}" for m in cfg.learners] + [names[i] for i in cfg.passthrough]
        rec["meta"] = {"kind": cfg.meta, "weights": stack.meta.weights(meta_names)}
        rec["oof_mae"] = mae(stack.meta.predict(oof, raw), y)  # in-sample for the meta-learner
    for name, models in stack.models.items():
        entry = rec["learners"].setdefault(name, {})
        entry["fits"] = [m.info() for m in models]
        if has_val:
            entry["val_mae"] = mae(np.mean([m.predict(x_val) for m in models], axis=0), y_val)
    if has_val:
        rec["val_rows"] = int(len(x_val))
        rec["val_mae"] = mae(stack.predict(x_val), y_val)
    stack.record = rec
    return stack
