"""Run folders and the environment record.

A run folder holds everything one experiment produced::

    config.yaml        resolved configuration (its presence marks a run folder; resume finds it)
    split.json         station / time split
    env.json           environment record (versions, git commit, seed, device)
    train_log.jsonl    one JSON line per epoch
    best.pt / last.pt  checkpoints
    identity.json      what the folder answers for: config, data checksums, code commit
                       (:mod:`stgraph.engine.run_identity`; written once, never rewritten)
    predictions.npz    test predictions
    metrics.json       final metrics (its presence marks a finished run; only training writes it)
    evaluation.json    the latest ``stgraph evaluate`` of the run (never marks it finished)

Checkpoints hold tensors, numbers and strings only and are read with ``weights_only=True``
(:func:`load_checkpoint`): a ``.pt`` file that carries pickled code is refused, never run.

Every file except the append-only log is written to a temporary file in the same folder and then
renamed with :func:`os.replace`, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = ["RunDir", "UnsafeCheckpointError", "atomic_torch_save", "environment_record", "load_checkpoint"]

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
ENV_FILE = "env.json"
LOG_FILE = "train_log.jsonl"

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


# --- environment record -------------------------------------------------------------------------


def _module_version(name: str) -> str | None:
    """Version of an importable module, or None when it does not import."""
    try:
        module = importlib.import_module(name)
    except Exception:  # a broken native extension raises OSError and friends, not only ImportError
        return None
    version = getattr(module, "__version__", None)
    return None if version is None else str(version)


def _package_root() -> Path:
    """The folder that contains the ``stgraph`` package (the repository root in a checkout)."""
    import stgraph

    return Path(stgraph.__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of a read-only git command in ``cwd``; None when git is absent or the command fails."""
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def environment_record(*, seed: int, knn_backend: str, device: str = "cpu") -> dict[str, Any]:
    """What a run needs to be repeated: versions, git commit, seed, device, host and time.

    Args:
        seed: The run's seed.
        knn_backend: Which k-nearest-neighbour implementation built the graph (e.g. ``"torch_cluster"``).
        device: Torch device the run used.

    Returns:
        A JSON-serialisable dict. ``git_commit`` is the 40-hex HEAD of the checkout that holds the
        ``stgraph`` package and ``git_dirty`` whether it has uncommitted changes; ``code_tree`` is
        the git tree of the ``stgraph`` package at HEAD (it changes with the code, not with a
        commit of results or documentation) and ``code_dirty`` whether the package has
        uncommitted changes; all are None when the package is not in a git checkout or git is
        not installed. Versions of packages that do
        not import are None.
    """
    import stgraph

    root = _package_root()
    head = _git(["rev-parse", "HEAD"], root)
    commit = head.strip() if head is not None and _HEX40.match(head.strip()) else None
    status = _git(["status", "--porcelain"], root) if commit is not None else None
    tree = _git(["rev-parse", "HEAD:stgraph"], root) if commit is not None else None
    tree = tree.strip() if tree is not None and _HEX40.match(tree.strip()) else None
    code_status = _git(["status", "--porcelain", "--", "stgraph"], root) if tree is not None else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_geometric": _module_version("torch_geometric"),
        "torch_cluster": _module_version("torch_cluster"),
        "numpy": np.__version__,
        "pandas": _module_version("pandas"),
        "stgraph": stgraph.__version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status.strip()),
        "code_tree": tree,
        "code_dirty": None if code_status is None else bool(code_status.strip()),
        "seed": seed,
        "knn_backend": knn_backend,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --- atomic writes ------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_write(path: Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> Path:
    with _atomic_open(path, mode) as f:
        write(f)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``.

    A crash mid-write leaves the previous checkpoint (if any) intact and no temporary file.

    Args:
        obj: Anything ``torch.save`` accepts (typically a dict of state dicts).
        path: Destination file.
    """
    return _atomic_write(Path(path), lambda f: torch.save(obj, f))


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds something other than tensors, numbers, strings and containers of them."""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by stgraph, refusing anything that is not plain data.

    ``torch.load(weights_only=True)`` unpickles only tensors, numbers, strings and containers;
    a file that names any other object (which a full unpickler would import and call) is refused
    before anything of it runs.

    Raises:
        UnsafeCheckpointError: the file carries objects other than plain data (or is not a
            checkpoint at all); the message names the file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip), EOFError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused: not a checkpoint of plain tensors and numbers ({first[:200]}). stgraph never "
            "loads code from a run folder; if this file came from someone else, do not trust the folder"
        ) from None
    if not isinstance(ckpt, dict):
        raise UnsafeCheckpointError(f"{path}: refused: a checkpoint is a dict, got {type(ckpt).__name__}")
    return ckpt


