"""Anchors: the simple estimates that learned models start from, and the baselines that are them.

A learned model in stgraph predicts a zero-initialised residual over one of these, so an
untrained model *is* its anchor and training can only move it where the data say so:

- ``forecast``: each visible station's last observed value, persisted over the horizon; targets
  (and visible stations never observed in the window) take the masked IDW of those (stations
  never observed in the window do not vote).
- ``krige``: targets take, at each step, the masked IDW of the visible stations observed at that
  step (weights renormalised over the observed ones, never over missing neighbours).
- ``impute`` (and the visible stations' missing cells in ``krige``): ``lerp-knn``, a blend of
  linear interpolation in time and the mean of the nearest stations observed at that step,
  weighted ``exp(-(gap - 1) / tau)`` by the length of the gap being filled.

Every function works on standardised values with a mask; a cell that cannot be estimated (no
observation anywhere it looks) is 0, the standardised mean. All are vectorised over batch,
steps, stations and channels.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stgraph.models.base import DataSizes, GraphBatch, Prediction
from stgraph.models.baselines.idw import last_observed, masked_idw
from stgraph.models.baselines.knn_mean import knn_mean, neighbour_order
from stgraph.models.baselines.persistence import observations_around

ANCHORS = ("auto", "none", "last", "idw", "lerp-knn")


def lerp_in_time(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation along time (dim 1) between the observations around each gap.

    Args:
        x, mask: (B, W, N, C).
    Returns:
        filled: (B, W, N, C): observed cells unchanged; a gap with observations on both sides is
            interpolated linearly; one with an observation on one side only takes it (LOCF/NOCB);
            a series with no observation is 0.
        gap: (B, W, N, C) float: 0 at observed cells; the length of the run of missing steps a
            cell belongs to when it is bounded on both sides; ``2 * distance - 1`` to the one
            observed side otherwise (the gap is assumed to extend as far beyond the window);
            ``inf`` where the series holds no observation.
    """
    steps, prev, nxt, fwd, bwd = observations_around(x, mask)
    has_prev, has_next = prev >= 0, nxt < x.size(1)
    both = has_prev & has_next
    span = (nxt - prev).clamp_min(1).to(x.dtype)
    frac = (steps - prev).to(x.dtype) / span
    lerp = torch.where(both, fwd + (bwd - fwd) * frac, torch.where(has_prev, fwd, torch.where(has_next, bwd, 0.0)))
    filled = torch.where(mask, x, lerp)
    inf = torch.full_like(span, float("inf"))
    one_side = torch.where(has_prev, (steps - prev).to(x.dtype), (nxt - steps).to(x.dtype)) * 2 - 1
    gap = torch.where(both, span - 1, torch.where(has_prev | has_next, one_side, inf))
    return filled, torch.where(mask, torch.zeros_like(gap), gap)


def lerp_knn(x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, tau: float = 8.0, k: int = 3) -> torch.Tensor:
    """The gap-weighted blend: ``w * lerp + (1 - w) * kNN mean``, ``w = exp(-(gap - 1) / tau)``.

    Args:
        x, mask: (B, W, N, C) values and mask of the stations whose missing cells are filled.
        pos: (N, 2) their positions. tau: gap length scale in steps (tau -> 0: kNN only;
            tau -> inf: linear interpolation only). k: stations in the kNN mean (each cell's
            ``k`` nearest *other* stations observed at that step).
    Returns:
        (B, W, N, C): observed cells unchanged, missing cells blended (a side with no estimate
        leaves the other; neither: 0).
    """
    filled, gap = lerp_in_time(x, mask)
    xm = torch.where(mask, x, torch.zeros_like(x))
    if pos.size(0) > 1:
        order = neighbour_order(pos, pos, exclude_self=True).to(x.device)
        spatial = knn_mean(xm, mask, order, k)
        has_sp = mask[:, :, order].any(dim=3)
    else:
        spatial, has_sp = torch.zeros_like(x), torch.zeros_like(mask)
    has_t = torch.isfinite(gap)
    wt = torch.exp(-(gap.clamp_min(1.0) - 1.0) / max(tau, 1e-6)) if tau > 0 else (gap <= 1).to(x.dtype)
    wt = torch.where(has_t, wt, torch.zeros_like(wt))
    wt = torch.where(has_sp, wt, has_t.to(x.dtype))
    blend = wt * torch.where(has_t, filled, torch.zeros_like(filled)) + (1 - wt) * spatial
    return torch.where(mask, x, blend)


