"""The code version a benchmark program ran, as one line for its results file: the commit, the git
tree of the ``stgraph`` package, and whether either had uncommitted changes when the program started
(:func:`stgraph.engine.run_folder.environment_record`)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stgraph.engine.run_folder import environment_record  # noqa: E402


@functools.lru_cache(maxsize=1)
def code_record() -> dict:
    """``git_commit``, ``git_dirty``, ``code_tree``, ``code_dirty``, read once (the code at start)."""
    env = environment_record(seed=0, knn_backend="")
    return {k: env.get(k) for k in ("git_commit", "git_dirty", "code_tree", "code_dirty")}


def code_line() -> str:
    """``Code: git `abc1234` (stgraph tree `def5678`), clean.`` — or which part was dirty."""
    c = code_record()
    commit, tree = (c["git_commit"] or "unknown")[:7], (c["code_tree"] or "unknown")[:7]
    state = "clean"
    if c["git_dirty"]:
        state = "uncommitted changes in stgraph/" if c["code_dirty"] else "uncommitted changes outside stgraph/"
    return f"Code: git `{commit}` (stgraph tree `{tree}`), {state}."
