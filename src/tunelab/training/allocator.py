"""How the C allocator holds a training process's memory.

A training step allocates and frees hundreds of megabytes of activations of changing sizes
(batches differ in length). glibc adjusts itself to that: each large block freed raises its
mmap threshold (up to 32 MB) and its trim threshold to twice that, so after the first steps the
freed activations stay in the heap and the free memory at its top is kept rather than given
back. Setting the mmap threshold once turns that adjustment off: blocks of 32 MB or more are
mapped and unmapped, and the heap's free top goes back to the system as it would at start-up.

Measured on the default model (8 steps of batch 4, bf16 base, one thread; docs/performance.md):
peak RSS 3,366 → 3,057 MB, CPU time 25.2 → 22.8 s (fewer page faults on reused heap). The
settings that return more (``malloc_trim`` after every step, a zero trim threshold) cost up to
twice the step's CPU time in page faults and are not used.

A run short of memory (``memory.py``: it recomputes activations to fit a budget) fixes the
threshold at 256 KB instead: its blocks are one layer's or one chunk's worth, which a 32 MB
threshold leaves in the heap after use, and batches of changing lengths leave it fragmented.
Measured on the default model with a 200 MB budget (24 examples, batch 4, one epoch): peak RSS
959–978 MB with 1 MB, 846–854 MB with 256 KB or 128 KB (free memory held in the heap 113–138
→ 10–16 MB). It costs speed, paid in page faults: 60 examples on a quiet 2-core machine, peak
1,227 / 1,035 / 924 MB and 163 / 107 / 87 real tokens/s with 32 MB / 1 MB / 256 KB (system
time 2 / 33 / 65 s; docs/performance.md "Memory"). A run short of memory is one that would
not fit otherwise, so it takes the memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 2**20
SHORT_OF_MEMORY_THRESHOLD_BYTES = 256 * 2**10

_fixed: int | None = None  # the threshold this process set last


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes in this process; False where the C
    library is not glibc or refuses (nothing changes then)."""
    global _fixed
    if _fixed == threshold:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        return False
    _fixed = threshold
    return True
