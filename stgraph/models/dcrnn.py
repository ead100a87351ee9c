"""DCRNN: diffusion convolutional recurrent neural network (Li et al., ICLR 2018, arXiv:1707.01926),
run inductively.

The nodes are the visible and the target stations together (:func:`~stgraph.models.inductive.union_inputs`):
a target node's inputs are zero with zero mask channels, and the kNN graph with Gaussian weights
is rebuilt from positions at every forward, so a station never seen in training is just another
node. No per-node parameters. Node input per step: ``[values * mask, mask, time encodings]``.

* ``forecast``: the paper's sequence to sequence model. An encoder stack of DCGRU cells reads
  the W input steps; a decoder stack, started from the encoder's final states and a GO symbol,
  emits H steps; its input is the previous output (C_out channels) and the step's time
  encodings; a Linear projects the top state to C_out. Scheduled sampling (training only, when
  the trainer passes ``y_src`` and ``use_curriculum``): at each decoder step one coin for the
  batch, with probability ``p = c / (c + exp(n / c))`` (n = training batches seen, a buffer saved
  with the model), decides that the *visible* nodes get their true previous value where it was
  observed; otherwise, and always for target nodes, the model's own prediction. Without
  curriculum the decoder always feeds back its own predictions (as the public PyTorch port does;
  the TensorFlow code would teacher-force throughout).
* ``krige`` / ``impute`` (outputs at the input steps): a bidirectional encoder, one DCGRU stack
  forward in time and one backward, and a per-step Linear readout of ``[h_fwd, h_bwd]``.

Curriculum scale ``c`` (``cl_decay_steps``): the paper's 2000 on METR-LA puts p = 0.5 at
``n = c ln c`` ~ 15.2k batches, 40 % of its 100 epochs x 375 batches (37.5k). ``"auto"`` (the
default) keeps that proportion for this run's budget: :meth:`DCRNN.set_training_budget` solves
``c ln c = 0.4 T`` (``c = a / W(a)``, Lambert W, ``a = 0.4 T``) for the run's T optimiser steps;
an int is used as given. The chosen ``c`` is a buffer saved with the model (2000 until told).

Issue-8 changes, each switchable back to the paper:

* ``anchor`` (default ``"auto"``; ``"none"`` = the paper): the model predicts a residual over
  :func:`~stgraph.models.anchors.anchor_prediction` (last value for forecasts, masked IDW for
  hidden stations in krige, ``lerp-knn`` in impute) through a zero-initialised readout, so an
  untrained model is its anchor. In the decoder, each step's output is ``anchor_t + readout(h_t)``
  and that full prediction is what is fed back (the same quantity as the truth fed by teacher
  forcing); the GO symbol is the anchor's first step (each node's latest value, or its IDW
  estimate) instead of the paper's zeros. ``keep_observed`` (default True with an anchor): in the
  aligned tasks the visible stations' observed input cells are output unchanged
  (:func:`~stgraph.models.anchors.keep_observed`).
* ``masked_mean`` (default True; False = the paper): the first encoder layer diffuses its input
  with the masked transitions (:mod:`stgraph.nn.diffusion_conv`): a node averages the values of
  its *observed* neighbours, renormalised over their weights, instead of counting missing and
  hidden neighbours as zeros. Mask and time channels are always observed. Hidden states (every
  node has one) and the decoder's inputs (predictions exist at every node) use the ordinary
  transitions.

Encoder stacks run layer by layer over the whole window (equal to step by step), so the
diffusion of each layer's input is computed once for all steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.anchors import anchor_prediction, keep_observed, resolve_anchor
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs, union_observed
from stgraph.models.search import IntRange
from stgraph.nn.dcgru import DCGRUCell
from stgraph.nn.diffusion_conv import DiffusionSupports, check_recursion, make_supports


@dataclass
class DCRNNParams:
    hidden_channels: int = 64
    num_layers: int = 2
    max_diffusion_step: int = 2  # K: hops per direction
    k: int = 8  # graph in-neighbours per node
    sigma_km: float | None = None  # Gaussian kernel width; None: the mean kNN edge length
    recursion: str = "power"  # "power" (paper) or "chebyshev" (official code)
    cl_decay_steps: int | str | None = "auto"  # c; "auto"/None: p = 0.5 at 40 % of the run's steps
    use_curriculum: bool = True
    dropout: float = 0.0  # between stacked layers and before the readout
    anchor: str = "auto"  # residual over anchors.anchor_prediction; "none": from scratch (the paper)
    masked_mean: bool = True  # input diffusion averages observed neighbours only; False: the paper
    keep_observed: bool = True  # anchored, aligned tasks: observed input cells pass through (anchors.keep_observed)


PAPER_DECAY_STEPS = 2000.0  # the official METR-LA value: the auto scale until the budget is known
HALF_AT = 0.4  # fraction of training at which p = 0.5 under "auto"


def lambert_w(a: float) -> float:
    """Principal branch of Lambert W for a >= 0: the w with ``w exp(w) = a`` (Halley's method)."""
    if a < 0:
        raise ValueError(f"lambert_w needs a >= 0, got {a}")
    w = math.log1p(a)
    for _ in range(100):
        ew = math.exp(w)
        f = w * ew - a
        step = f / (ew * (w + 1) - (w + 2) * f / (2 * w + 2))
        w -= step
        if abs(step) <= 1e-14 * max(1.0, abs(w)):
            break
    return w


def auto_decay_steps(total_steps: int, half_at: float = HALF_AT) -> float:
    """The curriculum scale c with ``p = 0.5`` after ``half_at * total_steps`` batches: the root of
    ``c ln c = a`` (a = half_at * T), ``c = a / W(a)`` (at least 1 batch; c -> 1 as a -> 0)."""
    a = half_at * max(total_steps, 0)
    return a / lambert_w(a) if a > 1e-12 else 1.0


def sampling_probability(batches_seen: float, decay_steps: float) -> float:
    """Probability of feeding the truth at a decoder step: ``c / (c + exp(n / c))``."""
    return decay_steps / (decay_steps + math.exp(min(batches_seen / decay_steps, 700.0)))


class DCRNN(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`DCRNNParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). Internally node-first: sequences (N, T, B, C), states (N, B, H).
    """

    search_space = {
        "hidden_channels": IntRange(16, 128, log=True),
        "max_diffusion_step": IntRange(1, 3),
        "k": IntRange(4, 16),
    }

    def __init__(self, sizes: DataSizes, params: DCRNNParams | None = None):
        super().__init__(sizes)
        p = self.params = params or DCRNNParams()
        check_recursion(p.recursion)
        for name in ("hidden_channels", "num_layers", "k"):
            if getattr(p, name) < 1:
                raise ValueError(f"DCRNN: {name} must be >= 1, got {getattr(p, name)}")
        self.auto_curriculum = p.cl_decay_steps in (None, "auto")
        if not self.auto_curriculum and (isinstance(p.cl_decay_steps, (str, bool)) or not p.cl_decay_steps >= 1):
            raise ValueError(f"DCRNN: cl_decay_steps must be 'auto', None or >= 1, got {p.cl_decay_steps!r}")
        self.anchored = resolve_anchor(p.anchor, sizes) != "none"
        if p.max_diffusion_step < 0:
            raise ValueError(f"DCRNN: max_diffusion_step must be >= 0, got {p.max_diffusion_step}")
        hid, c_out, nt = p.hidden_channels, sizes.out_channels, len(CYCLIC_FEATURES)
        enc_in = 2 * sizes.in_channels + nt

        def stack(first: int) -> nn.ModuleList:
            return nn.ModuleList(
                DCGRUCell(first if i == 0 else hid, hid, p.max_diffusion_step, p.recursion) for i in range(p.num_layers)
            )

        self.encoder = stack(enc_in)
        if sizes.aligned:
            self.encoder_bwd = stack(enc_in)
            self.readout = nn.Linear(2 * hid, c_out)
        else:
            self.decoder = stack(c_out + nt)
            self.readout = nn.Linear(hid, c_out)
        self.drop = nn.Dropout(p.dropout)
        self.register_buffer("num_batches_seen", torch.zeros((), dtype=torch.long))
        decay = PAPER_DECAY_STEPS if self.auto_curriculum else float(p.cl_decay_steps)
        self.register_buffer("cl_decay", torch.tensor(decay, dtype=torch.float64))  # c, saved with the model
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, DCGRUCell):
                module.reset_parameters()
        self.readout.reset_parameters()
        if self.anchored:  # a zero residual: the untrained model is its anchor
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self.num_batches_seen.zero_()

    def set_training_budget(self, total_steps: int) -> None:
        """``cl_decay_steps="auto"``: scale the curriculum so that p = 0.5 at 40 % of ``total_steps``."""
        if self.auto_curriculum:
            self.cl_decay.fill_(auto_decay_steps(total_steps))

    def _encode(self, cells: nn.ModuleList, seq: torch.Tensor, sup: DiffusionSupports, seen: torch.Tensor | None):
        """seq (N, T, B, C), seen: None or its bool observation mask -> top-layer outputs
        (N, T, B, H) and each layer's final state. ``seen`` masks the first layer's diffusion."""
        finals = []
        for i, cell in enumerate(cells):
            if i > 0:
                seq = self.drop(seq)
            xp = cell.project_input(seq, sup, seen if i == 0 else None)  # (N, T, B, 3H): all steps at once
            h = seq.new_zeros(seq.size(0), seq.size(2), cell.hidden_channels)
            outs = []
            for xp_t in xp.unbind(1):  # unbind, not xp[:, t]: one backward copy instead of one per step
                h = cell.step(xp_t, h, sup)
                outs.append(h)
            seq = torch.stack(outs, dim=1)
            finals.append(h)
        return seq, finals

    def forward(self, batch: GraphBatch) -> Prediction:
        p = self.params
        seen_before = int(self.num_batches_seen)
        if self.training:
            self.num_batches_seen += 1
        x, pos, n_src = union_inputs(batch)  # (B, W, N, 2 C_in)
        b, w, n, _ = x.shape
        edge_index, edge_weight = union_graph(pos, p.k, p.sigma_km)
        sup = make_supports(edge_index, edge_weight, n, x.dtype)
        time = batch.x_time.unsqueeze(2).expand(b, w, n, -1)
        seq = torch.cat([x, time.to(x.dtype)], dim=-1).permute(2, 1, 0, 3)  # (N, W, B, C)
        observed = None
        if p.masked_mean:  # value channels where observed; mask and time channels everywhere
            obs = union_observed(batch)
            observed = torch.cat([obs, obs.new_ones(b, w, n, time.size(-1))], dim=-1).permute(2, 1, 0, 3)
        anchor = anchor_prediction(batch, self.sizes, p.anchor)
        base = torch.cat([anchor.src, anchor.tgt], dim=2).to(x.dtype)  # (B, H, N, C_out); zeros for "none"

        if self.sizes.aligned:
            fwd, _ = self._encode(self.encoder, seq, sup, observed)
            bwd, _ = self._encode(self.encoder_bwd, seq.flip(1), sup, None if observed is None else observed.flip(1))
            y = self.readout(self.drop(torch.cat([fwd, bwd.flip(1)], dim=-1)))  # (N, W, B, C_out)
            pred = split_outputs(base + y.permute(2, 1, 0, 3), n_src)
            anchored = resolve_anchor(p.anchor, self.sizes) != "none"
            return keep_observed(pred, batch, self.sizes) if anchored and p.keep_observed else pred

        _, states = self._encode(self.encoder, seq, sup, observed)
        teacher = self.training and p.use_curriculum and batch.y_src is not None
        if teacher:
            prob = sampling_probability(seen_before, float(self.cl_decay))
            truth = batch.y_src.permute(1, 2, 0, 3).to(x.dtype)  # (H, N_src, B, C_out)
            seen = (
                torch.ones_like(truth, dtype=torch.bool)
                if batch.y_src_mask is None
                else batch.y_src_mask.permute(1, 2, 0, 3)
            )
        y_time = batch.y_time.to(x.dtype)
        base = base.permute(1, 2, 0, 3)  # (H, N, B, C_out)
        prev = base[0] if self.anchored else x.new_zeros(n, b, self.sizes.out_channels)  # GO symbol
        outs = []
        for t in range(self.sizes.horizon):
            if teacher and t > 0 and float(torch.rand(())) < prob:  # one coin per step for the batch
                known = torch.where(seen[t - 1], truth[t - 1], prev[:n_src])
                prev = torch.cat([known, prev[n_src:]])
            inp = torch.cat([prev, y_time[:, t].expand(n, b, -1)], dim=-1)
            for i, cell in enumerate(self.decoder):
                states[i] = cell(self.drop(inp) if i > 0 else inp, states[i], sup)
                inp = states[i]
            prev = base[t] + self.readout(self.drop(inp))  # (N, B, C_out): the full prediction is fed back
            outs.append(prev)
        y = torch.stack(outs).permute(2, 0, 1, 3)  # (B, H, N, C_out)
        return split_outputs(y, n_src)
