"""Predict a period and score hidden stations in original units (visible ones separately).

Probabilistic models (``Prediction.samples_src`` / ``samples_tgt`` set: S samples, the point
estimate their median) are also scored by CRPS and the coverage of the central 90 % interval of
their samples at the scored cells; the run keeps per-cell CRPS and the 5/50/95 % quantiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from stgraph.data.windows import Windows, first_cover_cut
from stgraph.engine.chunked import chunked_forward
from stgraph.engine.experiment import Experiment
from stgraph.engine.metrics import daily_means, summarize_metrics
from stgraph.engine.probabilistic import crps_from_samples
from stgraph.engine.tasks.base import Scored
from stgraph.models.base import Prediction, StationModel
from stgraph.ops.quantiles import QUANTILE_LEVELS, sample_quantiles


@dataclass
class EvalBatch:
    """One batch of an evaluation pass, standardised inputs and the model's answer.

    Attributes:
        w: the input windows (standardised). pred: the model's :class:`Prediction`.
        covered: (N_src,) bool visible stations the chunked forward predicted.
        y, m: (B, H, N, C_out) the output truth (original units, or standardised) and its mask.
        groups: every scored group (:meth:`~stgraph.engine.tasks.Task.scored_groups`), standardised
            predictions against that truth.
        samples: per group, (S, B, H, N_g, C_out) standardised samples, or None (a point model, or
            not asked for).
    """

    w: Windows
    pred: Prediction
    covered: torch.Tensor
    y: torch.Tensor
    m: torch.Tensor
    groups: dict[str, Scored]
    samples: dict[str, torch.Tensor] | None


def evaluation_batches(
    model: StationModel,
    exp: Experiment,
    period: str,
    role: str,
    max_windows: int | None,
    *,
    scaled_truth: bool = False,
    samples: bool = True,
) -> Iterator[EvalBatch]:
    """The one evaluation pass, shared by validation (:func:`stgraph.engine.trainer.validate`) and
    prediction (:func:`predict`): every window of ``period`` (at most ``max_windows``, evenly
    spaced), ``role`` stations hidden and train-role ones visible, forwarded in target chunks
    (:func:`~stgraph.engine.chunked.chunked_forward`), scored group by group. The model is put in
    eval mode; call under ``torch.no_grad()``."""
    model.eval()
    inputs, truth = exp.eval_windows(period, max_windows, scaled_truth=scaled_truth)
    src, tgt = exp.roles(role)
    for idx in torch.arange(len(inputs)).split(exp.cfg.train.batch_size * 4):
        w, wt = inputs[idx], truth[idx]
        pred, covered = chunked_forward(model, exp, w, src, tgt)  # targets in chunks: train.eval_target_chunk
        y, m, _ = exp.out_window(wt)
        groups = exp.task.scored_groups(pred, y, m, src, tgt, w.start)
        sampled = _scored_samples(exp, pred, y, m, src, tgt, w.start) if samples else None
        yield EvalBatch(w, pred, covered, y, m, groups, sampled)


@torch.no_grad()
def predict(model: StationModel, exp: Experiment, period: str = "test", role: str = "test") -> dict[str, np.ndarray]:
    """Predictions over every window of ``period``: ``role`` stations hidden, train-role visible.

    Returns arrays in original units: ``pred``/``true``/``mask`` (B, H, N_role, C_out) for the
    scored stations (hidden ones; for ``impute`` every station, masked to the evaluation cells),
    ``pred_visible``/``true_visible``/``mask_visible`` for the train-role ones (their observed
    inputs), ``start`` (B,) window starts and the station ids of both groups. A probabilistic
    model's samples of the scored cells add ``crps`` (B, H, N_role, C_out), the per-cell CRPS
    (0 where not scored; CRPS scales with the unit, so it is the standardised CRPS times the
    scaler's std), ``quantiles`` (3, B, H, N_role, C_out) and ``quantile_levels`` (0.05, 0.5,
    0.95); with ``data.daily`` both are of the samples' daily means (H = days). A task's extra
    groups (``Task.extra_groups``, e.g. ``reconstruct``'s ``removed``: the visible stations' cells
    its pattern removed) add ``pred_<group>``/``true_<group>``/``mask_<group>`` and
    ``stations_<group>`` (and, for a probabilistic model, ``crps_<group>``/``quantiles_<group>``).
    """
    src, tgt = exp.roles(role)
    scored_nodes = src if exp.task.scores_visible else tgt
    mean, std = unscaling(exp, scored_nodes)  # (C_out,) per channel, (N_role, C_out) per station
    mean_v, std_v = unscaling(exp, src)
    extra = exp.task.extra_groups
    group_scale = {g: unscaling(exp, exp.task.group_nodes(g, src, tgt)) for g in extra}
    keys = ("pred", "true", "mask", "pred_visible", "true_visible", "mask_visible", "start")
    out = {k: [] for k in keys + tuple(f"{k}_{g}" for g in extra for k in ("pred", "true", "mask"))}
    prob = {"crps": [], "quantiles": []}
    num_samples = set()  # S of each batch's samples
    prob.update({f"{k}_{g}": [] for g in extra for k in ("crps", "quantiles")})
    for eb in evaluation_batches(model, exp, period, role, exp.cfg.train.max_eval_windows):
        w, pred, covered = eb.w, eb.pred, eb.covered
        p, ys, ms = eb.groups["hidden"]
        samples = None if eb.samples is None else eb.samples["hidden"]
        if samples is not None:
            num_samples.add(int(samples.shape[0]))
            _add_probabilistic(prob, "", samples * std + mean, ys, ms, exp.cfg.data.daily)
        out["pred"].append(p * std + mean)
        out["true"].append(ys)
        out["mask"].append(ms)
        yv, mv, _ = exp.out_window(w)  # visible stations: scored against their own inputs
        out["pred_visible"].append(pred.src * std_v + mean_v)
        out["true_visible"].append(yv[:, :, src] * std_v + mean_v)
        out["mask_visible"].append(mv[:, :, src] & covered.view(1, 1, -1, 1))
        out["start"].append(w.start)
        for g in extra:
            pg, yg, mg = eb.groups[g]
            mean_g, std_g = group_scale[g]
            out[f"pred_{g}"].append(pg * std_g + mean_g)
            out[f"true_{g}"].append(yg)
            out[f"mask_{g}"].append(mg)
            if eb.samples is not None:
                _add_probabilistic(prob, f"_{g}", eb.samples[g] * std_g + mean_g, yg, mg, exp.cfg.data.daily)
    arrays = {k: torch.cat(v).numpy() for k, v in out.items()}
    span = exp.cfg.data.window + exp._horizon
    if exp.task.aligned and exp.cfg.data.eval_stride >= span:  # each cell once: the first window's
        cut = first_cover_cut(arrays["start"], span)  # a block's last window overlaps its predecessor
        head = np.arange(span)[None, :] < cut[:, None]  # (B, H)
        for key in [k for k in arrays if k.startswith("mask")]:
            arrays[key] = arrays[key] & ~head[:, :, None, None]
    if prob["crps"]:
        if len(prob["crps"]) != len(out["pred"]):
            raise ValueError(f"model '{exp.cfg.model.name}' returned samples for some batches only")
        for key, parts in prob.items():
            arrays[key] = torch.cat(parts, dim=1 if key.startswith("quantiles") else 0).numpy()
        arrays["quantile_levels"] = np.array(QUANTILE_LEVELS)
        if len(num_samples) != 1:
            raise ValueError(
                f"model '{exp.cfg.model.name}' returned {sorted(num_samples)} samples in different batches"
            )
        arrays["num_samples"] = np.array(num_samples.pop())
    arrays["stations"] = exp.data.ids(scored_nodes)
    arrays["stations_visible"] = exp.data.ids(src)
    for g in extra:
        arrays[f"stations_{g}"] = exp.data.ids(exp.task.group_nodes(g, src, tgt))
    return arrays


def unscaling(exp: Experiment, nodes) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) that take the target channels of ``nodes`` back to original units: (C_out,)
    with a per-channel scaler, (N', C_out) with a per-station one (``data.scaler: station``)."""
    mean, std = exp.train.scaler.stats(exp.targets, nodes)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def _add_probabilistic(prob: dict, suffix: str, samples, ys, ms, daily: bool) -> None:
    """Append the per-cell CRPS and the quantiles of ``samples`` (S, B, H, N, C), original units,
    scored against ``ys``/``ms`` (daily means of each sample for ``data.daily``)."""
    if daily:  # the samples' daily means over the truth's observed hours
        s = samples.size(0)
        days, _ = daily_means(samples.flatten(0, 1), ms.repeat(s, 1, 1, 1))
        samples = days.unflatten(0, (s, -1))
        ys, ms = daily_means(ys, ms)
    prob["crps" + suffix].append(crps_from_samples(samples, ys, ms).float())
    prob["quantiles" + suffix].append(sample_quantiles(samples, QUANTILE_LEVELS))


