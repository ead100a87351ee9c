"""One writer per run folder: an exclusive lock held while a process trains or evaluates a run.

The lock is an OS file lock (``flock``) on ``PARENT/.NAME.lock`` beside the run folder ``PARENT/NAME``;
the holder writes its PID, host and start time into the file. The OS releases the lock when its
process ends however it ends (SIGKILL included), so a lock whose process is gone is simply taken
over by the next writer; a live holder makes a second writer fail with :class:`RunLockedError`
naming its PID. ``stgraph train``, ``stgraph evaluate`` and every run of ``stgraph benchmark``
take the same lock. The lock is re-entrant within a process (a benchmark worker holds it around
``run_experiment``, which takes it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RunLockedError", "lock_path", "run_lock"]

_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


class RunLockedError(RuntimeError):
    """Another live process is writing this run folder."""


def lock_path(folder: str | os.PathLike[str]) -> Path:
    """``PARENT/.NAME.lock`` of the run folder ``PARENT/NAME``."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _holder(path: Path) -> str:
    """Who holds the lock, as its file says (best effort)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    return f"process {info['pid']} on {info.get('host', '?')} (since {info.get('since', '?')})"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run folder's lock for the duration of the ``with`` block.

    Args:
        folder: The run folder (it need not exist yet; its parent is created).

    Raises:
        RunLockedError: another live process holds the lock; the message names its PID.
    """
    path = lock_path(folder).resolve()
    if path in _HELD:  # re-entrant within this process
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(
                    f"{Path(folder)} is being written by {_holder(path)}; wait for it to finish or stop it "
                    f"(the lock is {path}; it is released when that process ends)"
                ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        _HELD[path] = 1
        try:
            yield path
        finally:
            del _HELD[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