def keep_observed(pred: Prediction, batch: GraphBatch, sizes: DataSizes) -> Prediction:
    """Aligned tasks (krige, impute, reconstruct): the visible stations' observed input cells are
    the output there, unchanged; the residual acts only where a value is missing.

    Why: an anchored model predicts ``anchor + residual``, and the anchor already equals the input
    at observed cells. Trained with the loss on kept cells too (``train.src_loss_weight``), every
    residual there is pure error; under L1 the kept cells (most of them) pull the whole residual
    to exactly zero, and the model stays at its anchor (measured on AQI-36: IGNNK's training loss
    and validation MAE did not move in 1,500 steps). Passing the observed cells through removes
    that pull; the cells that are scored (missing in the input) are unaffected.

    Args:
        pred: src (B, H, N_src, C_out), tgt (B, H, N_tgt, C_out). batch, sizes: the model's.
    Returns:
        ``pred`` with ``src`` replaced by the input at observed target-channel cells (forecasts
        unchanged: their outputs lie after the input).
    """
    if not sizes.aligned:
        return pred
    tc = list(sizes.target_channels)
    x, m = batch.x[..., tc].to(pred.src.dtype), batch.x_mask[..., tc]
    return replace(pred, src=torch.where(m, x, pred.src))


def resolve_anchor(kind: str, task: str) -> str:
    """The anchor a model uses: ``auto`` picks the task's (``last``, ``idw`` or ``lerp-knn``)."""
    if kind not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {kind!r}")
    if kind != "auto":
        return kind
    return {"forecast": "last", "krige": "idw", "impute": "lerp-knn", "reconstruct": "lerp-knn"}[task]


def anchor_prediction(
    batch: GraphBatch,
    sizes: DataSizes,
    kind: str = "auto",
    *,
    power: float = 2.0,
    tau: float = 8.0,
    k: int = 3,
) -> Prediction:
    """The simple estimate of every output a model makes, in the model's output shapes.

    Args:
        batch: the model's input. sizes: its data sizes (task, horizon, target channels).
        kind: ``auto`` (by task: forecast -> ``last``, krige -> ``idw``, impute and reconstruct ->
            ``lerp-knn``: targets by masked IDW, the visible stations' removed cells by the blend),
            ``none`` (zeros: the model predicts from scratch), or one of ``last``/``idw``/``lerp-knn``
            (which all fall back to the task's estimate where they do not apply).
        power: IDW power. tau, k: the ``lerp-knn`` blend's gap scale and neighbours.
    Returns:
        Prediction with src (B, H, N_src, C_out) and tgt (B, H, N_tgt, C_out).
    """
    tc = list(sizes.target_channels)
    x, m = batch.x[..., tc], batch.x_mask[..., tc]
    x = torch.where(m, x, torch.zeros_like(x))
    b, _, n_src, c = x.shape
    n_tgt, h = batch.pos_tgt.size(0), sizes.horizon
    kind = resolve_anchor(kind, sizes.task)
    if kind == "none":
        return Prediction(x.new_zeros(b, h, n_src, c), x.new_zeros(b, h, n_tgt, c))
    if not sizes.aligned:  # forecast: persist the last observations, targets by masked IDW
        value, has = last_observed(x, m)  # (B, N_src, C)
        # a visible station with no observation in the window takes what a target would: the
        # masked IDW of the others' last values (so training with per-sample hiding, where such
        # stations stand in for targets, starts from the same anchor as evaluation)
        others, _ = masked_idw(
            value.unsqueeze(1), has.unsqueeze(1), batch.pos_src, batch.pos_src, power, exclude_self=True
        )
        value = torch.where(has, value, others.squeeze(1))
        src = value.unsqueeze(1).expand(-1, h, -1, -1)
        tgt, _ = masked_idw(value.unsqueeze(1), has.unsqueeze(1), batch.pos_src, batch.pos_tgt, power)
        return Prediction(src, tgt.expand(-1, h, -1, -1))
    tgt, _ = masked_idw(x, m, batch.pos_src, batch.pos_tgt, power)
    if kind == "idw" and sizes.task == "krige":
        src, _ = masked_idw(x, m, batch.pos_src, batch.pos_src, power, exclude_self=True)
        return Prediction(torch.where(m, x, src), tgt)
    return Prediction(lerp_knn(x, m, batch.pos_src, tau, k), tgt)