def _scored_samples(
    exp: Experiment,
    pred: Prediction,
    y: torch.Tensor,
    m: torch.Tensor,
    src: np.ndarray,
    tgt: np.ndarray,
    start: torch.Tensor,
) -> dict[str, torch.Tensor] | None:
    """Per scored group, the (S, B, H, N_g, C_out) standardised samples of its cells, or None for
    a point model. The task picks them as it picks the point estimate: the S samples are folded
    into the batch axis (sample-major) for :meth:`Task.scored_groups` (the window starts
    repeated) and unfolded after."""
    if pred.samples_src is None and pred.samples_tgt is None:
        return None
    folded = {}
    for name, point in (("src", pred.src), ("tgt", pred.tgt)):
        smp = getattr(pred, "samples_" + name)
        if smp is None:
            raise ValueError(f"Prediction.samples_{name} is None: a probabilistic model sets both samples_src/_tgt")
        if smp.dim() != point.dim() + 1 or smp.shape[1:] != point.shape:
            raise ValueError(
                f"Prediction.samples_{name} must be (S, *{name}.shape) = (S, {tuple(point.shape)}), "
                f"got {tuple(smp.shape)}"
            )
        folded[name] = smp.flatten(0, 1)
    s = pred.samples_src.size(0)
    if pred.samples_tgt.size(0) != s:
        raise ValueError(f"Prediction.samples_src has {s} samples and samples_tgt {pred.samples_tgt.size(0)}")
    reps = (s, *([1] * (y.dim() - 1)))
    groups = exp.task.scored_groups(Prediction(**folded), y.repeat(reps), m.repeat(reps), src, tgt, start.repeat(s))
    return {g: scored.pred.unflatten(0, (s, -1)) for g, scored in groups.items()}


