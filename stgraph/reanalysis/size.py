"""A reanalysis sized before it starts: cells x steps x variables, in bytes on disk and in memory.

:func:`plan_size` counts what :func:`stgraph.reanalysis.write_reanalysis` would write and hold;
:func:`check_size` refuses a request above the budgets (``--max-output-gb``, ``--max-memory-gb``)
or above the free space of the output's disk, with the estimate and the option that raises it,
before anything is allocated or written.

Disk: every variable is float32 over (time, cells): per target channel an estimate plus, at most,
three sample quantiles (sampling models) or one standard deviation (Gaussian models), so
``4 + 1`` float32 per cell and step per channel is the bound used (the distance map adds 4 bytes
per cell). Memory: the cells' coordinates and distances are made a chunk at a time, so what is
held is one chunk of ``window_batch`` windows x ``cell_chunk`` targets (inputs, outputs and the
model's activations, bounded by ``ACTIVATION_FACTOR`` times the output chunk) plus the run's own
data (already loaded when the size is checked).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ReanalysisSize", "ReanalysisTooLargeError", "check_size", "plan_size"]

BYTES = 4  # float32
VARIABLES_PER_CHANNEL = 5  # estimate + up to three quantiles (or one std) + slack for the fill value chunks
ACTIVATION_FACTOR = 64  # a model's intermediate tensors per output value (attention, hidden widths), an upper bound
GB = 1e9


class ReanalysisTooLargeError(ValueError):
    """The request is above a size budget; the message gives the estimate and how to raise the budget."""


@dataclass(frozen=True)
class ReanalysisSize:
    cells: int
    steps: int
    channels: int
    output_bytes: int
    memory_bytes: int

    def describe(self) -> str:
        return (
            f"{self.cells:,} cells x {self.steps:,} steps x {self.channels} channel(s): about "
            f"{self.output_bytes / GB:.2f} GB on disk and {self.memory_bytes / GB:.2f} GB of working memory"
        )


def plan_size(cells: int, steps: int, channels: int, *, window: int, window_batch: int, cell_chunk: int,
              in_channels: int, visible: int) -> ReanalysisSize:  # fmt: skip
    """The estimate of one reanalysis (see the module docstring)."""
    output = cells * steps * channels * VARIABLES_PER_CHANNEL * BYTES + cells * BYTES
    chunk_targets = min(cell_chunk, cells)
    out_chunk = window_batch * window * chunk_targets * channels * BYTES
    inputs = window_batch * window * visible * in_channels * BYTES * 2  # values and mask
    memory = out_chunk * ACTIVATION_FACTOR + inputs + chunk_targets * 64
    return ReanalysisSize(cells, steps, channels, int(output), int(memory))


def check_size(size: ReanalysisSize, out: str | Path, *, max_output_gb: float, max_memory_gb: float) -> None:
    """Refuse ``size`` above the budgets or the free disk space of ``out``'s folder.

    Raises:
        ReanalysisTooLargeError: naming the estimate, the budget and the option that raises it.
    """
    if size.output_bytes > max_output_gb * GB:
        raise ReanalysisTooLargeError(
            f"reanalysis of {size.describe()}: the output is above the {max_output_gb:g} GB budget; narrow the grid, "
            "coarsen its resolution or shorten --start/--end, or raise the budget with --max-output-gb"
        )
    if size.memory_bytes > max_memory_gb * GB:
        raise ReanalysisTooLargeError(
            f"reanalysis of {size.describe()}: the working memory is above the {max_memory_gb:g} GB budget; lower "
            "--cell-chunk or --window-batch, or raise the budget with --max-memory-gb"
        )
    folder = Path(out).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if size.output_bytes > free:
        raise ReanalysisTooLargeError(
            f"reanalysis of {size.describe()}: {folder} has only {free / GB:.2f} GB free; write elsewhere (--out) or "
            "narrow the request"
        )
