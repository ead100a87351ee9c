"""Which optional native backends are importable, checked once.

Every feature that needs one calls :func:`require_torch_cluster`, which raises an ImportError
with the install command, so a missing extension fails at construction, not deep in a forward.
"""

from __future__ import annotations

import functools

TORCH_CLUSTER_INSTALL = "pip install --no-build-isolation torch-cluster  (after torch; or `make setup`)"


@functools.cache
def has_torch_cluster() -> bool:
    """True when ``torch_cluster`` imports against the installed torch."""
    try:
        import torch_cluster  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_torch_cluster(feature: str) -> None:
    if not has_torch_cluster():
        raise ImportError(
            f"{feature} needs torch-cluster, which is not importable. Install it with: {TORCH_CLUSTER_INSTALL}"
        )
