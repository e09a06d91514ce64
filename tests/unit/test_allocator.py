"""training/allocator.py: a training process fixes glibc's mmap threshold once."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's (the setting is skipped elsewhere, by design)")
def test_a_training_process_fixes_the_mmap_threshold_once():
    code = (
        "from tunelab.training import allocator as a\n"
        "assert a.fix_mmap_threshold() is True\n"
        "assert a.fix_mmap_threshold() is True\n"  # the second call changes nothing
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
