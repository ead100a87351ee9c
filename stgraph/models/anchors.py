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
from stgraph.ops.idw import masked_idw
from stgraph.ops.lerp import lerp_knn
from stgraph.ops.observed import last_observed

ANCHORS = ("auto", "none", "last", "idw", "lerp-knn")


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


def resolve_anchor(kind: str, sizes: DataSizes) -> str:
    """The anchor a model uses: ``auto`` picks the task's (``last``, ``idw`` or ``lerp-knn``:
    :attr:`~stgraph.data.batch.TaskTraits.default_anchor`)."""
    if kind not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {kind!r}")
    return sizes.default_anchor if kind == "auto" else kind


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
    kind = resolve_anchor(kind, sizes)
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
    if kind == "idw" and not sizes.scores_visible_cells:  # krige: visible gaps by IDW of the others
        src, _ = masked_idw(x, m, batch.pos_src, batch.pos_src, power, exclude_self=True)
        return Prediction(torch.where(m, x, src), tgt)
    return Prediction(lerp_knn(x, m, batch.pos_src, tau, k), tgt)
