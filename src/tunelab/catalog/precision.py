"""The precision a base model's frozen weights are held in: chosen by measurement, not assumed.

CPUs differ more than their names suggest. On an Intel Xeon with AMX a bf16 matmul runs several
times faster than fp32; on an AVX2-only CPU it runs up to ~100x *slower* (emulated); with
AVX512-BF16 but no AMX it is slower too. So on a CPU, ``auto`` times one matmul of the model's own
shapes in both precisions (well under a second) and holds the frozen base in bf16 only where bf16
is clearly faster. The answer is cached per CPU model, torch version and thread count in the data
dir, so the probe runs once per machine, not once per process (a probe taken while other work
keeps the cores busy is used but not cached, and taken again next time).

Only the frozen base is bf16. The LoRA weights, their gradients, the optimizer state and the loss
stay fp32, and the base's linear layers return fp32 results (catalog/wide_linear.py), so an
adapter's update is added at full precision rather than rounded to bf16: that is what keeps the
training loss of the bf16 path with fp32's (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tunelab.fsutil import atomic_write_text

# "bf16-stored": fp32 products of weights kept in bf16 (what "auto" takes where bf16 products
# are not faster and memory is short); "fp32": fp32 weights, exactly as the files hold them
CHOICES = ("auto", "fp32", "bf16", "bf16-stored")
# bf16 must beat fp32 by this factor to be chosen: a marginal win is not worth the rounding.
CLEAR_WIN = 1.3
# The probe's matmul: this many tokens against a (hidden x intermediate) weight, the shape of the
# MLP projections that dominate a small model's step.
PROBE_TOKENS = 256
PROBE_BUDGET_S = 0.6
CACHE_FILE = "precision.json"
MAX_CONFIG_BYTES = 1_000_000  # a model's config.json is a few KB
# Where bf16 products are not faster, the weights are kept in bf16 when their fp32 copy would
# take more than this share of the memory available (the default model's 0.54 GB: below
# ~4.3 GB available), since a job that fits matters more than its last few percent of speed.
STORE_SHARE = 0.125


def projection_shape(config: Any) -> tuple[int, int]:
    """(hidden, intermediate) of a model's MLP projections, the shape the probe times: from a
    transformers config or a ``config.json`` read as a dict (a multimodal model's text part)."""
    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    text = get(config, "text_config") or config
    hidden = int(get(text, "hidden_size") or 512)
    return hidden, int(get(text, "intermediate_size") or 4 * hidden)


def folder_shape(folder: Path) -> tuple[int, int] | None:
    """The projection shape of the model in ``folder`` from its ``config.json`` (read as JSON
    data, bounded), or None where there is no readable one."""
    path = folder / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        config = json.loads(path.read_text())
        return projection_shape(config) if isinstance(config, dict) else None
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Precision:
    """What the frozen base weights are held in, and why."""

    name: str  # "fp32" | "bf16": the dtype the frozen base's products run in
    reason: str  # one line for `tunelab models` / `tunelab tune` and the manifest
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    # what the frozen linear layers' weights are kept in: "bf16" with fp32 products is half
    # the memory for the cost of widening each weight before its product (wide_linear.py)
    storage: str | None = None

    @property
    def dtype(self):
        import torch

        return torch.bfloat16 if self.name == "bf16" else torch.float32

    @property
    def stored(self) -> bool:
        """Whether the weights are kept in bf16 for fp32 products."""
        return self.name == "fp32" and self.storage == "bf16"

    @property
    def label(self) -> str:
        """In a few words, for `tunelab models` and `tunelab tune`."""
        return "fp32 products of bf16-stored weights" if self.stored else self.name

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name (what the probe's cache is keyed by)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide bf16's speed, for benchmark reports: AMX, AVX512-BF16, AVX2."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]


def _operands(dtype, tokens: int, hidden: int, inner: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w = torch.randn(inner, hidden, generator=g).to(dtype)
    x @ w.T  # warm-up: oneDNN picks and caches its kernel on the first call
    return x, w


def probe(hidden: int, inner: int) -> Precision:
    """Time fp32 against bf16 for a (hidden x inner) projection on this CPU.

    The two are timed in turns and the fastest of each kept, so a burst of load from another
    process slows both alike instead of deciding the answer. An emulated bf16 matmul can be
    ~100x slower: the budget is checked after every turn, so the probe stays short there too.
    """
    import torch

    pairs = {name: _operands(dt, PROBE_TOKENS, hidden, inner)
             for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    best = {"fp32": float("inf"), "bf16": float("inf")}
    deadline = time.perf_counter() + PROBE_BUDGET_S
    for _ in range(15):
        for name, (x, w) in pairs.items():
            t0 = time.perf_counter()
            x @ w.T
            best[name] = min(best[name], time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    fp32, bf16 = best["fp32"] * 1e3, best["bf16"] * 1e3
    if bf16 * CLEAR_WIN <= fp32:
        why = f"bf16 matmuls measured {fp32 / bf16:.1f}x faster than fp32 on this CPU"
        return Precision("bf16", why, round(fp32, 3), round(bf16, 3))
    why = f"bf16 matmuls are not clearly faster on this CPU ({fp32 / bf16:.2f}x of fp32's speed)"
    return Precision("fp32", why, round(fp32, 3), round(bf16, 3))


def machine_busy() -> bool:
    """Whether other work keeps this machine's cores busy (1-minute load average at or above
    three quarters of the cores): a probe taken then is used but not cached."""
    try:
        return os.getloadavg()[0] >= 0.75 * (os.cpu_count() or 1)
    except OSError:
        return False


def _torch_dtype(name: str):
    import torch

    return torch.bfloat16 if name == "bf16" else torch.float32


def choose(
    setting: str, device: str, cache_dir: Path | None, hidden: int, inner: int,
    weight_bytes: int | None = None,
) -> Precision:
    """The precision for a base model's frozen weights on ``device``.

    ``setting`` is ``TUNELAB_PRECISION``: ``fp32``, ``bf16`` and ``bf16-stored`` are honoured as
    given; ``auto`` measures on a CPU (cached in ``cache_dir``), takes bf16 where its products
    are clearly faster, else fp32, with the weights stored in bf16 where memory is short for
    the base's ``weight_bytes`` of fp32 weights; and takes bf16 on a CUDA device that
    supports it.
    """
    import torch

    if setting not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {setting!r}")
    if setting == "bf16-stored":  # a CPU's way to halve the base's memory
        if device.startswith("cpu"):
            return Precision("fp32", f"set by TUNELAB_PRECISION={setting}", storage="bf16")
        return Precision("fp32", f"set by TUNELAB_PRECISION={setting}: fp32 weights on "
                                 f"{device}, where weights are kept in bf16 on a CPU only")
    if setting != "auto":
        return Precision(setting, f"set by TUNELAB_PRECISION={setting}")
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "the GPU supports bf16")
        return Precision("fp32", "the GPU does not support bf16")
    if not device.startswith("cpu"):
        return Precision("fp32", f"fp32 on {device}")
    return _stored_where_short(_measured(cache_dir, hidden, inner), weight_bytes)


def _stored_where_short(chosen: Precision, weight_bytes: int | None) -> Precision:
    """Where a CPU's bf16 products are not faster and memory is short (the base's fp32
    weights would take more than ``STORE_SHARE`` of the memory available), its fp32 products
    read weights kept in bf16: half the memory of the base, for widening each weight just
    before its product (measured: nothing on long steps, 6-10% of a tune of short examples;
    docs/performance.md). A machine with room keeps the fp32 weights and their speed."""
    free = available_memory()
    if chosen.name != "fp32" or not weight_bytes or free is None or \
            weight_bytes <= free * STORE_SHARE:
        return chosen
    return replace(chosen, storage="bf16", reason=(
        f"{chosen.reason}; weights kept in bf16 for half the memory: in fp32 they would take "
        f"more than {STORE_SHARE:.0%} of the {free / 2**30:.1f} GB available"))


def available_memory() -> int | None:
    """Bytes the system reports available (``MemAvailable`` of ``/proc/meminfo``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _measured(cache_dir: Path | None, hidden: int, inner: int) -> Precision:
    """The probe's answer for this CPU and shape, from the cache in ``cache_dir`` where it
    holds one."""
    import torch

    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | " \
          f"{hidden}x{inner}"
    cache = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    known = _read_cache(cache)
    if key in known:
        try:
            return Precision(**known[key])
        except TypeError:
            pass  # an older cache entry: measure again
    chosen = probe(hidden, inner)
    if cache is not None and not machine_busy():
        known[key] = chosen.to_dict()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache, json.dumps(known, indent=1))
        except OSError:
            pass  # a read-only data dir: measure again next time
    return chosen


def _read_cache(path: Path | None) -> dict:
    if path is None or not path.is_file() or path.stat().st_size > 1_000_000:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


