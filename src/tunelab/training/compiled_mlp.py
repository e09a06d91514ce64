"""A decoder layer's MLP with its three LoRA layers as one compiled function (CPU).

With the frozen base in bf16 on a CPU with AMX the matmuls are no longer what a training step
waits for: on the default model a third of the step's CPU time is ``aten::mm``, and the rest is
passes over memory around the matmuls -- casting each input to bf16 and each result back to
fp32, adding the adapter's product, the activation and the product of the gate and up halves,
and as many again in the backward pass (``docs/performance.md``, Where the time goes). The MLP
is most of them: its tensors are 1,536 wide on SmolLM2, 2.7 times the residual stream.

``compile_mlps`` gives each MLP of the gated shape (``down(act(gate(x)) * up(x))``, the Llama,
Qwen and Gemma families) whose three projections are plain LoRA layers a forward that is one
``torch.compile``'d function of the input, the frozen weights and the LoRA weights, which
computes exactly what the fused layers compute (``fused_lora.py``) but lets the compiler fuse
those passes into a few loops, in the forward and the backward it derives. The frozen matmuls
are the same oneDNN calls as before. The function is the same for every layer (the weights are
its arguments) and compiled once per process with dynamic shapes, so batches of any length use
it; compiled code is kept on disk (``<data_dir>/compiled``) and the next job loads it in about a
second instead of compiling for about a minute.

Compiling costs more than a short job gains, so ``train`` compiles only where it pays
(``worth_compiling``): always when this shape was compiled before on this machine (a marker
next to the cache), otherwise for a job long enough that a cold compile is a small part of it.
``TUNELAB_COMPILE=auto|on|off`` overrides. A compiler that fails (no C++ compiler on the
machine, an unsupported model) leaves the model as it was: the first compiled call runs on a
small input before training, and any error there keeps the eager layers.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.catalog.wide_linear import WideLinear
from tunelab.training.fused_lora import _fusable

# A cold compile took ~40-90 s on 2 busy cores; a job compiles cold only when it trains at least
# this many tokens (~5 minutes at the default model's ~350 tokens/s there), so the compile is at
# most a fifth of it. A warm cache (the marker) loads in about a second and always pays.
COLD_COMPILE_MIN_TOKENS = 100_000
MODES = ("auto", "on", "off")

_lock = threading.Lock()
_compiled: dict[str, Any] = {}


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS = {"silu": _silu, "gelu_tanh": _gelu_tanh}


def _activation_kind(act: Any) -> str | None:
    """The name of the functional that computes ``act`` exactly, checked on a sample."""
    sample = torch.linspace(-6, 6, 97)
    for kind, fn in _ACTIVATIONS.items():
        try:
            with torch.no_grad():
                if torch.equal(act(sample), fn(sample)):
                    return kind
        except Exception:  # noqa: BLE001 - an activation of another kind: not ours
            continue
    return None


def _lora_projection(x: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     scaling: float) -> torch.Tensor:
    y = F.linear(x.to(weight.dtype), weight)
    if y.dtype != a.dtype:
        y = y.to(a.dtype)
    return y + scaling * ((x.to(a.dtype) @ a.t()) @ b.t())


def _mlp(x: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor, wd: torch.Tensor,
         ag: torch.Tensor, bg: torch.Tensor, au: torch.Tensor, bu: torch.Tensor,
         ad: torch.Tensor, bd: torch.Tensor, sg: float, su: float, sd: float,
         kind: str) -> torch.Tensor:
    act = _ACTIVATIONS[kind]
    h = act(_lora_projection(x, wg, ag, bg, sg)) * _lora_projection(x, wu, au, bu, su)
    return _lora_projection(h, wd, ad, bd, sd)


def _compiled_mlp() -> Any:
    with _lock:
        if "mlp" not in _compiled:
            _compiled["mlp"] = torch.compile(_mlp, dynamic=True)
        return _compiled["mlp"]


class _Parts:
    """What one MLP's compiled forward reads (its modules, so a loaded adapter is seen)."""

    def __init__(self, mlp: nn.Module, name: str, kind: str) -> None:
        self.layers = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        self.name, self.kind = name, kind

    def arguments(self) -> tuple:
        weights, loras, scales = [], [], []
        for layer in self.layers:
            weights.append(layer.get_base_layer().weight)
            loras += [layer.lora_A[self.name].weight, layer.lora_B[self.name].weight]
            scales.append(float(layer.scaling[self.name]))
        return (*weights, *loras, *scales, self.kind)


