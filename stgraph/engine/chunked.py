"""Evaluation streamed over the hidden stations in chunks, each with a bounded visible neighbourhood.

``train.eval_target_chunk`` splits the targets of every evaluation (and validation) batch into
chunks; with ``train.eval_neighbours`` each chunk sees only the union of its targets' K nearest
visible stations (great-circle, the package's kNN), so one model call holds (B, W, chunk + ≤ chunk·K)
stations whatever the network's size. Targets' outputs are concatenated in order; the visible
stations' outputs are the mean over the calls that included them (a station no chunk included has
no visible output: its ``covered`` flag is False and it is not scored). With every visible station
in each call (``eval_neighbours`` None), a model whose target outputs do not depend on the other
targets gives exactly the whole-network numbers, and so does a local model (IDW/kNN with k ≤ K)
with neighbourhoods. GNNs whose hidden nodes exchange messages (GRIN, IGNNK, DCRNN, ST-GCN) see a
smaller graph per chunk, so their chunked numbers are their own (not the whole network's); the
tests hold the others to the whole-network numbers.
A sampling model's draws depend on its call's shapes (``diffrecon``), so its
chunked samples are other valid draws, not the same ones; the visible stations' samples come from
the first call that held them. Tasks that score the visible stations' removed cells too
(``impute``, ``reconstruct``) refuse ``eval_neighbours``: a visible station outside every chunk's
neighbourhood would go unscored.

Targets are either hidden dataset nodes (an index array: validation, prediction) or
:class:`Places`, positions with no station (a reanalysis's grid cells or points,
:mod:`stgraph.reanalysis.estimate`): both go through the same batches, chunks and neighbourhoods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stgraph.geo import latlon_to_xyz
from stgraph.graph.knn import knn
from stgraph.graph.locality import morton_order
from stgraph.models.base import Prediction


@dataclass(frozen=True)
class Places:
    """Targets that are no dataset node: ``latlon`` (M, 2) degrees (a reanalysis's cells or points).
    Indexing with an index array gives the places at those positions."""

    latlon: np.ndarray

    def __len__(self) -> int:
        return len(self.latlon)

    def __getitem__(self, idx) -> Places:
        return Places(self.latlon[idx])


def target_latlon(exp, tgt: np.ndarray | Places) -> np.ndarray:
    """(M, 2) lat/lon of the targets: the dataset's for node indices, their own for :class:`Places`."""
    return tgt.latlon if isinstance(tgt, Places) else exp.data.latlon[tgt]


def target_batch(exp, w, src: np.ndarray, tgt: np.ndarray | Places):
    """The model batch of windows ``w`` with the dataset nodes ``src`` visible and ``tgt`` (nodes or
    :class:`Places`) as targets (:meth:`~stgraph.engine.experiment.Experiment.batch`)."""
    if not isinstance(tgt, Places):
        return exp.batch(w, src, tgt)
    batch = exp.batch(w, src, np.zeros(0, dtype=np.int64))
    batch.pos_tgt = torch.tensor(tgt.latlon, dtype=torch.float32)
    return batch


def neighbourhoods(src_latlon: np.ndarray, chunks: list[np.ndarray], k: int) -> list[np.ndarray]:
    """Per chunk of targets, the sorted positions (into the visible stations) of the union of its
    targets' ``k`` nearest visible stations. src_latlon: (N_src, 2) of the visible stations; chunks:
    (M_i, 2) lat/lon of each chunk's targets. One kNN search for all targets."""
    if not chunks:
        return []
    n = len(src_latlon)
    xs = torch.as_tensor(np.asarray(latlon_to_xyz(src_latlon)), dtype=torch.float64)
    xt = torch.as_tensor(np.asarray(latlon_to_xyz(np.concatenate(chunks))), dtype=torch.float64)
    ei = knn(xs, xt, min(k, n)).numpy()  # row 0: visible station, row 1: target (chunk order)
    which = np.repeat(np.arange(len(chunks)), [len(c) for c in chunks])[ei[1]]  # each pair's chunk
    pairs = np.unique(which * n + ei[0])  # sorted by chunk, then by visible station
    bounds = np.searchsorted(pairs, np.arange(len(chunks) + 1) * n)
    return [pairs[bounds[i] : bounds[i + 1]] - i * n for i in range(len(chunks))]


def chunk_plan(exp, src: np.ndarray, tgt: np.ndarray | Places, chunk: int, k: int | None):
    """(target chunks, their neighbourhoods, the permutation back to ``tgt``'s order), computed once
    per (src, tgt, chunk, k) and kept on ``exp``: every window batch of an evaluation reuses it."""
    latlon = target_latlon(exp, tgt)
    key = (hash(src.tobytes()), hash(np.ascontiguousarray(latlon).tobytes()), isinstance(tgt, Places), len(src),
           len(tgt), chunk, k)  # fmt: skip
    cached = getattr(exp, "_chunk_plan", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    # chunks of targets consecutive along a Morton curve: spatially compact, so a chunk's targets share
    # neighbours and its neighbourhood stays near ``chunk`` stations rather than ``chunk * k``
    order = morton_order(torch.as_tensor(np.asarray(latlon_to_xyz(latlon)))).numpy()
    parts = [order[i : i + chunk] for i in range(0, len(tgt), chunk)]
    chunks = [tgt[part] for part in parts]
    back = torch.as_tensor(np.argsort(order))  # chunk order -> the order of ``tgt``
    if k:
        hoods = neighbourhoods(exp.data.latlon[src], [latlon[part] for part in parts], k)
    else:
        hoods = [np.arange(len(src))] * len(chunks)
    exp._chunk_plan = (key, (chunks, hoods, back))
    return chunks, hoods, back


def chunked_forward(model, exp, w, src: np.ndarray, tgt: np.ndarray | Places) -> tuple[Prediction, torch.Tensor]:
    """The model's prediction for windows ``w`` with the dataset nodes ``src`` visible and ``tgt``
    (hidden nodes, or :class:`Places`) as targets, in target chunks (``train.eval_target_chunk``);
    returns (Prediction, (N_src,) bool covered)."""
    tc = exp.cfg.train
    chunk, k = tc.eval_target_chunk, tc.eval_neighbours
    src = np.asarray(src)
    tgt = tgt if isinstance(tgt, Places) else np.asarray(tgt)
    if k is not None and exp.task.traits.scores_visible_cells:
        raise ValueError(
            f"train.eval_neighbours bounds the visible stations each chunk sees, but task '{exp.task.name}' also "
            "scores the visible stations' removed cells, which every visible station must be predicted for: leave "
            "train.eval_neighbours unset (train.eval_target_chunk alone streams the targets)"
        )
    if not chunk or len(tgt) == 0 or (len(tgt) <= chunk and k is None):
        return model(target_batch(exp, w, src, tgt)), torch.ones(len(src), dtype=torch.bool)
    chunks, hoods, back = chunk_plan(exp, src, tgt, chunk, k)
    tgt_parts, samples, stds = [], [], []
    src_sum, count, src_samples = None, torch.zeros(len(src)), None
    for t, cols in zip(chunks, hoods, strict=True):
        pred = model(target_batch(exp, w, src[cols], t))
        tgt_parts.append(pred.tgt)
        samples.append(pred.samples_tgt)
        stds.append(pred.std_tgt)
        if src_sum is None:
            src_sum = pred.src.new_zeros(*pred.src.shape[:2], len(src), pred.src.size(-1))
        c = torch.as_tensor(cols)
        if pred.samples_src is not None:  # each visible station's samples from the first call holding it
            if src_samples is None:
                src_samples = pred.samples_src.new_zeros(*pred.samples_src.shape[:3], len(src), pred.src.size(-1))
            new = count[c] == 0
            src_samples[:, :, :, c[new]] = pred.samples_src[:, :, :, new]
        src_sum[:, :, c] += pred.src
        count[c] += 1
    out = Prediction(src_sum / count.clamp_min(1).view(1, 1, -1, 1), torch.cat(tgt_parts, dim=2)[:, :, back])
    if all(s is not None for s in samples):
        out.samples_tgt = torch.cat(samples, dim=3)[:, :, :, back]
        out.samples_src = src_samples
    if all(s is not None for s in stds):
        out.std_tgt = torch.cat(stds, dim=2)[:, :, back]
    return out, count > 0
