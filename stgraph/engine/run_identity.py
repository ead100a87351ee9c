"""What a run folder answers for: its resolved config, its data and its code.

``identity.json`` is written once, when a run folder is first made, and never rewritten::

    {"config": {...flat resolved config...}, "config_sha256": "...",
     "data": {"<file>": "<sha256>", ...}, "data_sha256": "...",
     "code": {"git_commit": "...", "git_dirty": false, "stgraph": "0.x"}}

The data part is the dataset's file checksums (a built-in card's, a user card's as recorded when
it was added, or an inline file's own), or, for data handed over in memory without files, a hash
of its arrays. Before a run folder is reused, :func:`compare` names every difference:

- another **config** (any key but ``name``): refused, always — a folder answers for one config;
- other **data**: refused — a finished run is *stale* (it was scored on data that is no longer
  there, e.g. a dataset re-added with ``--force``), an unfinished one would resume on other data;
- another **code version** (the git tree of the ``stgraph`` package, so a commit of results or
  documentation is not one): an unfinished run refuses to resume (its checkpoints came from other
  code); a finished run stays valid (its result records the commit it came from).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from stgraph.datasets.cards import all_cards
from stgraph.datasets.resolve import ChecksumError, sha256_of
from stgraph.datasets.user_cards import user_cards
from stgraph.engine.config import ExperimentConfig, config_to_dict

__all__ = ["IDENTITY_FILE", "RunIdentityError", "StaleRunError", "compare", "data_checksums", "flat_config",
           "make_identity"]  # fmt: skip

IDENTITY_FILE = "identity.json"
IGNORED_KEYS = ("name",)  # the run's label, not what it computes


class RunIdentityError(ValueError):
    """A run folder holds a run of another config, data or code than the one asked for."""


class StaleRunError(RunIdentityError):
    """A finished run was computed on data that has changed since."""


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as ``{"train.lr": 1e-3, ...}`` (JSON-ready; ``name`` left out)."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return {k: v for k, v in flat(config_to_dict(cfg)).items() if k not in IGNORED_KEYS}


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def array_checksum(data) -> str:
    """SHA-256 of a :class:`StationData`'s values, mask, times, station ids and channels."""
    h = hashlib.sha256()
    for a in (data.values, data.mask, np.asarray(data.times).astype("datetime64[ns]").view(np.int64)):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    h.update(json.dumps([list(data.station_ids), list(data.channels)]).encode())
    return h.hexdigest()


def data_checksums(data) -> dict[str, str]:
    """The data's file checksums (``data.meta["sha256"]``, set by every loader that reads files),
    else ``{"arrays": <hash of the arrays>}``."""
    files = (data.meta or {}).get("sha256")
    if files:
        return {str(k): str(v) for k, v in files.items() if v}
    return {"arrays": array_checksum(data)}


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_of(Path(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, modification time, size) in this process."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def expected_data_checksums(cfg: ExperimentConfig) -> dict[str, str] | None:
    """The checksums the config's data has *now*, without parsing the data: a built-in card's (its
    loader verifies the files against them), a user card's (the files are checked against the card,
    as loading does: a changed file is the card's ``ChecksumError``), or the inline files' own.
    None when they cannot be known without loading the data."""
    dc = cfg.data
    if dc.long:
        paths = {"long": Path(dc.long), "stations": Path(dc.stations) if dc.stations else None}
        if not all(p is None or p.is_file() for p in paths.values()):
            return None
        return {str(p): file_sha256(p) for p in paths.values() if p is not None}
    key = dc.dataset.strip().lower()
    cards = all_cards()
    if key.replace("_", "-") in cards:
        return {f.path: f.sha256 for f in cards[key.replace("_", "-")].files}
    user = user_cards().get(key)
    if user is None:
        return None
    for role in ("long", "stations"):
        path, recorded = getattr(user, role), getattr(user, f"{role}_sha256")
        if path and Path(path).is_file() and file_sha256(Path(path)) != recorded:
            raise ChecksumError(
                f"dataset '{user.name}': {path} changed since it was added. If the change is intended, re-add it: "
                f"{user.readd_command()}"
            )
    return {k: v for k, v in {"long": user.long_sha256, "stations": user.stations_sha256}.items() if v}


def make_identity(cfg: ExperimentConfig, checksums: dict[str, str], env: dict[str, Any]) -> dict[str, Any]:
    """The identity record of a new run folder."""
    config = flat_config(cfg)
    return {
        "config": config,
        "config_sha256": _sha256_json(config),
        "data": checksums,
        "data_sha256": _sha256_json(checksums),
        "code": {"git_commit": env.get("git_commit"), "git_dirty": env.get("git_dirty"),
                 "code_tree": env.get("code_tree"), "code_dirty": env.get("code_dirty"),
                 "stgraph": env.get("stgraph")},  # fmt: skip
    }


def config_diff(saved: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs (JSON-normalised). A key the saved
    config does not have because it was added to the schema later is no difference when ``want``
    holds its default: an option is added with the old behaviour as its default."""
    saved, want = json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(want, default=str))
    defaults = _schema_defaults()
    keys = sorted(
        k for k in saved.keys() | want.keys()
        if k not in IGNORED_KEYS and saved.get(k) != want.get(k)
        and not (k not in saved and k in defaults and want.get(k) == defaults[k])
    )  # fmt: skip
    return [f"{k}: {saved.get(k)!r} -> {want.get(k)!r}" for k in keys]


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict[str, Any]:
    """Every schema key's default, flat and JSON-normalised."""
    return json.loads(json.dumps(flat_config(ExperimentConfig()), default=str))


def _fresh(folder: Path) -> str:
    return f"to start fresh, give another run name (--name / --out) or delete {folder}"


def check_config(folder: Path, saved: dict[str, Any], cfg: ExperimentConfig) -> None:
    """Refuse a folder whose saved flat config differs from ``cfg``, naming the differing keys."""
    diff = config_diff(saved, flat_config(cfg))
    if diff:
        shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise RunIdentityError(f"{folder} holds a run of another configuration ({shown}); {_fresh(folder)}")


def compare(
    folder: Path, identity: dict[str, Any], cfg: ExperimentConfig, checksums: dict[str, str] | None,
    code_version: str | None, *, finished: bool,
) -> None:  # fmt: skip
    """Refuse to reuse ``folder`` (identity ``identity``) for ``cfg`` on data ``checksums`` at
    ``code_version`` (the package's git tree; None: not compared), per the rules in the module
    docstring. ``checksums=None``: not known, not compared."""
    check_config(folder, identity.get("config", {}), cfg)
    if checksums is not None and identity.get("data") and identity["data"] != checksums:
        old, new = identity["data"], checksums
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        shown = ", ".join(f"{k} ({str(old.get(k))[:12]}… -> {str(new.get(k))[:12]}…)" for k in changed[:4])
        if finished:
            raise StaleRunError(
                f"{folder} is stale: its results were computed on data that has changed since ({shown}); "
                f"{_fresh(folder)}"
            )
        raise RunIdentityError(f"{folder}: the run's data has changed since it started ({shown}); {_fresh(folder)}")
    code = identity.get("code") or {}
    saved = code.get("code_tree") or code.get("git_commit")
    if not finished and saved and code_version and saved != code_version:
        raise RunIdentityError(
            f"{folder}: the run was started by another version of the stgraph code (package tree {saved[:10]}, "
            f"commit {str(code.get('git_commit'))[:10]}; this is {code_version[:10]}); resuming would mix "
            f"checkpoints of two code versions; {_fresh(folder)}"
        )
