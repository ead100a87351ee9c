"""Predict a period and score hidden stations in original units (visible ones separately)."""

from __future__ import annotations

import numpy as np
import torch

from stgraph.engine.experiment import Experiment
from stgraph.engine.metrics import daily_means, summarize_metrics
from stgraph.models.base import StationModel


@torch.no_grad()
def predict(model: StationModel, exp: Experiment, period: str = "test", role: str = "test") -> dict[str, np.ndarray]:
    """Predictions over every window of ``period``: ``role`` stations hidden, train-role visible.

    Returns arrays in original units: ``pred``/``true``/``mask`` (B, H, N_role, C_out) for the
    scored stations (hidden ones; for ``impute`` every station, masked to the evaluation cells),
    ``pred_visible``/``true_visible``/``mask_visible`` for the train-role ones (their observed
    inputs), ``start`` (B,) window starts and the station ids of both groups.
    """
    model.eval()
    inputs, truth = exp.eval_windows(period, exp.cfg.train.max_eval_windows)
    src, tgt = exp.roles(role)
    mean = torch.as_tensor(exp.train.scaler.mean[exp.targets], dtype=torch.float32)
    std = torch.as_tensor(exp.train.scaler.std[exp.targets], dtype=torch.float32)
    out = {k: [] for k in ("pred", "true", "mask", "pred_visible", "true_visible", "mask_visible", "start")}
    bs = exp.cfg.train.batch_size * 4
    for idx in torch.arange(len(inputs)).split(bs):
        w, wt = inputs[idx], truth[idx]
        pred = model(exp.batch(w, src, tgt))
        y, m, _ = exp.out_window(wt)
        p, ys, ms = exp.scored(pred, y, m, src, tgt)
        out["pred"].append(p * std + mean)
        out["true"].append(ys)
        out["mask"].append(ms)
        yv, mv, _ = exp.out_window(w)  # visible stations: scored against their own inputs
        out["pred_visible"].append(pred.src * std + mean)
        out["true_visible"].append(yv[:, :, src] * std + mean)
        out["mask_visible"].append(mv[:, :, src])
        out["start"].append(w.start)
    arrays = {k: torch.cat(v).numpy() for k, v in out.items()}
    arrays["stations"] = np.array([exp.data.station_ids[i] for i in (src if exp.task_obj.scores_visible else tgt)])
    arrays["stations_visible"] = np.array([exp.data.station_ids[i] for i in src])
    return arrays


def score(exp: Experiment, arrays: dict[str, np.ndarray]) -> dict:
    """Metrics of hidden and visible stations (hourly steps, or daily means for long horizons).

    Aligned tasks (``krige``, ``impute``): overall and per-station metrics count each (time,
    station) cell once — overlapping windows' estimates of a cell are averaged first, as GRIN and
    SPIN do. Their per-step metrics (``at_steps``: position in the window, e.g. the window's first
    and last hour) are computed on the windows as they come, each window a row, since a merged
    cell has no single position. ``impute`` reports no per-step metrics. Forecasts: one row per
    window, per-step = lead time."""
    dc = exp.cfg.data
    task = exp.task_obj
    result = {}
    for group, suffix in (("hidden", ""), ("visible", "_visible")):
        pred, true = torch.as_tensor(arrays["pred" + suffix]), torch.as_tensor(arrays["true" + suffix])
        mask = torch.as_tensor(arrays["mask" + suffix])
        if dc.daily:
            pred, _ = daily_means(pred, mask)
            true, mask = daily_means(true, mask)
            steps = dc.eval_days or None
        else:
            steps = [s for s in dc.eval_steps if s <= pred.shape[1]] or None
        if task.scores_visible:
            steps = None
        per_window = summarize_metrics(pred, true, mask, steps=steps) if steps else None
        merged = task.merge_windows(pred, true, mask, torch.as_tensor(arrays["start"]))
        summary = summarize_metrics(*merged)
        if per_window is not None:
            summary["at_steps"] = per_window["at_steps"]
            summary["per_step"] = per_window["per_step"]
        summary["merged"] = "cells once (overlapping windows averaged)" if task.aligned else "one row per window"
        ids = arrays["stations" + suffix].tolist()
        summary["per_station"] = dict(zip(ids, summary["per_station"], strict=True))
        result[group] = summary
    result["unit"] = "daily mean" if dc.daily else "hourly"
    return result