def score(exp: Experiment, arrays: dict[str, np.ndarray]) -> dict:
    """Metrics of hidden and visible stations (hourly steps, or daily means for long horizons),
    and of the task's extra groups (``reconstruct``: ``removed``, the pattern's cells).

    Aligned tasks (``krige``, ``impute``): overall and per-station metrics count each (time,
    station) cell once — overlapping windows' estimates of a cell are averaged first, as GRIN does;
    ``per_window`` is SPIN's scoring instead, every window's output scored as it comes (a cell
    counts once per window that holds it). With ``data.eval_stride >= window`` (CSDI's protocol) a
    block's last window, shifted back to cover the block's tail, is scored only on the steps no
    earlier window covered, so both scorings count each cell once. Their per-step metrics
    (``at_steps``: position in the window, e.g. the window's first and last hour) are computed on
    the windows as they come, each window a row, since a merged cell has no single position.
    ``impute`` reports no per-step metrics. Forecasts: one row per
    window, per-step = lead time.

    With a probabilistic model's ``crps``/``quantiles`` arrays, the hidden group's ``overall`` (and
    each extra group's, from ``crps_<group>``/``quantiles_<group>``) adds ``crps`` (mean per-cell
    CRPS, original units), ``samples`` (S, how many samples each cell's CRPS, quantiles and median
    came from), ``crps_norm`` (Σ CRPS / Σ |y|, the normalisation CSDI and PriSTI report)
    and ``coverage90`` (share of cells whose truth lies in [q05, q95] of its samples). Aligned tasks
    merge them as the point estimates: a cell's CRPS and its 0/1 coverage are averaged over the
    windows that hold it, then averaged over cells."""
    dc = exp.cfg.data
    task = exp.task
    result = {}
    for group, suffix in (("hidden", ""), ("visible", "_visible"), *((g, f"_{g}") for g in task.extra_groups)):
        pred, true = torch.as_tensor(arrays["pred" + suffix]), torch.as_tensor(arrays["true" + suffix])
        mask = torch.as_tensor(arrays["mask" + suffix])
        if dc.daily:
            pred, _ = daily_means(pred, mask)
            true, mask = daily_means(true, mask)
            steps = dc.eval_days or None
        else:
            wanted = [6, 12, 24] if dc.eval_steps is None else dc.eval_steps  # explicit steps fit (config check)
            steps = [s for s in wanted if s <= pred.shape[1]] or None
        if task.scores_visible:
            steps = None
        per_window = summarize_metrics(pred, true, mask, steps=steps) if steps or task.aligned else None
        merged = task.merge_windows(pred, true, mask, torch.as_tensor(arrays["start"]))
        summary = summarize_metrics(*merged)
        if per_window is not None and steps:
            summary["at_steps"] = per_window["at_steps"]
            summary["per_step"] = per_window["per_step"]
        if task.aligned:  # SPIN's scoring: every window's output, a cell once per window holding it
            summary["per_window"] = per_window["overall"]
        summary["merged"] = "cells once (overlapping windows averaged)" if task.aligned else "one row per window"
        if group != "visible" and "crps" + suffix in arrays:
            summary["overall"].update(_probabilistic_summary(task, arrays, true, mask, suffix))
        ids = arrays["stations" + suffix].tolist()
        summary["per_station"] = dict(zip(ids, summary["per_station"], strict=True))
        result[group] = summary
    result["unit"] = "daily mean" if dc.daily else "hourly"
    return result


