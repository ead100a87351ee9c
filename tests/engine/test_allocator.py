"""The allocator mode: a large freed block stays in the heap with ``retain`` and goes back to the
system without it (read from glibc's own ``mallinfo2`` counters). Measured in a fresh process, so
that no earlier test's free heap space can serve the block."""

import json
import subprocess
import sys

import pytest

from stgraph.engine.allocator import _glibc, set_retain_memory

pytestmark = pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"),
                                reason="glibc >= 2.33 only (the option does nothing elsewhere)")

_PROBE = r"""
import ctypes, json, os
import torch
from stgraph.engine.allocator import _glibc, set_retain_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = _glibc()
libc.mallinfo2.restype = MallInfo2
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
info = lambda: {**{k: getattr(libc.mallinfo2(), k) for k in ("arena", "hblkhd", "fordblks")}, "rss": rss()}
size = 256 << 20  # far above glibc's largest mmap threshold (32 MB) and any free heap space here
out = {"modes": [set_retain_memory(False)], "system": [info()]}
block = torch.ones(size // 4)
out["system"].append(info())
del block
out["system"].append(info())
out["modes"].append(set_retain_memory(True))
out["retain"] = [info()]
block = torch.ones(size // 4)
out["retain"].append(info())
del block
out["retain"].append(info())
out["modes"].append(set_retain_memory(False))
out["after"] = info()
print(json.dumps(out))
"""


def test_retained_memory_stays_in_the_heap_and_system_mode_gives_it_back():
    got = json.loads(subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True).stdout)
    mb, size = 1 << 20, 256 << 20
    assert got["modes"] == ["system", "retain", "system"]
    before, during, freed = got["system"]
    assert during["hblkhd"] - before["hblkhd"] >= size  # system: served by its own mmap ...
    assert freed["hblkhd"] - before["hblkhd"] < mb  # ... and unmapped when freed
    before, during, freed = got["retain"]
    assert during["hblkhd"] - before["hblkhd"] < mb  # retain: from the heap, not a new mapping ...
    assert during["arena"] - before["arena"] >= size - mb
    assert freed["fordblks"] - before["fordblks"] >= size - mb  # ... and kept there when freed
    # switching back trims what the heap held: its free pages go back to the system (resident size;
    # the heap's extent, ``arena``, shrinks only when nothing is allocated above the block, which
    # depends on the process's other allocations and made an ``arena`` check flaky)
    assert got["after"]["rss"] < freed["rss"] - size // 2


def test_setting_the_same_mode_twice_is_harmless():
    try:
        assert set_retain_memory(True) == set_retain_memory(True) == "retain"
    finally:
        assert set_retain_memory(False) == set_retain_memory(False) == "system"
