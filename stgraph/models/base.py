"""What every stgraph model sees and returns, so one engine trains and scores them all.

A model gets the visible (source) stations' past and the positions of target stations, which
have no history, and predicts both. The engine decides who is visible: during training it hides
random training stations and scores the model on them; at evaluation the targets are the
hidden val/test stations. Values are standardised (the engine's scaler); predictions too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stgraph.data.batch import TASKS, DataSizes, GraphBatch, Prediction


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
    search_space: dict = {}  # hyper-parameter -> stgraph.models.search range, for ``stgraph tune``

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
