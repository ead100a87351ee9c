"""The ``fit`` hook: models that fit rather than descend (closed form, search, trees).

:func:`fit_context` builds what :meth:`StationModel.fit` may use, from the same leak-free pieces
gradient training uses: batches of training stations in the training period (shaped by the task,
hidden stations and all) and the validation score on val-role stations / the val period.
"""

from __future__ import annotations

import torch

from stgraph.engine.experiment import Experiment
from stgraph.engine.trainer import validate
from stgraph.models.base import FitContext, StationModel


def fit_context(model: StationModel, exp: Experiment) -> FitContext:
    tc = exp.cfg.train

    def train_batches():
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + 7)
        windows, nodes = exp.train.windows, exp.train.stations
        order = torch.randperm(len(windows), generator=gen)[: tc.max_train_windows or len(windows)]
        for idx in order.split(tc.batch_size):
            view = exp.task_obj.training_view(windows[idx], nodes, exp.targets, tc, gen)
            batch = exp.batch(view.w, view.src, view.tgt, view.nodes)
            yield batch, tuple((t.which, t.y, t.mask, t.weight) for t in view.terms)

    return FitContext(train_batches=train_batches, validate=lambda: validate(model, exp), seed=tc.seed)


def fit_model(model: StationModel, exp: Experiment) -> dict:
    """Call the model's ``fit`` hook if it has one; returns its record (empty otherwise)."""
    if not model.fits:
        return {}
    return model.fit(fit_context(model, exp)) or {}
