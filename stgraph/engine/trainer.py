"""The training loop, readable top to bottom.

``_step`` computes one training batch's loss: the batch hides a random subset of the training
stations and scores the model on them from the others (node masking), plus, weighted, on the
visible stations themselves. For ``impute`` it hides random observed cells instead (every station
stays visible) and scores the model's completed series there. Forecasting models that want teacher
forcing get the visible stations' truth in ``batch.y_src`` — never the hidden ones'. ``validate``
scores the val-role stations from the train-role ones (mean absolute error, standardised units).
AdamW, gradient clipping, early stopping on validation MAE, ``best.pt`` on improvement, ``last.pt``
after every epoch. Every epoch draws its shuffling and hiding from a generator seeded by (seed,
epoch), and the global RNG state is checkpointed, so a run killed at any point and resumed from
``last.pt`` ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from stgraph.engine.experiment import Experiment
from stgraph.engine.runs import RunDir, atomic_torch_save
from stgraph.models.base import StationModel


def masked_mse(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(pred.dtype)
    return ((pred - true) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def _hide(n: int, fraction: float, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split n training stations into visible and hidden (at least one of each)."""
    n_hide = min(max(1, round(fraction * n)), n - 1)
    perm = torch.randperm(n, generator=gen).numpy()
    return np.sort(perm[n_hide:]), np.sort(perm[:n_hide])


def hidden_cells(shape: tuple[int, ...], fraction: float, block: int, gen: torch.Generator) -> torch.Tensor:
    """(B, W, N, C) bool cells to hide for ``impute`` training: about ``fraction`` of them, as
    gaps of ``block`` consecutive steps (each step starts a gap with probability fraction/block)."""
    if block <= 1:
        return torch.rand(shape, generator=gen) < fraction
    starts = (torch.rand(shape, generator=gen) < fraction / block).to(torch.int32)
    ends = torch.cumsum(starts, dim=1)  # started gaps up to each step
    before = torch.nn.functional.pad(ends, (0, 0, 0, 0, block, 0))[:, :-block]  # started up to step t - block
    return (ends - before) > 0  # a gap started within the last `block` steps


def _step(model: StationModel, exp: Experiment, w, src, tgt, nodes, src_weight: float, gen: torch.Generator):
    """Masked MSE of one batch (standardised units)."""
    y, y_mask, _ = exp.out_window(w)
    if exp.task == "impute":  # hide random observed cells; score the completed series there
        keep = ~hidden_cells(w.x_mask.shape, exp.cfg.train.hide_fraction, exp.cfg.train.hide_block, gen)
        pred = model(exp.batch(replace(w, x=w.x * keep, x_mask=w.x_mask & keep), src, tgt, nodes))
        kept = keep[..., exp.targets]
        loss = masked_mse(pred.src, y, y_mask & ~kept)
        return loss + src_weight * masked_mse(pred.src, y, y_mask & kept) if src_weight else loss
    batch = exp.batch(w, src, tgt, nodes)
    if not exp.aligned:
        batch.y_src, batch.y_src_mask = y[:, :, src], y_mask[:, :, src]
    pred = model(batch)
    loss = masked_mse(pred.tgt, y[:, :, tgt], y_mask[:, :, tgt])
    if src_weight:
        loss = loss + src_weight * masked_mse(pred.src, y[:, :, src], y_mask[:, :, src])
    return loss


@torch.no_grad()
def validate(model: StationModel, exp: Experiment) -> float:
    """Mean absolute error (standardised units) at val-role stations from train-role stations, or
    for ``impute`` at the evaluation cells of the val period."""
    model.eval()
    inputs, truth = exp.eval_windows("val", exp.cfg.train.max_eval_windows, scaled_truth=True)
    src, tgt = exp.roles("val")
    if (len(tgt) == 0 and exp.task != "impute") or len(inputs) == 0:
        raise ValueError("validation needs val-role stations and a val period with at least one window")
    err, count = 0.0, 0.0
    for idx in torch.arange(len(inputs)).split(exp.cfg.train.batch_size * 4):
        pred = model(exp.batch(inputs[idx], src, tgt))
        y, m, _ = exp.out_window(truth[idx])
        p, y, m = exp.scored(pred, y, m, src, tgt)
        m = m.float()
        err += float(((p - y).abs() * m).sum())
        count += float(m.sum())
    if count == 0:
        raise ValueError("the val period holds no scored cell")
    return err / count


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
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    state = {"epoch": 0, "best_val": float("inf"), "best_epoch": -1, "bad_epochs": 0}
    if run.last_path.exists():  # resume after a crash
        ckpt = torch.load(run.last_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        kept = [r for r in run.read_log() if r["epoch"] <= state["epoch"]]  # drop a crashed epoch's line
        run.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    windows, nodes = exp.train.windows, exp.train.stations
    limit = tc.max_train_windows
    while state["epoch"] < tc.epochs and state["bad_epochs"] < tc.patience:
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch)
        model.train()
        order = torch.randperm(len(windows), generator=gen)[:limit]
        t0, total, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(order.split(tc.batch_size), desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False, disable=not progress)
        for idx in bar:
            w = windows[idx]
            if exp.task == "impute":
                src, tgt = np.arange(len(nodes)), np.zeros(0, dtype=np.int64)
            else:
                src, tgt = _hide(len(nodes), tc.hide_fraction, gen)
            loss = _step(model, exp, w, src, tgt, nodes, tc.src_loss_weight, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}", win_s=f"{seen / (time.perf_counter() - t0):.0f}")
        train_time = time.perf_counter() - t0
        val_mae = validate(model, exp)
        improved = val_mae < state["best_val"]
        state.update(epoch=epoch + 1, bad_epochs=0 if improved else state["bad_epochs"] + 1)
        if improved:
            state.update(best_val=val_mae, best_epoch=epoch + 1)
            atomic_torch_save({"model": model.state_dict(), "epoch": epoch + 1, "val_mae": val_mae}, run.best_path)
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(),
                "state": dict(state),
            },
            run.last_path,
        )
        run.append_log(
            {
                "epoch": epoch + 1,
                "train_loss": total / max(seen, 1),
                "val_mae_scaled": val_mae,
                "epoch_seconds": train_time,
                "windows_per_second": seen / max(train_time, 1e-9),
                "improved": improved,
            }
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    log = run.read_log()
    return {
        **state,
        "epochs_run": len(log),
        "seconds_per_epoch": float(np.mean([r["epoch_seconds"] for r in log])) if log else 0.0,
        "windows_per_second": float(np.mean([r["windows_per_second"] for r in log])) if log else 0.0,
    }
