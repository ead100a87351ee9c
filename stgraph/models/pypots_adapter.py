"""Any PyPOTS imputer as a station model: ``pypots:<Name>`` (SAITS, BRITS, TimesNet, ImputeFormer,
CSDI, ...; ``pip install pypots``), run inside the engine with its roles, scaler, windows, protocol,
run folder and leaderboard.

PyPOTS's imputers are transductive over a fixed set of series: each station is a feature and a
window is a sample of (steps, features). So the adapter serves the tasks whose visible stations
are the same set in training and at evaluation, every station imputed where its values are
missing:

* ``impute`` (every station visible): the evaluation cells are imputed;
* ``reconstruct``: the visible stations' cells removed by the sparse pattern are imputed; the
  hidden (fine) stations, which PyPOTS cannot represent, get the masked IDW (p = 2) of the
  imputed visible series (named so in docs/models.md; not PyPOTS's).

Training (:meth:`PyPOTSImputer.fit`, the engine's ``fit`` hook): the training batches' windows
with every observed value put back (the task's own hidden cells are PyPOTS's to choose: each
model draws its artificial missingness, SAITS's MIT, CSDI's masking strategy), validation on the
suite's validation windows (their evaluation cells held out, PyPOTS's ``X_ori``; ``reconstruct``,
which scores no visible cell there, holds out 10 % of the observed visible cells), PyPOTS's own
training loop and optimiser (Adam at ``train.lr``), ``train.batch_size``; the budget is the run's
``train.steps`` optimiser steps rounded to the nearest whole number of PyPOTS epochs, at least
one (PyPOTS validates once per epoch, ``windows / batch`` steps, and keeps its best *validated*
epoch, so the steps after an epoch's validation would be trained and discarded), and the run's fit
record says how many steps and seconds it took (``steps``; ``budget_steps``: the asked budget;
``epoch_steps``). PyPOTS's learning curve (mean training loss and its validation metric per epoch)
is kept in the record's ``curve``, which the engine writes as the run's ``learning_curve.csv`` and
TensorBoard scalars (:mod:`stgraph.engine.fit_curve`), and the record's ``training`` summary gives
the leaderboard's ↗ mark (best validated epoch in the budget's last quarter). The fitted model is
saved in the run folder (``pypots_model.pypots``); re-evaluation loads it instead of refitting.

Deviations, named: PyPOTS picks the best epoch on its own validation loss (its early-stopping
rule), not the engine's validation MAE; inputs are the engine's standardised values (the suite's
scaler), not PyPOTS's; a sampling imputer (CSDI) returns ``samples`` samples, their median is the
estimate and CRPS and coverage come from them.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stgraph.models.anchors import anchor_prediction
from stgraph.models.base import DataSizes, FitContext, GraphBatch, Prediction, StationModel
from stgraph.ops.idw import masked_idw
from stgraph.ops.neighbours import canonical_order

SAVED = "pypots_model.pypots"


@dataclass
class PyPOTSParams:
    model: str = "SAITS"  # a class of pypots.imputation (``pypots:<Name>`` sets it)
    options: dict = field(default_factory=dict)  # the PyPOTS model's own arguments (its defaults otherwise)
    samples: int = 10  # sampling imputers (CSDI): samples per window at evaluation
    epochs_cap: int = 100_000  # PyPOTS counts epochs; the step budget stops it first


def _pypots_class(name: str):
    try:
        import pypots.imputation as imputation
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("model 'pypots:...' needs PyPOTS: pip install pypots") from err
    cls = getattr(imputation, name, None)
    if cls is None or not inspect.isclass(cls):
        names = sorted(n for n in dir(imputation) if n[:1].isupper())
        raise ValueError(f"pypots: no imputer named {name!r} in pypots.imputation; choose one of {names}")
    return cls


def _window_arrays(batch: GraphBatch, terms, channel: int) -> np.ndarray:
    """(B, W, N) float32 of the target channel at every station of the batch (visible, and the
    training stations a training batch hides as targets), in
    :func:`~stgraph.ops.neighbours.canonical_order`; the task's hidden cells and stations put back
    from the loss terms (their truth); NaN where nothing is observed."""
    x = torch.where(batch.x_mask[..., channel], batch.x[..., channel], torch.nan)
    tgt = x.new_full((*x.shape[:2], batch.pos_tgt.size(0)), torch.nan)
    for which, y, mask, _ in terms:
        if which == "src":
            x = torch.where(mask[..., 0], y[..., 0].to(x.dtype), x)
        else:
            tgt = torch.where(mask[..., 0], y[..., 0].to(x.dtype), tgt)
    every = torch.cat([x, tgt], -1) if len(terms) else x
    pos = torch.cat([batch.pos_src, batch.pos_tgt]) if len(terms) else batch.pos_src
    return every[..., canonical_order(pos)].numpy().astype(np.float32)


class PyPOTSImputer(StationModel):
    """Args: sizes (task ``impute`` or ``reconstruct``, one output channel); params :class:`PyPOTSParams`.

    Shapes: :class:`~stgraph.models.base.GraphBatch` -> src (B, W, N_src, 1), tgt (B, W, N_tgt, 1)
    (and their samples for a sampling imputer).
    """

    tasks = frozenset({"impute", "reconstruct"})
    trainable = False  # PyPOTS trains it inside fit
    fits = True
    learns_interpolation = False

    def __init__(self, sizes: DataSizes, params: PyPOTSParams | None = None):
        super().__init__(sizes)
        self.params = params or PyPOTSParams()
        if sizes.out_channels != 1:
            raise ValueError(f"pypots:{self.params.model}: one target channel, got {sizes.out_channels}")
        if self.params.samples < 1:
            raise ValueError(f"pypots:{self.params.model}: samples must be >= 1, got {self.params.samples}")
        self.cls = _pypots_class(self.params.model)
        self.channel = int(sizes.target_channels[0])
        self.peer = None
        self.num_series: int | None = None

    def reset_parameters(self) -> None:
        self.peer = None

    def _build(self, n_steps: int, n_series: int, ctx: FitContext, optimizer):
        args = dict(n_steps=n_steps, n_features=n_series, batch_size=ctx.batch_size, epochs=self.params.epochs_cap,
                    patience=None, device="cpu", verbose=False, optimizer=optimizer, **self.params.options)  # fmt: skip
        accepted = inspect.signature(self.cls.__init__).parameters
        return self.cls(**{k: v for k, v in args.items() if k in accepted})

    def fit(self, ctx: FitContext) -> dict:
        from pypots.optim import Adam

        torch.manual_seed(ctx.seed)
        np.random.seed(ctx.seed)  # noqa: NPY002 (PyPOTS draws its artificial masks from the global generator)
        train = np.concatenate([_window_arrays(b, t, self.channel) for b, t in ctx.train_batches()])
        val_x, val_ori = [], []
        for b, t in ctx.val_batches():  # the visible stations only: what the model is given at evaluation
            val_x.append(_window_arrays(b, (), self.channel))
            val_ori.append(_window_arrays(b, tuple(term for term in t if term[0] == "src"), self.channel))
        val_x, val_ori = np.concatenate(val_x), np.concatenate(val_ori)
        if np.array_equal(np.isnan(val_x), np.isnan(val_ori)):  # the task scores no visible cell (reconstruct):
            # validate on 10 % of the val period's observed visible cells, hidden at random (seeded)
            held = (np.random.default_rng(ctx.seed).random(val_x.shape) < 0.1) & ~np.isnan(val_x)
            val_x = np.where(held, np.nan, val_x).astype(np.float32)
        self.num_series = train.shape[2]
        saved = None if ctx.restore_dir is None else Path(ctx.restore_dir) / SAVED
        counter, holder = {"steps": 0}, {}
        epoch = math.ceil(len(train) / ctx.batch_size)  # PyPOTS's steps per epoch (its loader keeps the last batch)
        asked = ctx.steps if ctx.steps is not None else epoch
        # PyPOTS validates once per epoch and keeps its best *validated* epoch, so steps after the last
        # validation are trained and thrown away: the budget is rounded to the nearest whole number of
        # epochs (at least one), and the record says both
        budget = max(1, round(asked / epoch)) * epoch

        def validated() -> bool:
            return getattr(holder.get("peer"), "best_model_dict", None) is not None

        peer = self._build(train.shape[1], train.shape[2], ctx, _budgeted(Adam, budget, counter, validated)(lr=ctx.lr))
        holder["peer"] = peer
        if saved is not None and saved.exists():
            peer.load(str(saved))
            self.peer = peer
            return {"pypots": self.params.model, "loaded": str(saved.name)}
        curve = _CurveRecorder().attach(peer)
        t0 = time.perf_counter()
        peer.fit({"X": train}, {"X": val_x, "X_ori": val_ori})
        seconds = time.perf_counter() - t0
        curve.detach(peer)
        self.peer = peer
        if ctx.out_dir is not None:
            peer.save(str(Path(ctx.out_dir) / SAVED), overwrite=True)
        best_epoch = int(getattr(peer, "best_epoch", -1))
        steps_per_second = counter["steps"] / seconds if seconds else 0.0
        best_step = next((r["step"] for r in curve.rows if r["epoch"] == best_epoch), None)
        return {
            "pypots": self.params.model,
            "steps": counter["steps"],
            "budget_steps": asked,
            "epoch_steps": epoch,
            "wall_seconds": round(seconds, 1),
            "steps_per_second": steps_per_second,
            "best_epoch": best_epoch,
            "train_windows": len(train),
            "val_score_name": f"PyPOTS validation {getattr(peer, 'validation_metric_name', 'metric')} (standardised)",
            "curve": curve.rows,
            "training": {
                "epochs_run": len(curve.rows),
                "best_epoch": best_epoch,
                "steps": counter["steps"],
                "best_step": best_step,
                "steps_per_second": steps_per_second,
                "early_stopped": False,  # PyPOTS's patience is off: the step budget ends every fit
                "stopped": "budget",
            },
        }

    def forward(self, batch: GraphBatch) -> Prediction:
        if self.peer is None:  # before its fit, as AMLSG: the task's anchor (lerp-knn for impute)
            return anchor_prediction(batch, self.sizes)
        order = canonical_order(batch.pos_src)
        back = torch.argsort(order)
        x = torch.where(batch.x_mask[..., self.channel], batch.x[..., self.channel], torch.nan)[..., order]  # (B, W, N)
        if x.size(-1) != self.num_series:
            raise ValueError(
                f"pypots:{self.params.model}: fitted on {self.num_series} stations, given {x.size(-1)}; PyPOTS's "
                "imputers are transductive (the same visible stations in training and evaluation)"
            )
        kwargs = {"n_sampling_times": self.params.samples} if "n_sampling_times" in inspect.signature(
            self.peer.predict).parameters else {}  # fmt: skip
        out = torch.as_tensor(np.asarray(self.peer.predict({"X": x.numpy()}, **kwargs)["imputation"]))[..., back]
        observed = batch.x_mask[..., self.channel]
        if out.dim() == 4:  # (B, S, W, N) samples
            samples = torch.where(observed, batch.x[..., self.channel], out.transpose(0, 1).to(x.dtype))[..., None]
            src = samples.median(0).values
        else:
            samples, src = None, torch.where(observed, batch.x[..., self.channel], out.to(x.dtype))[..., None]
        tgt, samples_tgt = self._targets(batch, src, samples)
        return Prediction(src=src, tgt=tgt, samples_src=samples, samples_tgt=samples_tgt)

    def _targets(self, batch: GraphBatch, src: torch.Tensor, samples: torch.Tensor | None):
        """Hidden stations: masked IDW (p = 2) of the imputed visible series (not PyPOTS's)."""
        if batch.pos_tgt.size(0) == 0:
            empty = src.new_zeros(*src.shape[:2], 0, 1)
            return empty, None if samples is None else samples.new_zeros(*samples.shape[:3], 0, 1)
        full = torch.ones_like(src, dtype=torch.bool)
        tgt, _ = masked_idw(src, full, batch.pos_src, batch.pos_tgt, 2.0)
        if samples is None:
            return tgt, None
        flat = samples.flatten(0, 1)
        st, _ = masked_idw(flat, torch.ones_like(flat, dtype=torch.bool), batch.pos_src, batch.pos_tgt, 2.0)
        return tgt, st.unflatten(0, samples.shape[:2])


class _CurveRecorder:
    """PyPOTS's learning curve, read from the hook its training loop calls when the model has a
    TensorBoard writer (``_save_log_into_tb_file(step, stage, values)``: every training step with
    the step's outputs, every validation with ``{metric name: value}``). ``rows``: one dict per
    epoch, ``{"epoch", "step", "train_loss", "val_score", "epoch_seconds"}``
    (:mod:`stgraph.engine.fit_curve`). A PyPOTS version whose loop does not call the hook leaves
    ``rows`` empty (the run then has no curve, nothing else changes)."""

    def __init__(self):
        self.rows: list[dict] = []
        self._loss, self._batches, self._step = 0.0, 0, 0
        self._t0 = time.perf_counter()

    def __call__(self, step: int, stage: str, values: dict) -> None:
        if stage == "training":
            loss = values.get("loss")
            if loss is not None:
                self._loss += float(loss.detach().sum() if torch.is_tensor(loss) else loss)
                self._batches += 1
            self._step = int(step)
        elif stage == "validating" and values:
            now = time.perf_counter()
            value = next(iter(values.values()))
            self.rows.append({
                "epoch": int(step), "step": self._step, "train_loss": self._loss / max(self._batches, 1),
                "val_score": float(value), "epoch_seconds": now - self._t0,
            })  # fmt: skip
            self._loss, self._batches, self._t0 = 0.0, 0, now

    def attach(self, peer) -> _CurveRecorder:
        peer.summary_writer = self  # the loop calls the hook only when a writer is set
        peer._save_log_into_tb_file = self
        return self

    def detach(self, peer) -> None:
        peer.summary_writer = None
        del peer._save_log_into_tb_file  # back to the class's method


def _budgeted(base_cls, budget: int, counter: dict, validated):
    """PyPOTS's optimiser wrapper ``base_cls``, counting steps and stopping training at ``budget``
    (``KeyboardInterrupt``, which PyPOTS's loop handles by keeping its best validated epoch) once
    ``validated()`` says an epoch was validated (PyPOTS refuses a fit without one; the overrun
    shows in the recorded steps)."""

    class BudgetedOptimizer(base_cls):
        def step(self, closure=None):
            if counter["steps"] >= budget and validated():
                raise KeyboardInterrupt("step budget spent")
            counter["steps"] += 1
            return super().step(closure)

    return BudgetedOptimizer