def _json_default(obj: Any) -> Any:
    """JSON encoding of numpy scalars / arrays and paths."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


# --- run folder ---------------------------------------------------------------------------------


class RunDir:
    """One experiment's output folder.

    Args:
        path: The folder (it need not exist yet; writing creates it).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self._path = Path(path)

    @classmethod
    def create(cls, root: str | os.PathLike[str], name: str) -> RunDir:
        """Make ``root/name`` and return it.

        An existing folder is reused when it holds ``config.yaml`` (that is how resume finds a run)
        or is empty.

        Args:
            root: Parent folder of all runs; created if missing.
            name: Run folder name, a single path component.

        Raises:
            ValueError: ``name`` is empty or not a single path component.
            FileExistsError: ``root/name`` exists but is not a run folder (a file, or a non-empty
                folder without ``config.yaml``).
        """
        if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
            raise ValueError(f"run name must be a single folder name (no '/', '..'), got {name!r}")
        path = Path(root) / name
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a folder; choose another run name")
            if not (path / CONFIG_FILE).exists() and any(path.iterdir()):
                raise FileExistsError(
                    f"{path} exists but is not a run folder (no {CONFIG_FILE}); choose another run name or remove it"
                )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self._path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self._path == other._path

    def __hash__(self) -> int:
        return hash(self._path)

    def __fspath__(self) -> str:
        return os.fspath(self._path)

    @property
    def path(self) -> Path:
        """The folder."""
        return self._path

    @property
    def config_path(self) -> Path:
        """``config.yaml``: the resolved configuration."""
        return self._path / CONFIG_FILE

    @property
    def split_path(self) -> Path:
        """``split.json``: the station / time split."""
        return self._path / SPLIT_FILE

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``: final metrics; present only once the run finished."""
        return self._path / METRICS_FILE

    @property
    def predictions_path(self) -> Path:
        """``predictions.npz``: test predictions."""
        return self._path / PREDICTIONS_FILE

    @property
    def best_path(self) -> Path:
        """``best.pt``: checkpoint with the best validation score."""
        return self._path / BEST_FILE

    @property
    def last_path(self) -> Path:
        """``last.pt``: latest checkpoint, for resume."""
        return self._path / LAST_FILE

    @property
    def identity_path(self) -> Path:
        """``identity.json``: config, data checksums and code commit the folder answers for."""
        return self._path / "identity.json"

    @property
    def env_path(self) -> Path:
        """``env.json``: the environment record."""
        return self._path / ENV_FILE

    @property
    def log_path(self) -> Path:
        """``train_log.jsonl``: one JSON line per logged record."""
        return self._path / LOG_FILE

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON to ``name`` inside the folder, atomically; returns the path.

        Args:
            name: File name inside the folder, e.g. ``"metrics.json"``.
            obj: JSON-serialisable object (numpy scalars and arrays are converted to lists / numbers).
        """
        text = json.dumps(obj, indent=2, default=_json_default) + "\n"
        return _atomic_write(self._path / name, lambda f: f.write(text), mode="w")

    def read_json(self, name: str) -> Any:
        """Read the JSON file ``name`` inside the folder.

        Args:
            name: File name inside the folder.
        """
        with open(self._path / name, encoding="utf-8") as f:
            return json.load(f)

    def append_log(self, record: dict[str, Any]) -> None:
        """Append one record as a single JSON line to ``train_log.jsonl``.

        Args:
            record: JSON-serialisable dict.
        """
        line = json.dumps(record, default=_json_default)
        self._path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def read_log(self) -> list[dict[str, Any]]:
        """All records of ``train_log.jsonl`` in order; [] when there is none.

        A truncated last line (a crash mid-append) is skipped; a bad line elsewhere is an error.
        """
        if not self.log_path.exists():
            return []
        lines = [(i, s) for i, s in enumerate(self.log_path.read_text(encoding="utf-8").splitlines(), 1) if s.strip()]
        records = []
        for n, (lineno, line) in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                if n == len(lines) - 1:
                    break
                raise ValueError(f"{self.log_path}: line {lineno} is not valid JSON: {e}") from None
        return records

    def save_predictions(self, file: str | None = None, /, **arrays: Any) -> Path:
        """Save named arrays to ``predictions.npz`` (or ``file`` in the folder; compressed,
        atomically); returns the path.

        Args:
            file: File name inside the folder; None = ``predictions.npz``.
            **arrays: Name -> array-like.
        """
        path = self.predictions_path if file is None else self._path / file
        return _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    def load_predictions(self) -> dict[str, np.ndarray]:
        """The arrays saved by :meth:`save_predictions`."""
        with np.load(self.predictions_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def is_finished(self) -> bool:
        """True once ``metrics.json`` exists."""
        return self.metrics_path.exists()
