"""DCRNN: diffusion convolutional recurrent neural network (Li et al., ICLR 2018, arXiv:1707.01926),
run inductively.

The nodes are the visible and the target stations together (:func:`~stgraph.models.inductive.union_inputs`):
a target node's inputs are zero with zero mask channels, and the kNN graph with Gaussian weights
is rebuilt from positions at every forward, so a station never seen in training is just another
node. No per-node parameters. Node input per step: ``[values * mask, mask, time encodings]``.

* ``forecast``: the paper's sequence to sequence model. An encoder stack of DCGRU cells reads
  the W input steps; a decoder stack, started from the encoder's final states and a GO symbol of
  zeros, emits H steps; its input is the previous output (C_out channels) and the step's time
  encodings; a Linear projects the top state to C_out. Scheduled sampling (training only, when
  the trainer passes ``y_src`` and ``use_curriculum``): at each decoder step one coin for the
  batch, with probability ``p = c / (c + exp(n / c))`` (c = ``cl_decay_steps``, n = training
  batches seen, a buffer saved with the model), decides that the *visible* nodes get their true
  previous value where it was observed; otherwise, and always for target nodes, the model's own
  prediction. Without curriculum the decoder always feeds back its own predictions (as the
  public PyTorch port does; the TensorFlow code would teacher-force throughout).
* ``krige`` / ``impute`` (outputs at the input steps): a bidirectional encoder, one DCGRU stack
  forward in time and one backward, and a per-step Linear readout of ``[h_fwd, h_bwd]``.

Encoder stacks run layer by layer over the whole window (equal to step by step), so the
diffusion of each layer's input is computed once for all steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stgraph.data.encodings import CYCLIC_FEATURES
from stgraph.models.base import DataSizes, GraphBatch, Prediction, StationModel
from stgraph.models.inductive import split_outputs, union_graph, union_inputs
from stgraph.nn.dcgru import DCGRUCell
from stgraph.nn.diffusion_conv import DiffusionSupports, check_recursion


@dataclass
class DCRNNParams:
    hidden_channels: int = 64
    num_layers: int = 2
    max_diffusion_step: int = 2  # K: hops per direction
    k: int = 8  # graph in-neighbours per node
    sigma_km: float | None = None  # Gaussian kernel width; None: the mean kNN edge length
    recursion: str = "power"  # "power" (paper) or "chebyshev" (official code)
    cl_decay_steps: int = 2000
    use_curriculum: bool = True
    dropout: float = 0.0  # between stacked layers and before the readout


def sampling_probability(batches_seen: int, decay_steps: int) -> float:
    """Probability of feeding the truth at a decoder step: ``c / (c + exp(n / c))``."""
    return decay_steps / (decay_steps + math.exp(min(batches_seen / decay_steps, 700.0)))


class DCRNN(StationModel):
    """Args:
        sizes: data-derived sizes. params: :class:`DCRNNParams`.

    Shapes: see :class:`~stgraph.models.base.GraphBatch`; returns (B, H, N_src, C_out) and
    (B, H, N_tgt, C_out). Internally node-first: sequences (N, T, B, C), states (N, B, H).
    """

    def __init__(self, sizes: DataSizes, params: DCRNNParams | None = None):
        super().__init__(sizes)
        p = self.params = params or DCRNNParams()
        check_recursion(p.recursion)
        for name in ("hidden_channels", "num_layers", "k", "cl_decay_steps"):
            if getattr(p, name) < 1:
                raise ValueError(f"DCRNN: {name} must be >= 1, got {getattr(p, name)}")
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, DCGRUCell):
                module.reset_parameters()
        self.readout.reset_parameters()
        self.num_batches_seen.zero_()

    def _encode(self, cells: nn.ModuleList, seq: torch.Tensor, sup: DiffusionSupports):
        """seq (N, T, B, C) -> top-layer outputs (N, T, B, H) and each layer's final state."""
        finals = []
        for i, cell in enumerate(cells):
            if i > 0:
                seq = self.drop(seq)
            xp = cell.project_input(seq, sup)  # (N, T, B, 3H): input diffusion for all steps at once
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
        sup = DiffusionSupports(edge_index, edge_weight, n, x.dtype)
        time = batch.x_time.unsqueeze(2).expand(b, w, n, -1)
        seq = torch.cat([x, time.to(x.dtype)], dim=-1).permute(2, 1, 0, 3)  # (N, W, B, C)

        if self.sizes.aligned:
            fwd, _ = self._encode(self.encoder, seq, sup)
            bwd, _ = self._encode(self.encoder_bwd, seq.flip(1), sup)
            y = self.readout(self.drop(torch.cat([fwd, bwd.flip(1)], dim=-1)))  # (N, W, B, C_out)
            return split_outputs(y.permute(2, 1, 0, 3), n_src)

        _, states = self._encode(self.encoder, seq, sup)
        teacher = self.training and p.use_curriculum and batch.y_src is not None
        if teacher:
            prob = sampling_probability(seen_before, p.cl_decay_steps)
            truth = batch.y_src.permute(1, 2, 0, 3).to(x.dtype)  # (H, N_src, B, C_out)
            seen = (
                torch.ones_like(truth, dtype=torch.bool)
                if batch.y_src_mask is None
                else batch.y_src_mask.permute(1, 2, 0, 3)
            )
        y_time = batch.y_time.to(x.dtype)
        prev = x.new_zeros(n, b, self.sizes.out_channels)  # GO symbol
        outs = []
        for t in range(self.sizes.horizon):
            if teacher and t > 0 and float(torch.rand(())) < prob:  # one coin per step for the batch
                known = torch.where(seen[t - 1], truth[t - 1], prev[:n_src])
                prev = torch.cat([known, prev[n_src:]])
            inp = torch.cat([prev, y_time[:, t].expand(n, b, -1)], dim=-1)
            for i, cell in enumerate(self.decoder):
                states[i] = cell(self.drop(inp) if i > 0 else inp, states[i], sup)
                inp = states[i]
            prev = self.readout(self.drop(inp))  # (N, B, C_out)
            outs.append(prev)
        y = torch.stack(outs).permute(2, 0, 1, 3)  # (B, H, N, C_out)
        return split_outputs(y, n_src)
