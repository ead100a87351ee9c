"""The ``fit`` hook: models that fit rather than descend (closed form, search, trees).

:func:`fit_context` builds what :meth:`StationModel.fit` may use, from the same leak-free pieces
gradient training uses: batches of training stations in the training period (shaped by the task,
hidden stations and all) and the validation score on val-role stations / the val period.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stgraph.engine.experiment import Experiment
from stgraph.engine.station_batches import StationBatcher
from stgraph.engine.trainer import validate
from stgraph.models.base import FitContext, StationModel


def fit_context(
    model: StationModel, exp: Experiment, out_dir: Path | None = None, restore_dir: Path | None = None
) -> FitContext:
    tc = exp.cfg.train

    def train_batches():
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + 7)
        windows, nodes = exp.train.windows, exp.train.stations
        batcher = StationBatcher(exp)  # train.subgraph_size: the batch's stations only
        order = torch.randperm(len(windows), generator=gen)[: tc.max_train_windows or len(windows)]
        for idx in order.split(tc.batch_size):
            view = exp.task.training_view(*batcher.cut(windows, idx, nodes, gen), exp.targets, tc, gen)
            batch = exp.batch(view.w, view.src, view.tgt, view.nodes)
            yield batch, tuple((t.which, t.y, t.mask, t.weight) for t in view.terms)

    def val_batches():
        budget = tc.max_eval_windows if tc.max_val_windows is None else tc.max_val_windows
        inputs, truth = exp.eval_windows("val", budget, scaled_truth=True)
        src, tgt = exp.roles("val")
        which = "src" if exp.task.scores_visible else "tgt"
        for idx in torch.arange(len(inputs)).split(tc.batch_size * 4):
            y, m, _ = exp.out_window(truth[idx])
            cols = torch.as_tensor(src if which == "src" else tgt)
            yield exp.batch(inputs[idx], src, tgt), ((which, y[:, :, cols], m[:, :, cols], 1.0),)

    return FitContext(
        train_batches=train_batches,
        validate=lambda: validate(model, exp),
        val_batches=val_batches,
        out_dir=out_dir,
        seed=tc.seed,
        steps=tc.steps,
        batch_size=tc.batch_size,
        lr=tc.lr,
        restore_dir=restore_dir,
    )


def fit_model(
    model: StationModel, exp: Experiment, out_dir: Path | None = None, restore_dir: Path | None = None
) -> dict:
    """Call the model's ``fit`` hook if it has one; returns its record (empty otherwise).
    ``restore_dir``: the finished run being restored (a model may load its saved fit from it)."""
    if not model.fits:
        return {}
    return model.fit(fit_context(model, exp, out_dir, restore_dir)) or {}
