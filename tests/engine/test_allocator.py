"""The allocator mode: a large freed block stays in the heap with ``retain`` and goes back to the
system without it (read from glibc's own ``mallinfo2`` counters)."""

import ctypes

import pytest
import torch

from stgraph.engine.allocator import _glibc, set_retain_memory

MB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes' own declaration)
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]


def _mallinfo() -> _MallInfo2:
    libc = _glibc()
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


pytestmark = pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"),
                                reason="glibc >= 2.33 only (the option does nothing elsewhere)")


def test_retained_memory_stays_in_the_heap_and_system_mode_gives_it_back():
    try:
        assert set_retain_memory(False) == "system"
        before = _mallinfo().hblkhd
        block = torch.ones(64 * MB // 4)  # 64 MB: above glibc's largest mmap threshold
        assert _mallinfo().hblkhd - before >= 64 * MB  # served by its own mmap
        del block
        assert _mallinfo().hblkhd - before < MB  # and unmapped when freed

        assert set_retain_memory(True) == "retain"
        before = _mallinfo()
        block = torch.ones(64 * MB // 4)
        assert _mallinfo().hblkhd - before.hblkhd < MB  # from the heap, not a new mapping
        del block
        after = _mallinfo()
        assert after.fordblks - before.fordblks >= 64 * MB - MB  # freed, kept for the next step
        assert after.arena >= before.arena + 64 * MB - MB
    finally:
        assert set_retain_memory(False) == "system"
    assert _mallinfo().arena < after.arena - 32 * MB  # switching back trims what the heap held


def test_setting_the_same_mode_twice_is_harmless():
    try:
        assert set_retain_memory(True) == set_retain_memory(True) == "retain"
    finally:
        assert set_retain_memory(False) == set_retain_memory(False) == "system"
