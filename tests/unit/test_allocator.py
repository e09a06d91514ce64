"""allocator.py: a training process sets glibc's mmap threshold, and the setting
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
from tunelab import allocator as a

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


# -- jemalloc for the processes that train ----------------------------------------------------

_RESTART = """
from tunelab.allocator import restart_with_jemalloc, using_jemalloc
print("before", using_jemalloc(), flush=True)
restart_with_jemalloc()
print("after", using_jemalloc())
"""


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "TUNELAB_ALLOCATOR", "TUNELAB_ALLOCATOR_RESTARTED",
                        "LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")}
    return {**env, **extra}


def _need_jemalloc() -> None:
    from tunelab import allocator as a

    assert a.jemalloc_library(), (
        "jemalloc is not installed; `make test` installs it (scripts/system-deps.sh: "
        "libjemalloc2)")


def test_a_process_restarts_itself_once_with_jemalloc():
    """The first run prints before the restart; the restarted one has jemalloc mapped and does
    not restart again."""
    _need_jemalloc()
    out = subprocess.run([sys.executable, "-c", _RESTART], capture_output=True, text=True,
                         timeout=60, env=_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["before False", "before True", "after True"]


def test_the_system_allocator_when_asked():
    out = subprocess.run([sys.executable, "-c", _RESTART], capture_output=True, text=True,
                         timeout=60, env=_env(TUNELAB_ALLOCATOR="system"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["before False", "after False"]


def test_preload_env_for_a_worker_process():
    """What `tunelab serve` starts its workers with: jemalloc preloaded, a user's own preload
    kept after it; nothing changed where it is preloaded already or the system's is asked."""
    from tunelab import allocator as a

    _need_jemalloc()
    env = a.preload_env(_env(LD_PRELOAD="libmine.so"))
    assert env["LD_PRELOAD"] == f"{a.jemalloc_library()} libmine.so"
    assert a.preload_env(env) is None
    assert a.preload_env(_env(TUNELAB_ALLOCATOR="system")) is None
    started = subprocess.run(
        [sys.executable, "-c", "from tunelab.allocator import using_jemalloc as u; print(u())"],
        capture_output=True, text=True, timeout=60, env=a.preload_env(_env()))
    assert started.stdout.strip() == "True", started.stderr


def test_tune_says_which_allocator_trains(tmp_path, models_dir, tiny_base):
    """`tunelab tune`, run as a user runs it: restarted with jemalloc, it says so; with
    TUNELAB_ALLOCATOR=system, it says that instead. The same steps either way."""
    import json

    _need_jemalloc()
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text_input": f"add {i} and {i + 1}",
                                        "output": str(2 * i + 1)}) + "\n" for i in range(20)))
    losses = {}
    for mode, line in (("auto", "memory: jemalloc (it gives freed memory back"),
                       ("system", "memory: the C library's allocator, as "
                                  "TUNELAB_ALLOCATOR=system asks")):
        env = _env(TUNELAB_HOME=str(tmp_path / "home"), COLUMNS="200", TUNELAB_ALLOCATOR=mode,
                   TUNELAB_EXTRA_MODELS=json.dumps({"tiny": str(tiny_base.path)}))
        r = subprocess.run([sys.executable, "-m", "tunelab.cli", "tune", str(data),
                            "--base-model", "tiny", "--epochs", "1", "--learning-rate", "0.02",
                            "-o", f"out-{mode}"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert line in " ".join(r.stdout.split()), r.stdout
        manifest = json.loads((tmp_path / f"out-{mode}" / "manifest.json").read_text())
        losses[mode] = [s["mean_loss"] for s in manifest["snapshots"]]
    assert losses["auto"] == losses["system"]


# -- oneDNN's kernel caches ---------------------------------------------------------------------

_KERNELS = MALLINFO_PROBE + """
import os, sys
import tunelab  # caps the caches where the environment does not
print(os.environ["LRU_CACHE_CAPACITY"], os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"])
import torch

def in_use():  # the C heap's live bytes (its free memory is not the caches')
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd

w = torch.randn(1536, 576).to(torch.bfloat16)
x = torch.randn(64, 576).to(torch.bfloat16) @ w.T  # the first kernel and the library's set-up
before = in_use()
for rows in range(100, 400):  # a row count per step, as a training step's batches have
    torch.randn(rows, 576).to(torch.bfloat16) @ w.T
print((in_use() - before) // 2**20, int(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
"""


def _kernels(**env: str) -> tuple[list[str], int, bool]:
    out = subprocess.run([sys.executable, "-c", _KERNELS], capture_output=True, text=True,
                         timeout=300, env=_env(**env))
    assert out.returncode == 0, out.stderr
    caps, grown = out.stdout.split("\n")[:2]
    mb, onednn = grown.split()
    return caps.split(), int(mb), onednn == "1"


def test_importing_tunelab_caps_the_kernel_caches():
    caps, capped, onednn = _kernels()
    assert caps == ["32", "32"]
    # 300 new shapes: ~0.6 MB a kept kernel; capped, at most 32 of them stay
    assert capped < 40
    user, uncapped, _ = _kernels(LRU_CACHE_CAPACITY="1024",
                                 ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")
    assert user == ["1024", "1024"]  # a value the user set is kept
    if onednn:  # bf16 products run through oneDNN on this CPU: uncapped, every shape stays
        assert uncapped > 2 * capped + 60, (capped, uncapped)
