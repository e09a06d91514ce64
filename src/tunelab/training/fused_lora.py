"""A LoRA layer's training forward and backward in one autograd function.

PEFT computes a LoRA layer as ``base(x) + lora_B(lora_A(x)) * scaling``: besides the frozen
layer's matmul and the two rank-r products, that is three more tensors of the layer's full
output size per call (the B product, its scaled copy, the sum) and as many passes over memory,
and as many again in the backward. On a CPU those passes are not small next to the matmul: for
SmolLM2's MLP projections (604 tokens × 1,536) the frozen bf16 matmul took 2.2 ms and the LoRA
output path 6.5 ms, where adding the B product into the frozen layer's fp32 result in place
(``addmm_``) takes 0.35 ms (one thread, AMX machine; docs/performance.md).

``fuse_lora_layers`` gives each plain LoRA layer of a PEFT model a forward that computes
exactly PEFT's result in fewer passes::

    y  = base(x)                         the frozen layer (bf16 matmul, fp32 result when widened)
    xa = x Aᵀ                            (tokens × r)
    y += scaling · xa Bᵀ                 in place
    backward:  g_xa = scaling · g B,  ∂B = scaling · gᵀ xa,  ∂A = g_xaᵀ x,
               ∂x = g W (in the frozen weight's dtype, as autograd does it) + g_xa A

and saves what PEFT's autograd saves (the input, shared by the layers that read the same
input, and the tokens × r product). Sibling layers that read the same input (q/k/v, gate/up)
share one cast of it to the frozen weight's dtype. The parameters, the module tree and the saved
adapter are PEFT's own; a layer in any other state (several or disabled adapters, merged weights,
dropout, DoRA or another variant, a base that is not a plain linear layer) keeps PEFT's forward.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.catalog.wide_linear import WideLinear


class _Cast(threading.local):
    """The last input cast to a frozen weight's dtype, for the sibling layers that follow (one
    per thread: a forward pass runs in one thread, and another thread's pass must not see it)."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.version = -1
        self.cast: torch.Tensor | None = None

    def of(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        if x.is_inference():  # no version counter to check: cast every time
            return x.to(dtype)
        if (self.source is x and self.version == x._version and self.cast is not None
                and self.cast.dtype == dtype):
            return self.cast
        self.source, self.version, self.cast = x, x._version, x.to(dtype)
        return self.cast

    def clear(self) -> None:
        self.source = self.cast = None


_cast = _Cast()


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                a: torch.Tensor, b: torch.Tensor, scaling: float,
                out_dtype: torch.dtype) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = F.linear(_cast.of(x, weight.dtype).reshape(-1, shape[-1]), weight, bias)
        if y.dtype != a.dtype:
            y = y.to(a.dtype)
        xl = x2 if x2.dtype == a.dtype else x2.to(a.dtype)
        xa = xl @ a.t()
        y.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(xl, xa, weight, a, b)
        ctx.scaling, ctx.x_shape, ctx.x_dtype = scaling, shape, x.dtype
        return y.view(*shape[:-1], y.shape[-1]).to(out_dtype)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple:
        xl, xa, weight, a, b = ctx.saved_tensors
        g = gy.reshape(-1, gy.shape[-1])
        if g.dtype != a.dtype:
            g = g.to(a.dtype)
        grad_b = (g.t() @ xa).mul_(ctx.scaling) if ctx.needs_input_grad[4] else None
        g_xa = (g @ b).mul_(ctx.scaling)
        grad_a = g_xa.t() @ xl if ctx.needs_input_grad[3] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = g.to(weight.dtype) @ weight
            if grad_x.dtype != a.dtype:
                grad_x = grad_x.to(a.dtype)
            grad_x.addmm_(g_xa, a)
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        return grad_x, None, None, grad_a, grad_b, None, None


def _fusable(layer: Any) -> str | None:
    """The adapter a LoRA layer's fused forward computes, or None to keep PEFT's."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if getattr(layer, "use_dora", {}).get(name) or not isinstance(
            layer.lora_dropout[name], nn.Identity):
        return None
    if type(layer.get_base_layer()) not in (nn.Linear, WideLinear):
        return None
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return None
    return name


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _fusable(self) if not args and not kwargs else None
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.get_base_layer()
    # PEFT returns the dtype of the frozen layer's result: fp32 for a widened layer
    out_dtype = torch.float32 if type(base) is WideLinear else base.weight.dtype
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    return _LoraLinear.apply(x, base.weight, base.bias, a, b, float(self.scaling[name]),
                             out_dtype)


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every PEFT LoRA ``Linear`` of ``model`` the fused forward (in place; the layers stay
    PEFT's, with PEFT's parameters); the number of layers changed."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = _fused_forward.__get__(module)
            changed += 1
    return changed


def unfuse_lora_layers(model: nn.Module) -> None:
    """Give the layers ``fuse_lora_layers`` changed PEFT's own forward back."""
    for module in model.modules():
        if "forward" in module.__dict__ and module.__dict__["forward"].__func__ is _fused_forward:
            del module.__dict__["forward"]
    release_cast()


def release_cast() -> None:
    """Drop the one input cast kept for sibling layers (and the input it was made from)."""
    _cast.clear()
