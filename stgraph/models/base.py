"""What every stgraph model sees and returns, so one engine trains and scores them all.

A model gets the visible (source) stations' past and the positions of target stations, which
have no history, and predicts both. The engine decides who is visible: during training it hides
random training stations and scores the model on them; at evaluation the targets are the
hidden val/test stations. Values are standardised (the engine's scaler); predictions too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class GraphBatch:
    """One batch of model inputs.

    Attributes:
        x: (B, W, N_src, C_in) standardised inputs of the visible stations; 0 where unobserved.
        x_mask: (B, W, N_src, C_in) bool, True where observed.
        x_time: (B, W, 6) cyclic encodings of the input steps (see ``stgraph.data.encodings``).
        y_time: (B, H, 6) cyclic encodings of the output steps (for ``krige``, equal to x_time).
        pos_src: (N_src, 2) latitude/longitude in degrees of the visible stations.
        pos_tgt: (N_tgt, 2) latitude/longitude of the target stations (N_tgt may be 0).
        static_src: (N_src, S) static covariates or None; static_tgt: (N_tgt, S) or None.
        y_src: (B, H, N_src, C_out) standardised truth of the visible stations' outputs, or None.
            Set by the trainer only (teacher forcing, e.g. DCRNN's scheduled sampling); never at
            evaluation, and never for target stations.
        y_src_mask: (B, H, N_src, C_out) bool, True where ``y_src`` is observed.
        anchor_tgt: (B, W, N_tgt, C_a) standardised values of the protocol's anchor channels
            (``data.anchor_channels``: co-located pollutants the protocol declares observed at the
            target stations, AMLSG's hybrid stage) at the target stations over the input steps, 0
            where unobserved; None when the protocol has no anchor. Never a target channel.
        anchor_tgt_mask: (B, W, N_tgt, C_a) bool, True where ``anchor_tgt`` is observed.
        aggregate: (B, W, C_out) standardised mean of the target channels over the observed
            stations of the batch's universe (visible + targets) at each input step
            (``data.aggregate: mean``, AMLSG's downscaling: the city-level series is known), 0
            where none is observed; None otherwise. By design this is the one way the targets'
            values reach the model under that protocol.
        aggregate_mask: (B, W, C_out) bool, True where ``aggregate`` averages at least one station.
    """

    x: torch.Tensor
    x_mask: torch.Tensor
    x_time: torch.Tensor
    y_time: torch.Tensor
    pos_src: torch.Tensor
    pos_tgt: torch.Tensor
    static_src: torch.Tensor | None = None
    static_tgt: torch.Tensor | None = None
    y_src: torch.Tensor | None = None
    y_src_mask: torch.Tensor | None = None
    anchor_tgt: torch.Tensor | None = None
    anchor_tgt_mask: torch.Tensor | None = None
    aggregate: torch.Tensor | None = None
    aggregate_mask: torch.Tensor | None = None


@dataclass
class Prediction:
    """src: (B, H, N_src, C_out) at the visible stations; tgt: (B, H, N_tgt, C_out) at the targets.

    For the aligned tasks (``krige``, ``impute``: outputs at the input steps) ``src`` is the
    completed series of the visible stations: a genuine estimate wherever the input was unobserved
    (models may echo the input where it was observed). ``impute`` scores ``src`` at held-out cells.
    """

    src: torch.Tensor
    tgt: torch.Tensor
    aux: list[Prediction] = field(default_factory=list)
    """Further estimates of the same outputs that training also scores (e.g. GRIN's per-direction
    and first-stage imputations): the trainer adds each one's loss, same mask, weight 1."""
    samples_src: torch.Tensor | None = None
    """(S, B, H, N_src, C_out) standardised samples at the visible stations, or None."""
    samples_tgt: torch.Tensor | None = None
    """(S, B, H, N_tgt, C_out) standardised samples at the targets, or None. A probabilistic model
    returns S samples of both outputs (at least of the one its task scores) and makes ``src`` /
    ``tgt`` their median; evaluation then adds CRPS, the 90 % interval's coverage and the 5/50/95 %
    quantiles (:mod:`stgraph.engine.evaluate`). Point models leave both None."""
    std_tgt: torch.Tensor | None = None
    """(B, H, N_tgt, C_out) standardised predictive standard deviation at the targets, from models
    with a Gaussian posterior (``gp``) when asked (``StationModel.predict_std = True``, as
    ``stgraph reanalyse`` does), else None."""


@dataclass
class FitContext:
    """What a model's :meth:`StationModel.fit` may use; built by the engine, leak-free.

    Attributes:
        train_batches: a callable yielding (batch, terms) from the *training* stations and
            period only: ``batch`` is a GraphBatch shaped by the task as in gradient training
            (some training stations hidden as targets, or cells hidden for ``impute``);
            ``terms`` is a tuple of ``(which, y, mask, weight)``: output ``"src"``/``"tgt"``,
            its standardised truth and mask (B, H, N_which, C_out) and the loss weight.
        validate: scores the model as it stands on the val-role stations / val period
            (standardised MAE, lower is better), as early stopping does.
        val_batches: a callable yielding (batch, terms) exactly as ``validate`` scores: every
            window of the val period, train-role stations visible and val-role stations hidden
            as targets (``impute``: the val period's evaluation cells of the completed series),
            standardised truth. For early stopping of fitted learners (boosted trees); never
            test-role stations or the test period.
        out_dir: the run folder, where a fitted model may leave artefacts (feature importance,
            a chart, a saved fit), or None outside a run.
        seed: the run's seed.
        steps: the run's optimiser-step budget (``train.steps``) for a model that descends inside
            its fit (a PyPOTS imputer), or None. batch_size, lr: ``train.batch_size`` and ``train.lr``.
        restore_dir: when a finished run is restored (evaluate, reanalyse), its folder: a model
            that saved its fit in ``out_dir`` may load it instead of fitting again; else None.
    """

    train_batches: Callable[[], Iterator[tuple[GraphBatch, tuple[torch.Tensor, ...]]]]
    validate: Callable[[], float]
    val_batches: Callable[[], Iterator[tuple[GraphBatch, tuple[torch.Tensor, ...]]]] | None = None
    out_dir: Path | None = None
    seed: int = 0
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    restore_dir: Path | None = None


TASKS = ("forecast", "krige", "impute", "reconstruct")


@dataclass(frozen=True)
class DataSizes:
    """Sizes a model takes from the data (injected by the engine, never written in YAML).

    Attributes:
        in_channels: C_in, input channels per station and step.
        out_channels: C_out, predicted channels.
        target_channels: for each output channel, its index among the input channels.
        window: W, input steps; horizon: H, output steps (H = W for the aligned tasks).
        num_static: S, static covariates per station (0 if none).
        task: ``forecast`` (outputs follow the input window), ``krige``, ``impute`` or
            ``reconstruct`` (outputs at the input steps). Never inferred from H == W: a 24 h -> 24 h
            forecast is not kriging.
    """

    in_channels: int
    out_channels: int
    target_channels: tuple[int, ...]
    window: int
    horizon: int
    num_static: int = 0
    task: str = "forecast"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"DataSizes.task must be one of {TASKS}, got {self.task!r}")
        if self.aligned and self.horizon != self.window:
            raise ValueError(f"task '{self.task}' outputs the input steps: horizon must equal window ({self.window})")

    @property
    def aligned(self) -> bool:
        """True for ``krige``, ``impute`` and ``reconstruct``: outputs at the input steps."""
        return self.task != "forecast"


class StationModel(nn.Module):
    """Base class. Subclasses take ``sizes: DataSizes`` plus typed hyperparameters, implement
    ``forward(batch: GraphBatch) -> Prediction`` and ``reset_parameters()``. A model with no
    parameters (IDW, persistence) sets ``trainable = False``; the engine then skips training.
    ``fits`` models get :meth:`fit` with a :class:`FitContext`.
    ``learns_interpolation`` is False where predictions at targets are a fixed function of the
    visible stations' predictions (no gradient flows through them). ``tasks`` lists the tasks
    the model is defined for (a subset of :data:`TASKS`); the benchmark runner skips the others."""

    trainable: bool = True
    learns_interpolation: bool = True
    tasks: frozenset[str] = frozenset(TASKS)
    fits: bool = False  # True: the engine calls ``fit(ctx)`` before (or instead of) gradient training
    predict_std: bool = False  # set True to ask a Gaussian model for Prediction.std_tgt (costs a solve)

    def fit(self, ctx: FitContext) -> dict:
        """Closed-form / search fitting on training data (and selection on validation), called by
        the engine for every model with ``fits = True`` before any gradient training. Returns a
        record of what was chosen (saved in the run's metrics). Default: nothing to fit."""
        return {}

    def training_loss(self, batch: GraphBatch, terms: list[tuple], loss_fn) -> torch.Tensor:
        """The loss the trainer descends for one training batch. ``terms``: ``(which, y, mask,
        weight)`` as in :class:`FitContext` (the cells the task scores, standardised truth).
        Default: the task's loss of ``forward`` (each term's ``loss_fn`` on ``which`` output, plus
        the ``aux`` estimates). A model whose objective is not a loss of its point output (a
        diffusion model's noise-prediction loss on the same cells) overrides it and sets
        ``has_training_loss = True``; validation and evaluation still call ``forward``."""
        total = batch.x.new_zeros(())
        pred = self(batch)
        for p in [pred, *pred.aux]:
            for which, y, mask, weight in terms:
                if weight:
                    total = total + weight * loss_fn(getattr(p, which), y, mask)
        return total

    has_training_loss: bool = False

    def validation_loss(self, batch: GraphBatch, terms: list[tuple], loss_fn, draw: int) -> torch.Tensor:
        """The training objective on a validation batch (``train.val_score: loss``), called in eval
        mode without gradients. Every random draw must be a function of ``draw`` (the batch's
        index in the fixed validation set) and the weights, so that two validations of the same
        weights agree (CSDI's ``calc_loss_valid``). Default: :meth:`training_loss` (the trainer
        seeds the global RNG the same way at every validation)."""
        return self.training_loss(batch, terms, loss_fn)

    def set_training_budget(self, total_steps: int) -> None:
        """Told by the engine before training: the most optimiser steps this run may take
        (epochs x batches per epoch). Schedules that the papers define in steps (DCRNN's
        curriculum) scale from it. Default: ignored."""

    def __init__(self, sizes: DataSizes):
        super().__init__()
        self.sizes = sizes

    def reset_parameters(self) -> None:
        """Reset each child that knows how (it owns its sub-modules' initialisation, e.g. zero
        last layers); descend only into children that do not."""

        def reset(module: nn.Module) -> None:
            for child in module.children():
                if hasattr(child, "reset_parameters"):
                    child.reset_parameters()
                else:
                    reset(child)

        reset(self)

    def forward(self, batch: GraphBatch) -> Prediction:  # pragma: no cover - abstract
        raise NotImplementedError
