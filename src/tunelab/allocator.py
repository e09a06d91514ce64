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

**jemalloc where the system has it.** glibc's heap only gives back free memory at its top, and
a step's tensors change size with every batch, so the blocks a step frees sit between blocks
that outlive it: in a 100-example ``tunelab tune`` glibc held ~350 MB free between steps.
jemalloc sorts blocks by size class and gives pages a step no longer needs back to the system
after a while (its decay), which glibc cannot do for the middle of its heap. Measured on that
tune (AMD EPYC, 2 threads, bf16 base; docs/performance.md "jemalloc"): peak RSS 1,357 → 1,130 MB
(two runs each), the same speed within the machine's noise (385 against 405 real tokens/s on
average); mimalloc (pip's ``cmeel-mimalloc``) peaked at 1,170–1,206 MB at 346–382 tokens/s. An
allocator is chosen when a process starts, so the processes that train -- ``tunelab tune`` (a
local run), ``tunelab demo``, ``tunelab worker``, ``python -m tunelab.jobs`` and the workers
``tunelab serve`` starts -- restart themselves once, before importing anything heavy, with
jemalloc preloaded (``restart_with_jemalloc``) where the dynamic linker finds it (Debian's
``libjemalloc2``; ``find_library``, no path of ours) and ``TUNELAB_ALLOCATOR`` is ``auto`` (the
default; ``system`` keeps the C library's). Where it is not found nothing changes, and
``tunelab tune`` says how to get it. In a run short of memory jemalloc held as little as glibc
with the 256 KB threshold below (949 against 938 MB) at 1.6× its speed (269 against 164 real
tokens/s: it reuses the pages it keeps where glibc maps every freed block anew), so nothing
else changes under jemalloc.

**Bounded kernel caches.** A bf16 matmul runs through oneDNN, and each new shape gets a kernel
that two caches keep: torch's (ideep's ``LRU_CACHE_CAPACITY``) and oneDNN's own
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``), hundreds of shapes each by default, ~0.6 MB a shape
together. A training
step's row length changes with every batch, and so do a served prompt's, so both caches fill
with shapes that never come back: +50-80 MB in a 100-example tune, the "heap growth over the
first steps" of earlier measurements (found with jemalloc's heap profile: ``dnnl::impl::malloc``
under ``primitive_desc_create``). A step uses ~7 shapes per row length (its prefix rows'
included, ~15), so ``bound_kernel_caches`` keeps 32 of each: the growth stops, and a shape that
does come back within a step still hits (docs/performance.md "Kernel caches"). Both are read
at the first matmul, so the package sets them when it is imported (``tunelab/__init__.py``);
a value the user set is kept.

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
import os
import sys
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 2**20
SHORT_OF_MEMORY_THRESHOLD_BYTES = 256 * 2**10

_fixed: int | None = None  # the threshold this process set last

# Kernels kept per cache (module docstring, "Bounded kernel caches"): torch's and oneDNN's.
KERNEL_CACHE_ENTRIES = 32
KERNEL_CACHE_ENVS = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def bound_kernel_caches() -> None:
    """Cap oneDNN's kernel caches at ``KERNEL_CACHE_ENTRIES`` shapes each, where the user has
    not set them; before the process's first matmul (they are read once)."""
    for name in KERNEL_CACHE_ENVS:
        os.environ.setdefault(name, str(KERNEL_CACHE_ENTRIES))


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


ALLOCATOR_ENV = "TUNELAB_ALLOCATOR"
ALLOCATORS = ("auto", "system")
_RESTARTED_ENV = "TUNELAB_ALLOCATOR_RESTARTED"  # set on the restart: never a second one


def jemalloc_library() -> str | None:
    """The name the dynamic linker knows jemalloc by (``libjemalloc.so.2``), None without it."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("jemalloc")


def allocator_mode(env: Mapping[str, str]) -> str:
    mode = env.get(ALLOCATOR_ENV, "auto").strip().lower() or "auto"
    return mode if mode in ALLOCATORS else "auto"


def preload_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` for a process to start with jemalloc preloaded; None where it would not change
    (the system's allocator asked for, jemalloc not found, or preloaded already)."""
    current = env.get("LD_PRELOAD", "")
    if allocator_mode(env) != "auto" or "jemalloc" in current:
        return None
    library = jemalloc_library()  # find_library asks ldconfig: last, only when needed
    if library is None:
        return None
    return {**env, "LD_PRELOAD": f"{library} {current}".strip()}


def using_jemalloc() -> bool:
    """Whether this process allocates with jemalloc (it is mapped into it)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libjemalloc" in line for line in maps)
    except OSError:
        return False


def restart_with_jemalloc() -> None:
    """Start this process again, the same command, with jemalloc preloaded, where
    ``preload_env`` says to (module docstring); call before importing torch. Returns where it
    does not restart (or cannot: the command then runs with the C library's allocator)."""
    if os.environ.get(_RESTARTED_ENV) or using_jemalloc():
        return
    env = preload_env(os.environ)
    if env is None:
        return
    env[_RESTARTED_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return


def allocator_note() -> str | None:
    """One line for ``tunelab tune``: which allocator holds the training's memory, and where
    jemalloc is not used, why or how to get it; None off Linux."""
    if using_jemalloc():
        return ("jemalloc (it gives freed memory back between steps; "
                f"{ALLOCATOR_ENV}=system keeps the C library's allocator)")
    if not sys.platform.startswith("linux"):
        return None
    if allocator_mode(os.environ) == "system":
        return f"the C library's allocator, as {ALLOCATOR_ENV}=system asks"
    if jemalloc_library() is None:
        return ("the C library's allocator; with jemalloc installed (Debian and Ubuntu: "
                "libjemalloc2) training peaks ~15% lower, used by itself")
    return "the C library's allocator (jemalloc is installed but this process did not load it)"