def _eligible(mlp: nn.Module) -> _Parts | None:
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if not all(type(layer) is LoraLinear for layer in layers) or not hasattr(mlp, "act_fn"):
        return None
    names = {_fusable(layer) for layer in layers}
    if len(names) != 1 or None in names:
        return None
    for layer in layers:  # a bias, or a narrow result (fused_lora.py): the fused layers' path
        base = layer.get_base_layer()
        if base.bias is not None or (type(base) is not WideLinear
                                     and base.weight.dtype != torch.float32):
            return None
    kind = _activation_kind(mlp.act_fn)
    return _Parts(mlp, names.pop(), kind) if kind else None


def _forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    parts: _Parts = self._tunelab_compiled
    # Compiled for training: a pass without gradients (scoring, answering) would compile a
    # second time, and a layer in another state (adapter disabled, merged) is PEFT's again.
    if (not torch.is_grad_enabled() or x.device.type != "cpu"
            or any(_fusable(layer) != parts.name for layer in parts.layers)):
        return type(self).forward(self, x)
    return _compiled_mlp()(x, *parts.arguments())


def compile_mlps(model: nn.Module) -> int:
    """Give every eligible MLP of ``model`` the compiled forward (in place); the number changed.
    Nothing is compiled until the first call (``warm_up``)."""
    changed = 0
    for module in model.modules():
        if "forward" in module.__dict__:
            continue
        parts = _eligible(module)
        if parts is not None:
            module._tunelab_compiled = parts
            module.forward = _forward.__get__(module)
            changed += 1
    return changed


def uncompile_mlps(model: nn.Module) -> None:
    """Give the MLPs ``compile_mlps`` changed their own forward back."""
    for module in model.modules():
        if "_tunelab_compiled" in module.__dict__:
            del module.__dict__["forward"]
            del module.__dict__["_tunelab_compiled"]


def _first(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if "_tunelab_compiled" in m.__dict__), None)


def shape_key(model: nn.Module) -> str | None:
    """What a compiled MLP depends on: torch's version, the CPU and the MLP's shapes and dtypes."""
    mlp = _first(model)
    if mlp is None:
        return None
    args = mlp._tunelab_compiled.arguments()
    described = [torch.__version__, platform.machine(), _cpu_model(), args[-1]]
    described += [f"{tuple(t.shape)}:{t.dtype}" for t in args[:9]]
    return hashlib.sha256("|".join(map(str, described)).encode()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "compiled"


def use_cache(data_dir: Path) -> None:
    """Keep compiled code under ``data_dir`` (read by the compiler when it compiles)."""
    path = cache_dir(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")


def is_warm(data_dir: Path, key: str) -> bool:
    return (cache_dir(data_dir) / f"{key}.ok").exists()


def worth_compiling(mode: str, warm: bool, training_tokens: int) -> tuple[bool, str]:
    """Whether to compile, and why (one line for the job's log)."""
    if mode == "off":
        return False, "compiled MLP off (TUNELAB_COMPILE=off)"
    if mode == "on":
        return True, "compiled MLP on (TUNELAB_COMPILE=on)"
    if warm:
        return True, "compiled MLP: compiled before on this machine, loads from the cache"
    if training_tokens >= COLD_COMPILE_MIN_TOKENS:
        return True, (f"compiled MLP: {training_tokens:,} tokens to train pay for a first "
                      f"compile (about a minute)")
    return False, (f"compiled MLP not used: {training_tokens:,} tokens to train do not pay for "
                   f"a first compile (from {COLD_COMPILE_MIN_TOKENS:,})")


def warm_up(model: nn.Module, data_dir: Path | None, key: str) -> tuple[bool, str]:
    """Compile (or load) the MLP function by running one MLP forward and backward on a small
    input; on any error give the model its eager MLPs back. Whether it compiled, and a line."""
    mlp = _first(model)
    if mlp is None:
        return False, "compiled MLP not used: no MLP of the gated LoRA shape"
    width = mlp.gate_proj.get_base_layer().weight.shape[1]
    started = time.perf_counter()
    numbers = torch.Generator().manual_seed(0)  # the run's own random state is left alone
    try:
        for n in (3, 5):  # two lengths: the compiled code is the dynamic one from the start
            x = torch.randn(1, n, width, generator=numbers, requires_grad=True)
            mlp(x).float().sum().backward()
        for p in model.parameters():
            p.grad = None
    except Exception as e:  # noqa: BLE001 - any compiler failure: train as before
        uncompile_mlps(model)
        for p in model.parameters():
            p.grad = None
        return False, f"compiled MLP not used: the compiler failed ({type(e).__name__})"
    if data_dir is not None:
        try:
            (cache_dir(data_dir) / f"{key}.ok").touch()
        except OSError:
            pass
    return True, f"compiled MLP ready in {time.perf_counter() - started:.1f} s"
