"""AMLSG: hierarchical stacked generalisation on graph features, as a StationModel that fits.

AMLSG (the Shanghai 2014-2025 air-quality inventory) reconstructs air quality with AutoGluon's multi-layer
stack (a torch MLP and gradient-boosted trees, 5-fold bagging, a stacker on top). Here the stack is
:mod:`stgraph.models.stacking` (LightGBM, a torch MLP, ridge; grouped out-of-fold predictions; a
greedy-ensemble, ridge or LightGBM meta-learner) and its rows are :func:`stgraph.features.station_features`: for
each (sample, step, output station, output channel) the k nearest *observed* visible stations'
values, distances, bearings and lags, IDW and kNN estimates, calendar, coordinates, covariates, the
station's own history where it has one and the protocol's co-located channels. AMLSG's
other two stages are engine protocols usable with every model (``split.backcast``,
``data.aggregate``; :mod:`stgraph.engine.tasks.protocols`).

:meth:`AMLSG.fit` takes the engine's leak-free :class:`~stgraph.models.base.FitContext`:

- **Training rows**: one pass over ``ctx.train_batches()`` (training stations, training period,
  some stations or cells hidden by the task exactly as for gradient training; ``train.
  max_train_windows`` caps the windows). From every loss term with a positive weight it keeps the
  cells the model had to estimate: all of a ``tgt`` term's observed cells; of a ``src`` term, the
  cells unobserved in the input (aligned tasks: hidden cells, ``impute``'s training gaps; forecast:
  stations with no observation of that channel in the window). Cells a model only echoes are not
  rows (a term's weight only selects: rows are unweighted). Target: the standardised truth.
- **Row cap**: at most ``max_rows`` rows per output channel, a uniform sample without replacement
  (the rows with the ``max_rows`` smallest keys of a seeded uniform draw, kept in arrival order),
  so fitting cost is bounded on 4-year hourly data; validation rows likewise ``max_val_rows``.
- **Column set**: that of the output the task scores (``tgt`` for krige/forecast, ``src`` for
  impute); rows of the other output (``node_masking: sample`` hides visible stations) are aligned
  onto it by column name, absent columns NaN.
- **Groups and blocks**: a row's group is its station (its latitude/longitude, mapped to an id);
  its time block is the calendar month of its window's first step (decoded from ``x_time``, the
  only clock a batch carries: no year), so a fold model never trains on its stations nor on its
  months. ``time_blocks=False`` groups by station only, and so do fewer distinct months than
  folds (``time_blocked`` in each channel's record says which happened).
- **Validation rows** (early stopping of the trees and the MLP, and the per-learner validation
  MAE in the record): ``ctx.val_batches()``, val-role stations hidden in the val period.
- **Ensemble weights** (``meta_rows: val``, the default here): AutoGluon's last layer — greedy
  ensemble selection minimising MAE (``meta: greedy``) — fitted on the base learners' (bagged)
  predictions at the validation rows rather than on the out-of-fold training rows. Measured on
  UCI-12 krige fold 0: OOF rows share the training period, where the MLP looked as good as
  LightGBM (OOF MAE 0.188 vs 0.186 standardised) but generalised worse to the later val period
  (0.217 vs 0.195); the OOF-weighted stack (15.04 µg/m³) lost to LightGBM alone (14.71).
  ``meta_rows: oof`` is classic stacking. Objective: L1 (the scored metric), ``objective: l2``
  selectable.
- **Channels**: one stack per output channel (each pollutant its own model, as AMLSG fits one
  AutoGluon predictor per indicator).

:meth:`AMLSG.forward` (standardised in and out, one ``predict`` call per channel and output):
``tgt`` is the stack on the targets' features; ``src``: aligned tasks echo observed inputs and fill
every unobserved cell with the stack on the visible stations' own features (``impute`` scores these;
for krige the ``src`` table is aligned by name onto the ``tgt`` columns, the target-only anchor
columns NaN); ``forecast``: the same name-aligned stack on the visible stations (their own history
is not a column of the ``tgt`` model; never scored). Before :meth:`fit` the model *is* its anchor
(:func:`~stgraph.models.anchors.anchor_prediction`), like every anchored model in stgraph.

``lgbm`` (:class:`LGBM`) is LightGBM alone on the same features, fitted once on all rows: the
RFSI-style row (random forest spatial interpolation, Sekulić et al. 2020, with boosted trees).

Deviations from AMLSG: see :mod:`stgraph.models.stacking` (no AutoGluon search or repeated
bagging; folds grouped by station and blocked by calendar month instead of random rows), plus the
row cap above. Fitting is deterministic given the run's seed (``evaluate_run`` refits).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stgraph.features import FeatureConfig, station_features
from stgraph.models.anchors import anchor_prediction
from stgraph.models.base import DataSizes, FitContext, GraphBatch, Prediction, StationModel
from stgraph.models.stacking import Stack, StackConfig, StackOptions, fit_stack

MONTH_SIN, MONTH_COS = 4, 5  # columns of x_time (stgraph.data.encodings.CYCLIC_FEATURES)
TOP_FEATURES = 25  # bars in feature_importance.png


@dataclass
class AMLSGParams(StackOptions):
    """Hyperparameters (YAML ``model.hparams``).

    Stack (:class:`~stgraph.models.stacking.StackOptions`, whose defaults these are): learners,
    meta, meta_rows (default ``val``: the ensemble weights are chosen on the val stations' rows, see
    the module docstring), meta_positive, meta_alpha, layers, n_folds, objective, the LightGBM, MLP
    and ridge settings.
    Features (:class:`~stgraph.features.FeatureConfig`): k, lags, idw_power, own_history,
    covariates, co_located (the protocol's co-located channels as features).
    Rows: max_rows, max_val_rows (per output channel). time_blocks: folds also blocked by
    calendar month. passthrough: feature names the meta-learner also sees: ``("auto",)`` the
    task's IDW estimate (``idw``; forecast ``idw_last``), ``()`` none; a name the features do not
    have is an error. num_threads: LightGBM threads (0: torch's thread count).
    seed_offset: added to the run's seed.
    """

    k: int = 6
    lags: tuple[int, ...] = (1, 2, 3, 6)
    idw_power: float = 2.0
    own_history: bool = True
    covariates: bool = True
    co_located: bool = True
    time_blocks: bool = True
    max_rows: int = 200_000
    max_val_rows: int = 50_000
    passthrough: tuple[str, ...] = ("auto",)
    num_threads: int = 0
    seed_offset: int = 0


@dataclass
class LGBMParams(AMLSGParams):
    """:class:`AMLSGParams` with LightGBM alone, fitted once on all rows (no folds, no meta-learner)."""

    learners: tuple[str, ...] = ("lgbm",)
    layers: int = 1


# the stack options AMLSGParams passes through unchanged (seed, threads and passthrough are resolved
# per fit; learners and mlp_hidden are normalised to tuples first)
STACK_FIELDS = tuple(f.name for f in dataclasses.fields(StackOptions) if f.name not in ("learners", "mlp_hidden"))


class RowSampler:
    """A uniform sample without replacement of at most ``cap`` rows from a stream of row blocks:
    every row draws a key from a seeded generator and the ``cap`` smallest keys stay (bottom-k
    sampling), returned in arrival order. Memory: at most 2·cap rows at a time."""

    def __init__(self, cap: int, seed: int):
        if cap < 1:
            raise ValueError(f"row cap must be >= 1, got {cap}")
        self.cap, self.rng, self.seen = cap, np.random.default_rng(seed), 0
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.count = 0

    def add(self, *arrays: np.ndarray) -> None:
        n = len(arrays[0])
        keys = self.rng.random(n)
        self.parts.append((keys, np.arange(self.seen, self.seen + n), *arrays))
        self.seen += n
        self.count += n
        if self.count > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        cols = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        if len(cols[0]) > self.cap:
            keep = np.sort(np.argpartition(cols[0], self.cap - 1)[: self.cap])  # arrival order kept
            cols = [c[keep] for c in cols]
        self.parts, self.count = [tuple(cols)], len(cols[0])

    def result(self) -> tuple[np.ndarray, ...]:
        """The kept arrays (without keys and arrival indices); empty if nothing was added."""
        if not self.parts:
            return ()
        self._shrink()
        return self.parts[0][2:]


class StationIds:
    """Maps station positions (latitude/longitude) to stable integer ids, first seen first."""

    def __init__(self):
        self.known = torch.zeros(0, 2, dtype=torch.float64)

    def __call__(self, pos: torch.Tensor) -> np.ndarray:
        """(N, 2) -> (N,) int ids; unseen positions get new ids."""
        pos = pos.double().cpu()
        hit = (pos[:, None] == self.known[None]).all(-1)  # (N, K)
        new = ~hit.any(1)
        if new.any():
            fresh = torch.unique(pos[new], dim=0)
            self.known = torch.cat([self.known, fresh])
            hit = (pos[:, None] == self.known[None]).all(-1)
        return hit.float().argmax(1).numpy()


def window_months(x_time: torch.Tensor) -> np.ndarray:
    """(B, W, 6) cyclic encodings -> (B,) calendar month (0-11) of each window's first step."""
    angle = torch.atan2(x_time[:, 0, MONTH_SIN].double(), x_time[:, 0, MONTH_COS].double())
    return (torch.round(angle / (2 * math.pi / 12)).long() % 12).numpy()


class AMLSG(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`AMLSGParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). No torch parameters: everything it learns lives in ``self.stacks``.
    """

    trainable = False
    fits = True
    learns_interpolation = True
    tasks = frozenset({"forecast", "krige", "impute"})
    params_cls = AMLSGParams

    def __init__(self, sizes: DataSizes, params: AMLSGParams | None = None):
        super().__init__(sizes)
        p = params or self.params_cls()
        p.lags, p.learners = tuple(int(v) for v in p.lags), tuple(p.learners)
        p.mlp_hidden, p.passthrough = tuple(int(v) for v in p.mlp_hidden), tuple(p.passthrough)
        if p.max_rows < 1 or p.max_val_rows < 1:
            raise ValueError(f"amlsg: max_rows and max_val_rows must be >= 1, got {p.max_rows}, {p.max_val_rows}")
        if p.num_threads < 0:
            raise ValueError(f"amlsg: num_threads must be >= 0 (0: torch's), got {p.num_threads}")
        self.params = p
        self.features = FeatureConfig(p.k, p.lags, p.idw_power, p.own_history, p.covariates, p.co_located)
        self.stack_cfg = StackConfig(
            learners=p.learners, mlp_hidden=p.mlp_hidden, **{f: getattr(p, f) for f in STACK_FIELDS}
        )  # validates the stack's options now, before any data is read
        self.primary = "tgt" if sizes.has_targets else "src"  # the output the task scores
        self.stacks: list[Stack] | None = None
        self.columns: list[str] | None = None

    def reset_parameters(self) -> None:
        """Forget the fit: the model is its anchor again."""
        self.stacks, self.columns = None, None

    # ------------------------------------------------------------------ rows

    def _cells(self, batch: GraphBatch, which: str, mask: torch.Tensor) -> torch.Tensor:
        """(B, H, N_which, C_out) bool: the cells of ``mask`` the model has to estimate."""
        if which == "tgt":
            return mask
        seen = batch.x_mask[..., list(self.sizes.target_channels)]
        if self.sizes.aligned:
            return mask & ~seen
        return mask & ~seen.any(1, keepdim=True)  # forecast: stations with no observation in the window

    def _table(self, batch: GraphBatch, which: str) -> torch.Tensor:
        """(B, H, N_which, C_out, F) features with the model's columns (by name; absent: NaN)."""
        feats, names = station_features(batch, self.sizes, self.features, which)
        if self.columns is None:
            raise RuntimeError("amlsg: the column set is not known yet")
        if names == self.columns:
            return feats
        where = {n: i for i, n in enumerate(names)}
        idx = torch.tensor([where.get(n, -1) for n in self.columns], dtype=torch.long)
        picked = feats[..., idx.clamp_min(0)]
        return torch.where(idx >= 0, picked, torch.full_like(picked, float("nan")))

    def _rows(self, batch, terms, samplers: list[RowSampler], ids: StationIds) -> None:
        """Add the rows of one (batch, terms) pair to each output channel's sampler."""
        if self.columns is None:
            self.columns = station_features(batch, self.sizes, self.features, self.primary)[1]
        months = window_months(batch.x_time)
        for which in ("tgt", "src"):
            masks = [m.bool() for w, _, m, weight in terms if w == which and weight > 0]
            if not masks:
                continue
            ys = [y for w, y, _, weight in terms if w == which and weight > 0]
            cells = self._cells(batch, which, torch.stack(masks).any(0))
            if not cells.any():
                continue
            # one truth per cell: the first term's where it covers the cell (terms hold the same truth)
            y = ys[0]
            for m, other in zip(masks[1:], ys[1:], strict=True):
                y = torch.where(m, other, y)
            feats = self._table(batch, which)  # (B, H, M, C, F)
            station = ids(batch.pos_tgt if which == "tgt" else batch.pos_src)  # (M,)
            b, h, m_out, _ = cells.shape
            grid_station = np.broadcast_to(station[None, None, :], (b, h, m_out))
            grid_month = np.broadcast_to(months[:, None, None], (b, h, m_out))
            for c, sampler in enumerate(samplers):
                sel = cells[..., c]
                sel_np = sel.numpy()
                sampler.add(
                    feats[..., c, :][sel].numpy(),
                    y[..., c][sel].double().numpy(),
                    grid_station[sel_np],
                    grid_month[sel_np],
                )

    def _collect(self, batches, cap: int, seed: int, ids: StationIds) -> list[tuple[np.ndarray, ...]]:
        samplers = [RowSampler(cap, seed + 7 * c) for c in range(self.sizes.out_channels)]
        for batch, terms in batches:
            self._rows(batch, terms, samplers, ids)
        return [s.result() for s in samplers]

    # ------------------------------------------------------------------ fit

    def fit(self, ctx: FitContext) -> dict:
        start = time.perf_counter()
        p = self.params
        seed = int(ctx.seed) + p.seed_offset
        threads = p.num_threads or torch.get_num_threads()
        cfg_base = dict(self.stack_cfg.__dict__)
        self.columns = None
        ids = StationIds()
        with torch.no_grad():
            train = self._collect(ctx.train_batches(), p.max_rows, seed * 31 + 1, ids)
            val = self._collect(ctx.val_batches(), p.max_val_rows, seed * 31 + 2, ids) if ctx.val_batches else None
        if self.columns is None:
            raise ValueError("amlsg: the training batches were empty; nothing to fit")
        collected = time.perf_counter() - start
        passthrough = self._passthrough()
        stacks, records = [], []
        for c, rows in enumerate(train):
            if not rows or not len(rows[0]):
                raise ValueError(f"amlsg: no training rows for output channel {c} (no observed hidden cells)")
            x, y, groups, months = rows
            xv = yv = None
            if val and val[c] and len(val[c][0]):
                xv, yv = val[c][0], val[c][1]
            overrides = {"seed": seed * 1009 + c, "num_threads": threads, "passthrough": passthrough}
            cfg = StackConfig(**{**cfg_base, **overrides})
            stack = fit_stack(
                x, y, groups, self.columns, cfg, blocks=months if p.time_blocks else None, x_val=xv, y_val=yv
            )
            stacks.append(stack)
            records.append(stack.record)
        self.stacks = stacks
        importance = self.feature_importance()
        record = {
            "rows": [r["rows"] for r in records],
            "val_rows": [r.get("val_rows", 0) for r in records],
            "features": len(self.columns),
            "feature_names": list(self.columns),
            "passthrough": [self.columns[i] for i in passthrough],
            "learners": list(p.learners),
            "layers": p.layers,
            "time_blocks": p.time_blocks,
            "num_threads": threads,
            "channels": records,
            "val_mae": [r.get("val_mae") for r in records],
            "collect_seconds": round(collected, 3),  # features of the training and validation rows
            "fit_seconds": round(time.perf_counter() - start, 3),  # everything
        }
        if ctx.out_dir is not None and importance:
            save_importance(importance, Path(ctx.out_dir))
        return record

    def _passthrough(self) -> tuple[int, ...]:
        """Column indices of the meta-learner's raw features (see :class:`AMLSGParams`)."""
        names = self.params.passthrough
        if names == ("auto",):
            names = ("idw",) if self.sizes.aligned else ("idw_last",)
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise ValueError(f"amlsg: passthrough features {unknown} are not among the features {self.columns}")
        return tuple(self.columns.index(n) for n in names)

    def feature_importance(self) -> dict[str, float]:
        """Feature name -> LightGBM gain summed over the output channels' stacks ({} if unfitted
        or without an ``lgbm`` learner)."""
        total: dict[str, float] = {}
        for stack in self.stacks or []:
            for name, gain in stack.feature_importance().items():
                total[name] = total.get(name, 0.0) + gain
        return total

    # ------------------------------------------------------------------ predict

    def _predict_cells(self, batch: GraphBatch, which: str, cells: torch.Tensor) -> torch.Tensor:
        """(B, H, M, C_out) float32 stack predictions at ``cells`` (bool, same shape), 0 elsewhere."""
        out = torch.zeros(cells.shape, dtype=torch.float32)
        if not cells.any():
            return out
        feats = self._table(batch, which).cpu()
        for c, stack in enumerate(self.stacks):
            sel = cells[..., c]
            if sel.any():
                pred = stack.predict(feats[..., c, :][sel].numpy())
                out[..., c][sel] = torch.from_numpy(pred).float()
        return out

    @torch.no_grad()
    def forward(self, batch: GraphBatch) -> Prediction:
        # x: [batch, steps, nodes, channels]
        if self.stacks is None:
            return anchor_prediction(batch, self.sizes)
        tc = list(self.sizes.target_channels)
        b, h, c_out = batch.x.size(0), self.sizes.horizon, len(tc)
        dev, dtype = batch.x.device, batch.x.dtype
        n_src, n_tgt = batch.x.size(2), batch.pos_tgt.size(0)
        tgt = self._predict_cells(batch, "tgt", torch.ones(b, h, n_tgt, c_out, dtype=torch.bool))
        if self.sizes.aligned:
            seen = batch.x_mask[..., tc].cpu()
            filled = self._predict_cells(batch, "src", ~seen)
            src = torch.where(seen, batch.x[..., tc].cpu().float(), filled)
        else:
            src = self._predict_cells(batch, "src", torch.ones(b, h, n_src, c_out, dtype=torch.bool))
        return Prediction(src.to(dev, dtype), tgt.to(dev, dtype))


class LGBM(AMLSG):
    """LightGBM alone on AMLSG's graph features (the RFSI-style row): :class:`LGBMParams`."""

    params_cls = LGBMParams


def save_importance(importance: dict[str, float], out_dir: Path) -> None:
    """``feature_importance.json`` (name -> gain, largest first) and ``feature_importance.png``
    (horizontal bars of the top :data:`TOP_FEATURES`, share of the total gain) in ``out_dir``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranked = sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "feature_importance.json").write_text(json.dumps(dict(ranked), indent=1) + "\n")
    top = ranked[:TOP_FEATURES][::-1]
    total = sum(importance.values()) or 1.0
    fig = Figure(figsize=(6.5, 0.25 * len(top) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh([n for n, _ in top], [100 * g / total for _, g in top], color="#3a6ea5")
    ax.set_xlabel("share of LightGBM gain (%)")
    ax.set_title(f"feature importance (top {len(top)} of {len(ranked)})")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "feature_importance.png", dpi=120)