def _probabilistic_summary(
    task, arrays: dict[str, np.ndarray], true: torch.Tensor, mask: torch.Tensor, suffix: str = ""
) -> dict:
    """``crps``, ``crps_norm`` and ``coverage90`` of the scored cells (see :func:`score`); true and
    mask (B, H, N, C) as scored (daily means for ``data.daily``); ``suffix``: ``""`` for the
    hidden group, ``_<group>`` for a task's extra group."""
    crps = torch.as_tensor(arrays["crps" + suffix]).double()
    quantiles = torch.as_tensor(arrays["quantiles" + suffix])
    if crps.shape != true.shape or quantiles.shape[1:] != true.shape:
        raise ValueError(
            f"crps {tuple(crps.shape)} and quantiles {tuple(quantiles.shape)} do not match the scored cells "
            f"{tuple(true.shape)}"
        )
    levels = np.asarray(arrays["quantile_levels"], dtype=np.float64)
    lo, hi = (quantiles[int(np.flatnonzero(np.isclose(levels, q))[0])] for q in (0.05, 0.95))
    hit = ((lo <= true) & (true <= hi)).double()
    start = torch.as_tensor(arrays["start"])
    crps_m, true_m, cells = task.merge_windows(crps, true, mask, start)
    hit_m, _, _ = task.merge_windows(hit, true, mask, start)
    n = int(cells.sum())
    if not n:
        return {"samples": None, "crps": float("nan"), "crps_norm": float("nan"), "coverage90": float("nan")}
    total, scale = float(crps_m[cells].sum()), float(true_m[cells].double().abs().sum())
    return {
        "samples": int(arrays["num_samples"]) if "num_samples" in arrays else None,
        "crps": total / n,
        "crps_norm": total / scale if scale > 0 else float("nan"),
        "coverage90": float(hit_m[cells].mean()),
    }
