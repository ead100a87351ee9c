"""Sliding windows ``[B, T, N, C]`` cut by tensor indexing, never by a Python loop per window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stgraph.data.encodings import cyclic_time_encoding
from stgraph.data.station_data import StationData


def window_starts(period: np.ndarray, window: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Start indices ``s`` whose whole span ``[s, s + window + horizon)`` lies in ``period``.

    Args:
        period: (T,) bool, the steps of one period (see :class:`~stgraph.data.TimeSplit`).
    Returns:
        (B,) int64 start indices, every ``stride``-th valid one.
    """
    span = window + horizon
    t = len(period)
    if span > t:
        return np.zeros(0, dtype=np.int64)
    inside = np.concatenate([[0], np.cumsum(period.astype(np.int64))])
    full = inside[span:] - inside[:-span] == span  # (T - span + 1,)
    return np.flatnonzero(full)[::stride].astype(np.int64)


def block_window_starts(period: np.ndarray, window: int, horizon: int, stride: int) -> np.ndarray:
    """Window starts aligned to each contiguous block of ``period`` (e.g. each test month): a
    block ``[a, b)`` gets ``a, a + stride, ...`` and, when those leave a tail uncovered, one last
    window ending at ``b`` (CSDI's test windows). With ``stride = 1`` this is
    :func:`window_starts`. The last window overlaps its predecessor; :func:`first_cover_cut` says
    which of its steps an earlier window already covered.

    Returns:
        (B,) int64 sorted start indices.
    """
    span = window + horizon
    edges = np.diff(np.concatenate([[0], period.astype(np.int8), [0]]))
    lo, hi = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # blocks [lo, hi)
    keep = hi - lo >= span
    out = []
    for a, b in zip(lo[keep], hi[keep], strict=True):  # one entry per block (a few months), not per window
        starts = np.arange(a, b - span + 1, stride)
        if starts[-1] + span < b:
            starts = np.append(starts, b - span)
        out.append(starts)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def first_cover_cut(starts: np.ndarray, span: int) -> np.ndarray:
    """(B,) for sorted ``starts``: how many leading steps of each window an earlier window already
    covers (0 for non-overlapping windows), so each cell is scored once, by the first window."""
    starts = np.asarray(starts, dtype=np.int64)
    if not len(starts):
        return starts
    prev_end = np.concatenate([starts[:1], np.maximum.accumulate(starts + span)[:-1]])  # the first: nothing before
    return np.clip(prev_end - starts, 0, span)


@dataclass
class Windows:
    """One batch of windows.

    Attributes:
        x: (B, W, N, C) inputs; x_mask: (B, W, N, C) bool.
        y: (B, H, N, C) targets; y_mask: (B, H, N, C) bool.
        x_time: (B, W, 6) and y_time: (B, H, 6) cyclic time encodings.
        start: (B,) index of each window's first step in the dataset.
    """

    x: torch.Tensor
    x_mask: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    x_time: torch.Tensor
    y_time: torch.Tensor
    start: torch.Tensor


class WindowDataset:
    """Windows over a fixed set of stations, materialised a batch at a time.

    Args:
        values: (T, N, C) float32 (already scaled, if scaling is wanted). A contiguous float32
            array is shared, not copied.
        mask: (T, N, C) bool.
        times: (T,) datetime64 for the cyclic encodings.
        starts: (B_total,) window start indices (see :func:`window_starts`).
        window, horizon: input and target lengths. ``horizon=0`` gives empty targets.
        scaler: standardise each batch as it is cut (``(v - mean) / std`` in float32, the same
            numbers as standardising ``values`` first) instead of holding a standardised copy of
            the whole series; None: ``values`` are used as they are.
    """

    def __init__(
        self,
        values: np.ndarray,
        mask: np.ndarray,
        times: np.ndarray,
        starts: np.ndarray,
        window: int,
        horizon: int,
        scaler=None,
    ):
        self.values = torch.as_tensor(np.ascontiguousarray(values), dtype=torch.float32)
        self._standardise = None
        if scaler is not None:
            self._standardise = (
                torch.as_tensor(np.asarray(scaler.mean, dtype=np.float32)),
                torch.as_tensor(np.asarray(scaler.std, dtype=np.float32)),
            )
        self.mask = torch.as_tensor(np.ascontiguousarray(mask), dtype=torch.bool)
        self.time_enc = torch.as_tensor(cyclic_time_encoding(times))
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.window, self.horizon = int(window), int(horizon)
        if len(self.starts) and int(self.starts.max()) + window + horizon > self.values.shape[0]:
            raise ValueError("a window runs past the end of the series")

    @classmethod
    def from_station_data(
        cls,
        data: StationData,
        stations: np.ndarray,
        starts: np.ndarray,
        window: int,
        horizon: int,
        values: np.ndarray | None = None,
    ) -> WindowDataset:
        """Windows over the node subset ``stations`` (values default to ``data.values``)."""
        vals = data.values if values is None else values
        return cls(vals[:, stations], data.mask[:, stations], data.times, starts, window, horizon)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx) -> Windows:
        return self.select(idx)

    def select(self, idx, columns=None) -> Windows:
        """The windows ``idx`` over the station columns ``columns`` only (default: every column):
        (B, W + H, len(columns), C) is cut directly from the series, never the full width first
        (station mini-batches of a large network). Same values as ``self[idx]`` then the columns."""
        starts = self.starts[idx].reshape(-1)  # (B,)
        span = torch.arange(self.window + self.horizon)
        t = starts[:, None] + span[None, :]  # (B, W + H)
        if columns is None:
            v, m = self.values[t], self.mask[t]  # (B, W+H, N, C)
        else:
            c = torch.as_tensor(np.asarray(columns), dtype=torch.long)[None, None, :]
            v, m = self.values[t[:, :, None], c], self.mask[t[:, :, None], c]  # (B, W+H, N_cols, C)
        if self._standardise is not None:
            mean, std = self._standardise
            v = (v - mean) / std
        e = self.time_enc[t]  # (B, W+H, 6)
        w = self.window
        return Windows(
            x=v[:, :w], x_mask=m[:, :w], y=v[:, w:], y_mask=m[:, w:], x_time=e[:, :w], y_time=e[:, w:], start=starts
        )

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield :class:`Windows` batches covering the dataset once."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for idx in order.split(batch_size):
            yield self[idx]
