"""Keep freed memory in the process (glibc malloc) so that large tensors do not page-fault anew at
every step.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed, so a model whose step allocates and frees tensors of
hundreds of megabytes (SPIN's attention over (window × window × edges) pairs: 170 MB each at
AQI-36 size) has the kernel zero every page of them again at every step. On this project's
machines that page-faulting was most of SPIN's step time: 12.1 s a step against 2.7 s with the
memory retained (``benchmarks/results/step_time.md``, ``aqi36-spin``, one thread, with and without
``--retain-memory``). Retained memory is reused by later allocations instead; the price is a
higher peak resident size (freed blocks stay in the heap and fragment it: 4.3 against 6.7 GB
there), which is why it is an option (``train.retain_memory``) rather than the default. It changes
no number a run computes.

:func:`set_retain_memory` sets the mode for the whole process; a run sets it from its config when
it starts, so in a worker that runs several runs one after another each gets its own setting
(switching back releases what the heap holds: ``malloc_trim``). On a C library other than glibc
it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["set_retain_memory"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# glibc's defaults, restored when retention is switched off again
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_NEVER_TRIM = 2**31 - 1

_state = {"retain": False}


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


def set_retain_memory(retain: bool) -> str:
    """Retain freed memory in the heap (``retain=True``: no ``mmap`` for large blocks, no trimming)
    or give it back to the system as glibc does by default. Returns what is in force:
    ``"retain"``, ``"system"`` or ``"unsupported"`` (not glibc: nothing was changed)."""
    libc = _glibc()
    if libc is None:
        return "unsupported"
    if retain and not _state["retain"]:
        ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        if not ok:
            raise OSError("set_retain_memory: glibc's mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")
        _state["retain"] = True
    elif not retain and _state["retain"]:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
        _state["retain"] = False
    return "retain" if _state["retain"] else "system"
