"""Data-parallel training over processes with ``torch.distributed`` (gloo on CPU, NCCL on GPU),
launched by ``torchrun``: ``torchrun --standalone --nproc_per_node 2 -m stgraph.cli train CONFIG``.

How it works (:func:`stgraph.engine.trainer.train_model` calls these): every rank builds the same
experiment and model (same seeds) and draws the same window order and the same hiding from the
epoch's generator; each global batch of ``train.batch_size`` windows is split into ``world``
contiguous shards, one per rank; after each backward the gradients are averaged across ranks with
``all_reduce`` (what ``DistributedDataParallel`` does; done directly so models with their own
training objective, ``StationModel.training_loss``, take part unchanged), so every rank applies the
same update. The logged training loss is the global batch's (window-weighted over ranks).
Validation runs on every rank (the same numbers, so the same early-stopping and learning-rate
decisions, no broadcast needed); only rank 0
writes the run folder and checkpoints, and ranks wait for it (``barrier``) before the next epoch.
Resume: every rank reads ``last.pt``.

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


def average_gradients(model: torch.nn.Module, windows: int) -> None:
    """Every gradient becomes the window-weighted mean over ranks, Σ_r n_r g_r / Σ_r n_r (``windows``:
    this rank's n_r), which is the whole batch's gradient when each window weighs the same in the
    loss. No-op in one process."""
    _, world = rank_world()
    if world == 1:
        return
    count = torch.tensor([float(windows)], dtype=torch.float64)
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    for p in model.parameters():
        if p.requires_grad:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            g = g * windows
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            p.grad = g / float(count.item())


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
