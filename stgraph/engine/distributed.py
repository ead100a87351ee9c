"""Data-parallel training over processes with ``torch.distributed`` (gloo on CPU, NCCL on GPU),
launched by ``torchrun``: ``torchrun --standalone --nproc_per_node 2 -m stgraph.cli train CONFIG``.

How it works (:func:`stgraph.engine.trainer.train_model` calls these): every rank builds the same
experiment and model (same seeds) and draws the same window order and the same hiding from the
epoch's generator; each global batch of ``train.batch_size`` windows is split into ``world``
contiguous shards, one per rank. The training objective runs through PyTorch's
:class:`~torch.nn.parallel.DistributedDataParallel` (:class:`Objective`): DDP wraps a small module
whose ``forward`` is the model's :meth:`~stgraph.models.base.StationModel.training_loss`, so models
with their own objective (diffusion, GRIN's per-direction terms) take part unchanged, and backward
all-reduces the gradients in buckets, overlapped with the rest of the backward pass. DDP averages
over ranks; each rank's loss is scaled by ``world * n_r / N`` (``n_r`` its windows, ``N`` the
global batch's), so the applied gradient is the window-weighted mean Σ_r n_r g_r / N, the whole
batch's gradient, also for a last, uneven batch; a rank left without windows contributes a zero
loss that touches every parameter (so every bucket is reduced). ``find_unused_parameters=True``
because some models leave parameters out of some steps (e.g. a branch used only in one mode).
The logged training loss is the global batch's (window-weighted over ranks).
Validation runs on every rank (the same numbers, so the same early-stopping and learning-rate
decisions, no broadcast needed); only rank 0
writes the run folder and checkpoints, and ranks wait for it (``barrier``) before the next epoch.
Resume: every rank reads ``last.pt`` before DDP is built (DDP broadcasts rank 0's weights once).

Equivalence with one process at the same global batch is exact (up to float summation order) when
each shard's loss weighs its cells like the whole batch's does: the same number of scored cells per
shard (complete data, or ``batch_size`` a multiple of ``world`` with evenly observed windows) and a
hiding drawn once per batch (``node_masking: batch``). Per-sample hiding (``node_masking: sample``)
draws per window and so differs from the single-process draws; runs are still valid, not identical.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), once; returns (rank, world)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return rank_world()


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def shard(idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's contiguous part of a global batch of window indices (a last, smaller batch is
    split as evenly as it goes; a rank may get none)."""
    rank, world = rank_world()
    if world == 1:
        return idx
    if batch_size % world:
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {world} processes")
    per = -(-len(idx) // world)
    return idx[rank * per : (rank + 1) * per]


class _Objective(torch.nn.Module):
    """DDP's view of a model: ``forward`` is its training objective (``None`` batch: a zero loss
    that touches every trainable parameter, for a rank without windows in a last, small batch)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, terms, loss_fn, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        if batch is None:
            zero = sum((p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad), torch.zeros(()))
            return zero, zero.detach()
        loss = self.model.training_loss(batch, terms, loss_fn)
        return loss * scale, loss.detach()


class Objective:
    """The training objective of ``model`` as the trainer calls it: ``objective(batch, terms, loss_fn,
    windows, batch_windows)`` returns ``(to_backward, loss)``. In one process it is
    ``model.training_loss`` itself; under torchrun a :class:`DistributedDataParallel` around it,
    with the loss scaled so that DDP's mean over ranks is the global batch's gradient (module
    docstring)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        _, self.world = rank_world()
        trainable = any(p.requires_grad for p in model.parameters())
        self.ddp = None
        if self.world > 1 and trainable:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(_Objective(model), find_unused_parameters=True)

    def __call__(self, batch, terms, loss_fn, windows: int, batch_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ddp is None:
            if batch is None:  # several processes but nothing to train: no gradient to share
                return torch.zeros(()), torch.zeros(())
            loss = self.model.training_loss(batch, terms, loss_fn)
            return loss, loss.detach()
        return self.ddp(batch if windows else None, terms, loss_fn, self.world * windows / max(batch_windows, 1))


def sum_across_ranks(*values: float) -> tuple[float, ...]:
    """The values summed over ranks (unchanged in one process)."""
    if rank_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tuple(t.tolist())


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()
