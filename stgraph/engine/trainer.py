"""The training loop, readable top to bottom.

Each batch is shaped by the experiment's task (:mod:`stgraph.engine.tasks`): it hides random
training stations (or, for ``impute``, observed cells) and returns the loss terms that score the
model there, plus, weighted, on what it kept. Forecasting models that want teacher forcing get
the visible stations' truth in ``batch.y_src`` — never the hidden ones'. A model's ``aux``
estimates (e.g. GRIN's per-direction imputations) are scored by the same terms and added.
``validate`` scores the val-role stations from the train-role ones (MAE, standardised units).

Masked L1 by default (MSE selectable); AdamW, optional linear warm-up, a plateau or cosine
learning-rate schedule, gradient clipping, early stopping on validation MAE with ``patience``,
``best.pt`` on improvement, ``last.pt`` after every epoch. The model before any step is
validated too (``initial.pt``): if no epoch beats it — an anchored model whose training only made
it worse — it becomes ``best.pt`` (``best_epoch`` 0), so selection on validation never returns a
model worse than the one it started from; it does not change the patience or schedule decisions.
Every epoch draws its shuffling and hiding from a generator seeded by (seed, epoch), and the
optimiser, schedule and global RNG state are checkpointed, so a run killed at any point and
resumed from ``last.pt`` ends with the same weights as one never interrupted. The learning curve
(train loss, validation MAE, learning rate per epoch) is written as ``learning_curve.csv`` and
``.png``; the summary says whether early stopping fired (``early_stopped``) or the run spent its budget.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from stgraph.engine import distributed
from stgraph.engine.evaluate import evaluation_batches
from stgraph.engine.experiment import Experiment
from stgraph.engine.learning_curve import write_learning_curve
from stgraph.engine.run_folder import RunDir, atomic_torch_save, load_checkpoint
from stgraph.engine.station_batches import StationBatcher
from stgraph.engine.tasks import LossTerm, TrainingView
from stgraph.engine.tensorboard_log import TensorBoardLog
from stgraph.models.base import Prediction, StationModel
from stgraph.ops.losses import LOSSES


def training_inputs(exp: Experiment, view: TrainingView) -> tuple:
    """One training batch shaped by the task and its loss terms ``(which, y, mask, weight)``."""
    batch = exp.batch(view.w, view.src, view.tgt, view.nodes)
    if view.teacher is not None:
        batch.y_src, batch.y_src_mask = view.teacher
    return batch, [(t.which, t.y, t.mask, t.weight) for t in view.terms]


def training_step(model: StationModel, exp: Experiment, view: TrainingView, loss_fn) -> torch.Tensor:
    """The loss of one training batch shaped by the task: the model's :meth:`~StationModel.training_loss`
    (by default the task's loss of its forward pass)."""
    return model.training_loss(*training_inputs(exp, view), loss_fn)


@torch.no_grad()
def validate(model: StationModel, exp: Experiment) -> float:
    """Mean absolute error (standardised units) at val-role stations from train-role stations, or
    for ``impute`` at the evaluation cells of the val period (windows scored as they come). A task
    with extra scored groups (``reconstruct``: the cells its pattern removed) scores the mean of
    the groups' MAEs (hidden stations and each extra group weigh the same).

    Deterministic: the same windows, hidden stations and cells every time, and the random draws of
    a sampling model (a diffusion model's noise) come from a generator seeded the same way at every
    call (CSDI's fixed validation); the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.cfg.train.seed * 7_919 + 17)
        return _validate(model, exp)


def _validate(model: StationModel, exp: Experiment) -> float:
    model.eval()
    tc = exp.cfg.train
    budget = tc.max_eval_windows if tc.max_val_windows is None else tc.max_val_windows
    src, tgt = exp.roles("val")
    task = exp.task
    if (len(tgt) == 0 and not task.scores_visible) or not exp.periods.period("val").any():
        raise ValueError("validation needs val-role stations and a val period with at least one window")
    groups = task.groups
    if tc.val_score == "loss":
        inputs, truth = exp.eval_windows("val", budget, scaled_truth=True)
        if len(inputs) == 0:
            raise ValueError("validation needs val-role stations and a val period with at least one window")
        return _validation_loss(model, exp, inputs, truth, src, tgt)
    err, count, batches = dict.fromkeys(groups, 0.0), dict.fromkeys(groups, 0.0), 0
    for eb in evaluation_batches(model, exp, "val", "val", budget, scaled_truth=True, samples=False):
        batches += 1
        for g, (p, yg, mg) in eb.groups.items():
            mg = mg.float()
            err[g] += float(((p - yg).abs() * mg).sum())
            count[g] += float(mg.sum())
    if not batches:
        raise ValueError("validation needs val-role stations and a val period with at least one window")
    empty = [g for g in groups if count[g] == 0]
    if empty:
        raise ValueError(f"the val period holds no scored cell ({', '.join(empty)})")
    return sum(err[g] / count[g] for g in groups) / len(groups)


def _validation_loss(model: StationModel, exp: Experiment, inputs, truth, src, tgt) -> float:
    """Mean over the validation windows of the model's training objective with one loss term per
    scored group (its cells, weight 1), batch i's random draws fixed by i
    (:meth:`~stgraph.models.base.StationModel.validation_loss`)."""
    task, loss_fn = exp.task, LOSSES[exp.cfg.train.loss]
    total, seen = 0.0, 0
    for i, idx in enumerate(torch.arange(len(inputs)).split(exp.cfg.train.batch_size)):
        w = inputs[idx]
        y, m, _ = exp.out_window(truth[idx])
        marker = Prediction(src=y.new_zeros(0), tgt=y.new_zeros(0))  # which output a group scores
        terms = [
            LossTerm("src" if p is marker.src else "tgt", yg, mg, 1.0)
            for p, yg, mg in task.scored_groups(marker, y, m, src, tgt, w.start).values()
        ]
        loss = model.validation_loss(exp.batch(w, src, tgt), [(t.which, t.y, t.mask, t.weight) for t in terms],
                                     loss_fn, i)  # fmt: skip
        total, seen = total + float(loss) * len(idx), seen + len(idx)
    return total / seen


def _lr_factor(tc, step: int, epoch: int, plateau_factor: float) -> float:
    """Multiplier of ``lr`` at an optimiser step: warm-up x (plateau halvings | cosine | step decay
    | 1). Progress is ``step / steps`` with a step budget, else ``epoch / epochs``."""
    warm = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
    progress = min(step / tc.steps if tc.steps else epoch / max(tc.epochs, 1), 1.0)
    if tc.lr_schedule == "cosine":
        return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
    if tc.lr_schedule == "step":  # CSDI: x0.1 at 75 % and again at 90 % of the budget
        return warm * 0.1 ** ((progress >= 0.75) + (progress >= 0.9))
    if tc.lr_schedule == "plateau":
        return warm * plateau_factor
    return warm


@dataclass(frozen=True)
class Budget:
    """How a run spends its optimiser steps: ``rounds`` validations, ``steps_per_round`` steps
    before each (the last round may be shorter), ``patience`` rounds without improvement before
    early stopping (None: never), ``total_steps`` in all."""

    rounds: int
    steps_per_round: int
    total_steps: int
    patience: int | None
    windows_per_round: int
    by_steps: bool


def training_budget(tc, n_windows: int) -> Budget:
    """The :class:`Budget` of a TrainConfig over ``n_windows`` training windows."""
    if tc.steps:
        rounds = math.ceil(tc.steps / tc.val_every)
        patience_steps = tc.patience_steps if tc.patience_steps is not None else tc.steps // 4
        patience = max(1, math.ceil(patience_steps / tc.val_every))
        return Budget(rounds, tc.val_every, tc.steps, patience if tc.early_stopping else None,
                      tc.val_every * tc.batch_size, True)  # fmt: skip
    per_epoch = min(n_windows, tc.max_train_windows or n_windows)
    steps = math.ceil(per_epoch / tc.batch_size)
    return Budget(tc.epochs, steps, tc.epochs * steps, tc.patience if tc.early_stopping else None, per_epoch, False)


def stream_indices(n: int, start: int, stop: int, seed: int) -> torch.Tensor:
    """Positions ``start .. stop - 1`` of a stream of window indices that concatenates seeded
    permutations of ``range(n)`` (pass p: permutation seeded by (seed, p)): every window once per
    pass, in a new order each pass, the same stream after a resume."""
    if stop <= start:
        return torch.zeros(0, dtype=torch.long)
    first, last = start // n, (stop - 1) // n
    parts = [torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + 7_919 + p))
             for p in range(first, last + 1)]  # fmt: skip
    return torch.cat(parts)[start - first * n : stop - first * n]


def round_indices(tc, budget: Budget, n: int, step: int, gen: torch.Generator) -> torch.Tensor:
    """Window indices of one round (epoch): a seeded permutation capped at ``max_train_windows`` per
    epoch, or, with a step budget, the round's positions of the shuffled stream."""
    if not budget.by_steps:
        return torch.randperm(n, generator=gen)[: budget.windows_per_round]
    steps = min(budget.steps_per_round, budget.total_steps - step)
    return stream_indices(n, step * tc.batch_size, (step + steps) * tc.batch_size, tc.seed)


def train_model(
    model: StationModel,
    exp: Experiment,
    run: RunDir,
    *,
    on_epoch_end: Callable[[int], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume training) ``model``; returns the training history summary."""
    tc = exp.cfg.train
    loss_fn = LOSSES[tc.loss]
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    state = {
        "epoch": 0, "step": 0, "best_val": float("inf"), "best_epoch": -1, "bad_epochs": 0,
        "lr_factor": 1.0, "lr_bad_epochs": 0, "seconds": 0.0, "best_step": 0,
    }  # fmt: skip
    if run.last_path.exists():  # resume after a crash
        ckpt = load_checkpoint(run.last_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        state = {**state, **ckpt["state"]}
        kept = [r for r in run.read_log() if r["epoch"] <= state["epoch"]]  # drop a crashed epoch's line
        run.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    objective = distributed.Objective(model)  # under torchrun: DistributedDataParallel (after the resume)
    windows, nodes = exp.train.windows, exp.train.stations
    budget = training_budget(tc, len(windows))
    n_windows, steps_per_epoch = budget.windows_per_round, budget.steps_per_round
    model.set_training_budget(budget.total_steps)
    task = exp.task
    batcher = StationBatcher(exp)  # train.subgraph_size: windows cut for the batch's stations only
    initial_path = run.path / "initial.pt"
    main = distributed.is_main()  # only rank 0 writes (one process: always)
    board = TensorBoardLog(run.path, resume_step=state["step"]) if tc.tensorboard and main else None
    if "initial_val" not in state:  # the model before any step is a candidate for best.pt too
        state["initial_val"] = validate(model, exp) if state["epoch"] == 0 else float("inf")
        if main:
            atomic_torch_save({"model": model.state_dict(), "epoch": 0, "val_mae": state["initial_val"]}, initial_path)
    while state["epoch"] < budget.rounds and (budget.patience is None or state["bad_epochs"] < budget.patience):
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
        model.train()
        order = round_indices(tc, budget, len(windows), state["step"], gen)
        t0, total, seen = time.perf_counter(), 0.0, 0
        what = "round" if budget.by_steps else "epoch"
        bar = tqdm(order.split(tc.batch_size), desc=f"{what} {epoch + 1}/{budget.rounds}", leave=False,
                   disable=not progress)  # fmt: skip
        for idx in bar:
            for group in opt.param_groups:
                group["lr"] = tc.lr * _lr_factor(tc, state["step"], epoch, state["lr_factor"])
            part = distributed.shard(idx, tc.batch_size)  # several processes: this rank's windows
            view = task.training_view(*batcher.cut(windows, part, nodes, gen), exp.targets, tc, gen)
            opt.zero_grad(set_to_none=True)
            batch, terms = training_inputs(exp, view) if len(part) else (None, [])
            to_backward, loss = objective(batch, terms, loss_fn, len(part), len(idx))
            if to_backward.requires_grad:
                to_backward.backward()  # several processes: DDP's bucketed all-reduce, the global batch's gradient
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            state["step"] += 1
            total, seen = total + loss.item() * len(part), seen + len(part)
            bar.set_postfix(loss=f"{total / max(seen, 1):.4f}", win_s=f"{seen / (time.perf_counter() - t0):.0f}")
        train_time = time.perf_counter() - t0
        total, seen = distributed.sum_across_ranks(total, seen)  # the global batch's loss and windows
        val_mae = validate(model, exp)
        improved = val_mae < state["best_val"] * (1 - tc.min_delta)
        lr_now = opt.param_groups[0]["lr"]
        state.update(epoch=epoch + 1, bad_epochs=0 if improved else state["bad_epochs"] + 1)
        state["lr_bad_epochs"] = 0 if improved else state["lr_bad_epochs"] + 1
        if tc.lr_schedule == "plateau" and state["lr_bad_epochs"] >= tc.lr_patience:
            state.update(lr_factor=state["lr_factor"] * 0.5, lr_bad_epochs=0)
        state["seconds"] += time.perf_counter() - t0
        if val_mae < state["best_val"]:
            state.update(best_val=val_mae, best_epoch=epoch + 1, best_step=state["step"])
            if main:
                atomic_torch_save({"model": model.state_dict(), "epoch": epoch + 1, "val_mae": val_mae}, run.best_path)
        if main:
            atomic_torch_save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                 "state": dict(state)},
                run.last_path,
            )  # fmt: skip
        distributed.barrier()  # every rank sees the checkpoints before going on
        if not main:
            continue
        record = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": total / max(seen, 1),
            "val_mae_scaled": val_mae,
            "lr": lr_now,
            "epoch_seconds": train_time,
            "windows_per_second": seen / max(train_time, 1e-9),
            "improved": improved,
        }
        run.append_log(record)
        if board is not None:
            board.add(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    if state["initial_val"] < state["best_val"]:  # training never beat it
        if main:
            shutil.copyfile(initial_path, run.best_path)
        state.update(best_val=state["initial_val"], best_epoch=0, best_step=0)
    distributed.barrier()
    log = run.read_log()
    if board is not None:
        board.close()
    if main:
        if not tc.score_initial:  # else the run scores it on test, then removes it
            initial_path.unlink(missing_ok=True)
        write_learning_curve(log, run.path, title=f"{exp.cfg.model.name} / {exp.cfg.data.task}")
    early = budget.patience is not None and state["bad_epochs"] >= budget.patience
    gain = 1 - state["best_val"] / state["initial_val"] if 0 < state["initial_val"] < float("inf") else None
    return {
        **state,
        "epochs_run": len(log),
        "steps": state["step"],
        "best_step": state.get("best_step", 0),
        "budget": "steps" if budget.by_steps else "epochs",
        "budget_steps": budget.total_steps,
        "steps_per_epoch": steps_per_epoch,
        "windows_per_epoch": n_windows,
        "train_windows": len(windows),
        "early_stopped": bool(early),  # the validation score stopped improving for `patience` epochs
        "stopped": "early stopping" if early else ("step budget" if budget.by_steps else "epoch cap"),
        "val_gain_over_initial": gain,
        "val_score": tc.val_score,  # what best_val / initial_val measure: "mae" or "loss"
        "steps_per_second": state["step"] / state["seconds"] if state["seconds"] else 0.0,
        "wall_seconds": state["seconds"],
        "seconds_per_epoch": float(np.mean([r["epoch_seconds"] for r in log])) if log else 0.0,
        "windows_per_second": float(np.mean([r["windows_per_second"] for r in log])) if log else 0.0,
    }
