"""training/allocator.py: a training process sets glibc's mmap threshold, and the setting
decides which blocks are mapped (and given back when freed) rather than kept in the heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from conftest import MALLINFO_PROBE

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's (the setting is skipped elsewhere, by design)")

_PROBE = MALLINFO_PROBE + """
from tunelab.training import allocator as a

assert a.fix_mmap_threshold() is True
assert a.fix_mmap_threshold() is True  # the same setting again changes nothing
print(mapped_on_its_own(4 * 2**20), mapped_on_its_own(64 * 2**20))
assert a.fix_mmap_threshold(a.SHORT_OF_MEMORY_THRESHOLD_BYTES) is True
print(mapped_on_its_own(1 * 2**20), mapped_on_its_own(128 * 2**10))
assert a.fix_mmap_threshold() is True  # the next run that has room sets 32 MB again
print(mapped_on_its_own(4 * 2**20))
"""


def test_the_threshold_decides_which_blocks_are_mapped():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # 32 MB: a 4 MB block stays in the heap, a 64 MB one is mapped; 256 KB (a run short of
    # memory): a 1 MB block is mapped (given back when freed), a 128 KB one is not.
    assert out.stdout.split("\n")[:3] == ["False True", "True False", "False"], out.stdout
