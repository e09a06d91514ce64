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
are one function (``_LoraGroup``; a layer alone is a group of one), and a gated MLP whose three
projections are LoRA layers is one function that keeps two of its four wide tensors for the
backward pass (``_LoraMlp``). The parameters, the module tree and the saved adapter are PEFT's
own; a layer in any other state (several or disabled adapters, merged weights, dropout, DoRA or
another variant, a base that is not a plain linear layer) keeps PEFT's forward.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.catalog.wide_linear import StoredLinear, WideLinear, compute_dtype, for_product


class _Cast(threading.local):
    """The last input cast to a frozen weight's dtype, for the layers that read it next (one
    per thread: a forward pass runs in one thread, and another thread's pass must not see it).
    A view of the same data (the same storage, offset, size and dtype, laid out contiguously)
    finds it too: the attention's output is cast once (``segment_attention.py``), and the
    output projection reads it reshaped. A step that keeps its activations in bf16 keeps this
    one copy for every function that reads the input (``keeps_bf16``)."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.version = -1
        self.cast: torch.Tensor | None = None

    def of(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if x.dtype == dtype:
            return x
        if x.is_inference():  # no version counter to check: cast every time
            return x.to(dtype)
        cast = self.cast
        if (cast is not None and cast.dtype == dtype and self.version == x._version
                and (self.source is x or _same_data(self.source, x))):
            return cast if cast.shape == x.shape else cast.view(x.shape)
        return self.keep(x, x.to(dtype))

    def keep(self, x: torch.Tensor, cast: torch.Tensor) -> torch.Tensor:
        """Remember ``cast`` (contiguous) as ``x`` cast; returns it."""
        self.source, self.version, self.cast = x, x._version, cast
        return cast

    def clear(self) -> None:
        self.source = self.cast = None


def _same_data(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    return (a is not None and a.dtype == b.dtype and a.numel() == b.numel()
            and a.is_contiguous() and b.is_contiguous()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset())


_cast = _Cast()


def cast_once(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``, cast once for every function of a forward pass that reads it."""
    return _cast.of(x, dtype)


def keep_cast(x: torch.Tensor, cast: torch.Tensor) -> torch.Tensor:
    """Make ``cast`` (``x`` cast, contiguous) the copy ``cast_once`` gives for ``x``."""
    return _cast.keep(x, cast)


def keeps_bf16(frozen_dtype: torch.dtype) -> bool:
    """Whether a training step over frozen weights of ``frozen_dtype`` keeps its activations in
    bf16 for the backward pass: the LoRA layers' inputs (the norms' outputs, the attention's
    output), the attention's values, the gated MLP's gate and up products.
    The forward pass computes from the exact (fp32) values; only the backward reads the rounded
    copies. The frozen layers read their inputs rounded to bf16 already, so their products are
    no more precise than that; the LoRA A gradients and the attention's gradients are then as
    exact as bf16 inputs allow (docs/performance.md "Keeping activations in bf16")."""
    return frozen_dtype == torch.bfloat16


def kept_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype a training step of ``model`` keeps its activations in where it is not the one
    they are computed in (bf16 for a base held in bf16, ``keeps_bf16``), else None."""
    embedding = model.get_input_embeddings()
    return torch.bfloat16 if embedding is not None and keeps_bf16(
        embedding.weight.dtype) else None


def _stacked(parts: list[torch.Tensor] | tuple, dim: int = 0) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _lora_outputs(xc: torch.Tensor, xl: torch.Tensor, weights: tuple, biases: tuple,
                  a_s: tuple, b_s: tuple, scalings: tuple, xa: torch.Tensor | None = None,
                  dtype: torch.dtype | None = None) -> tuple[list, torch.Tensor]:
    """Each layer's ``base(x) + scaling · x Aᵀ Bᵀ`` (2-D, in the adapter's dtype) for layers
    that read one input: ``xc`` in the frozen weights' dtype, ``xl`` in the adapter's. The
    input is read once for all the A products; also returns them (tokens × sum of ranks).
    ``xa``: those products, made already (the same outputs again, to the bit: ``xl`` is not
    read, and ``dtype`` is the adapter's)."""
    if xa is None:
        xa = xl @ _stacked(a_s).t()
    dtype = dtype or xl.dtype
    outs, start = [], 0
    for weight, bias, a, b, scaling in zip(weights, biases, a_s, b_s, scalings, strict=True):
        y = _as(F.linear(xc, for_product(weight), bias), dtype)
        y.addmm_(xa[:, start:start + a.shape[0]], b.t(), alpha=scaling)
        start += a.shape[0]
        outs.append(y)
    return outs, xa


def _lora_grads(gs: list, xl: torch.Tensor, xa: torch.Tensor, weights: tuple, a_s: tuple,
                b_s: tuple, scalings: tuple, need_a: tuple, need_b: tuple,
                need_x: bool) -> tuple[torch.Tensor | None, list, list]:
    """The backward of ``_lora_outputs`` for the outputs' gradients ``gs`` (2-D, adapter's
    dtype): the input's gradient (2-D, adapter's dtype; summed in place over the layers, with
    one product for all their LoRA parts) and each layer's ∂A and ∂B (None where not needed)."""
    # The products with a rank-r side are made r × (tokens or width), then transposed views
    # taken: BLAS runs them several times slower laid out tokens × r (``gᵀ xa`` and ``g B``
    # measured 3× slower on the default model's shapes, docs/performance.md).
    grad_b, g_xas, start = [], [], 0
    for g, a, b, scaling, need in zip(gs, a_s, b_s, scalings, need_b, strict=True):
        r = a.shape[0]
        grad_b.append((xa[:, start:start + r].t() @ g).t().mul_(scaling) if need else None)
        start += r
        g_xas.append((b.t() @ g.t()).mul_(scaling))  # (g B)ᵀ: r × tokens
    g_xa_t = _stacked(g_xas)  # all the layers' (g_xa)ᵀ: sum of ranks × tokens
    grad_a: list[torch.Tensor | None] = [None] * len(a_s)
    if any(need_a):
        grad_a_all, start = g_xa_t @ xl, 0
        for i, a in enumerate(a_s):
            if need_a[i]:
                grad_a[i] = grad_a_all[start:start + a.shape[0]]
            start += a.shape[0]
    grad_x = None
    if need_x:
        for g, weight in zip(gs, weights, strict=True):
            wide = for_product(weight)
            part = g.to(wide.dtype) @ wide
            if grad_x is None:
                grad_x = _as(part, xl.dtype)
            else:
                grad_x.add_(part)
        grad_x.addmm_(g_xa_t.t(), _stacked(a_s))
    return grad_x, grad_a, grad_b


def _kept_input(xc: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
    """What a LoRA function keeps of its input for the backward pass: ``xc``, the copy cast to
    the frozen weights' dtype (shared with whatever else keeps the input: ``cast_once``), where
    a step keeps bf16 activations, else ``xl``, the input in the adapter's dtype."""
    return xc if keeps_bf16(xc.dtype) else xl


def _interleaved(grad_a: list, grad_b: list) -> list:
    """Gradients in the order of ``apply``'s parameters: (weight, bias, A, B) per layer."""
    return [g for ga, gb in zip(grad_a, grad_b, strict=True) for g in (None, None, ga, gb)]


class _LoraGroup(torch.autograd.Function):
    """LoRA layers that read one input in one function: one layer, or sibling layers (q/k/v,
    gate/up). Each frozen layer's matmul is its own, but the input is read once for all their
    A products (one ``x Aᵀ`` with the A matrices stacked), once for all their A gradients, and
    the input's gradient is summed in place, with one product for all their LoRA parts, instead
    of autograd adding each layer's gradient in turn."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scalings: tuple, out_dtypes: tuple,
                *params: torch.Tensor | None) -> tuple:
        weights, biases, a_s, b_s = params[0::4], params[1::4], params[2::4], params[3::4]
        shape = x.shape
        xc = _cast.of(x, compute_dtype(weights[0])).reshape(-1, shape[-1])
        xl = _as(x.reshape(-1, shape[-1]), a_s[0].dtype)
        ys, xa = _lora_outputs(xc, xl, weights, biases, a_s, b_s, scalings)
        ctx.save_for_backward(_kept_input(xc, xl), xa, *weights, *a_s, *b_s)
        ctx.scalings, ctx.x_shape, ctx.x_dtype, ctx.count = scalings, shape, x.dtype, len(a_s)
        return tuple(y.view(*shape[:-1], y.shape[-1]).to(out_dtype)
                     for y, out_dtype in zip(ys, out_dtypes, strict=True))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
        xk, xa, *rest = ctx.saved_tensors
        m = ctx.count
        weights, a_s, b_s = rest[:m], rest[m:2 * m], rest[2 * m:]
        xl = _as(xk, a_s[0].dtype)
        needs = ctx.needs_input_grad  # (x, scalings, out_dtypes, then W, bias, A, B per layer)
        gs = [_as(gy.reshape(-1, gy.shape[-1]), xl.dtype) for gy in grads]
        grad_x, grad_a, grad_b = _lora_grads(gs, xl, xa, weights, a_s, b_s, ctx.scalings,
                                             needs[5::4], needs[6::4], needs[0])
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        return (grad_x, None, None, *_interleaved(grad_a, grad_b))


class _MlpRecompute(threading.local):
    """How many more gated MLPs of the forward pass under way make their gate and up
    products again in the backward pass instead of keeping them (``recomputed_mlps``)."""

    left = 0

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


_mlp_recompute = _MlpRecompute()


@contextmanager
def recomputed_mlps(count: int) -> Iterator[None]:
    """Within this context the first ``count`` gated MLPs a forward pass runs
    (``_LoraMlp``) keep only what their LoRA layers keep and make their gate and up products
    again in the backward pass: one layer's share of the MLP's width less kept per token
    (``memory.py``), for two frozen products more in that layer's backward pass."""
    before = _mlp_recompute.left
    _mlp_recompute.left = count
    try:
        yield
    finally:
        _mlp_recompute.left = before


class _LoraMlp(torch.autograd.Function):
    """A gated MLP, ``down(act(gate(x)) · up(x))``, whose three projections are LoRA layers,
    in one function. Autograd would keep four tensors of the MLP's width for the backward pass
    (the gate's output, the activation's, the up projection's and the product, which is also
    down_proj's input): 59% of what a training step on the default model keeps. This keeps the
    gate's and up projection's outputs and makes the other two again in the backward pass (one
    activation and one product: elementwise, cheap next to the matmuls). Where the frozen
    weights are bf16 it keeps those two in bf16: the frozen layers read their input rounded to
    bf16, so the products carry that rounding already, and the backward pass computes in fp32
    from them (on the default model 360 → 180 KB a token; the throughput benchmark's step:
    the same loss to 0.03%, the same speed, peak RSS −100 MB; docs/performance.md). Its
    arithmetic is the LoRA layers' own (``_lora_outputs`` / ``_lora_grads``); the activation's
    gradient is autograd's, so any activation function works."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, act: Any, scalings: tuple, out_dtype: torch.dtype,
                *params: torch.Tensor | None) -> torch.Tensor:
        weights, biases, a_s, b_s = params[0::4], params[1::4], params[2::4], params[3::4]
        shape = x.shape
        xc = _cast.of(x, compute_dtype(weights[0])).reshape(-1, shape[-1])
        xl = _as(x.reshape(-1, shape[-1]), a_s[0].dtype)
        (g, u), xa = _lora_outputs(xc, xl, weights[:2], biases[:2], a_s[:2], b_s[:2],
                                   scalings[:2])
        h = act(g) * u
        (y,), ha = _lora_outputs(_as(h, compute_dtype(weights[2])), h, weights[2:],
                                 biases[2:], a_s[2:], b_s[2:], scalings[2:])
        ctx.biases = None
        if _mlp_recompute.take() and any(ctx.needs_input_grad):
            # made again from the kept input and its A products (recomputed_mlps)
            ctx.biases = biases[:2]
            g = u = xa.new_empty(0)
        elif keeps_bf16(xc.dtype):  # as precise as the frozen layers' inputs
            g, u = g.to(torch.bfloat16), u.to(torch.bfloat16)
        ctx.save_for_backward(_kept_input(xc, xl), xa, g, u, ha, *weights, *a_s, *b_s)
        ctx.act, ctx.scalings, ctx.x_shape, ctx.x_dtype = act, scalings, shape, x.dtype
        return y.view(*shape[:-1], y.shape[-1]).to(out_dtype)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple:
        xk, xa, g, u, ha, *rest = ctx.saved_tensors
        weights, a_s, b_s = rest[:3], rest[3:6], rest[6:]
        xl = _as(xk, a_s[0].dtype)
        if ctx.biases is not None:  # the forward's products again, to the bit
            (g, u), _ = _lora_outputs(_as(xk, compute_dtype(weights[0])), xk, weights[:2],
                                      ctx.biases, a_s[:2], b_s[:2], ctx.scalings[:2], xa,
                                      xl.dtype)
            ctx.biases = None
        g, u = _as(g, xl.dtype), _as(u, xl.dtype)
        needs = ctx.needs_input_grad  # (x, act, scalings, out_dtype, then W, bias, A, B × 3)
        need_a, need_b, s = needs[6::4], needs[7::4], ctx.scalings
        with torch.enable_grad():
            g_in = g.detach().requires_grad_(True)
            a = ctx.act(g_in)
        a_value = a.detach()
        h = a_value * u
        grad_h, down_a, down_b = _lora_grads(
            [_as(gy.reshape(-1, gy.shape[-1]), xl.dtype)], h, ha, weights[2:], a_s[2:],
            b_s[2:], s[2:], need_a[2:], need_b[2:], True)
        del h
        grad_u = grad_h * a_value
        (grad_g,) = torch.autograd.grad(a, g_in, grad_h.mul_(u))
        grad_x, gate_up_a, gate_up_b = _lora_grads(
            [grad_g, grad_u], xl, xa, weights[:2], a_s[:2], b_s[:2], s[:2], need_a[:2],
            need_b[:2], needs[0])
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        return (grad_x, None, None, None, *_interleaved(gate_up_a + down_a, gate_up_b + down_b))


class _Siblings(threading.local):
    """The outputs a sibling group computed for the layers not yet called (one per thread)."""

    def __init__(self) -> None:
        self.clear()

    def take(self, layer: Any, x: torch.Tensor) -> torch.Tensor | None:
        if self.source is x and self.version == x._version:
            return self.pending.pop(id(layer), None)
        return None

    def keep(self, x: torch.Tensor, pending: dict) -> None:
        self.source, self.version, self.pending = x, x._version, pending

    def clear(self) -> None:
        self.source: torch.Tensor | None = None
        self.version = -1
        self.pending: dict = {}


_siblings = _Siblings()

# Layers of one module that read the same input, by the names transformers' models give them.
SIBLING_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


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
    if type(layer.get_base_layer()) not in (nn.Linear, WideLinear, StoredLinear):
        return None
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return None
    return name


def _parts(layer: Any, name: str) -> tuple:
    base = layer.get_base_layer()
    # PEFT returns the dtype of the frozen layer's result: fp32 for a widened or stored layer
    out_dtype = torch.float32 if type(base) in (WideLinear, StoredLinear) else base.weight.dtype
    return (base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
            float(layer.scaling[name]), out_dtype)


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _fusable(self) if not args and not kwargs else None
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    group = self.__dict__.get("_tunelab_siblings")
    if group is not None and torch.is_grad_enabled() and not x.is_inference():
        ready = _siblings.take(self, x)
        if ready is not None:
            return ready
        out = _group_forward(group, x)
        if out is not None:
            outs = dict(zip((id(layer) for layer in group), out, strict=True))
            mine = outs.pop(id(self))
            _siblings.keep(x, outs)
            return mine
    weight, bias, a, b, scaling, out_dtype = _parts(self, name)
    return _LoraGroup.apply(x, (scaling,), (out_dtype,), weight, bias, a, b)[0]


def _group_forward(group: list, x: torch.Tensor) -> tuple | None:
    """Every layer of ``group`` on ``x`` at once, or None where they cannot be (a layer's
    state changed, or their frozen weights or adapters differ in dtype)."""
    parts = []
    for layer in group:
        name = _fusable(layer)
        if name is None:
            return None
        parts.append(_parts(layer, name))
    if len({(p[0].dtype, compute_dtype(p[0]), p[2].dtype, p[2].shape[1])
            for p in parts}) != 1:
        return None
    params = [t for p in parts for t in p[:4]]
    return _LoraGroup.apply(x, tuple(p[4] for p in parts), tuple(p[5] for p in parts),
                              *params)


# Gated MLPs that compute ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` and nothing else, by
# transformers' class names (a class not listed keeps its own forward).
GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "GemmaMLP",
                        "Gemma2MLP", "Gemma3MLP", "Olmo2MLP", "SmolLM3MLP"})
_MLP_LAYERS = ("gate_proj", "up_proj", "down_proj")


def _fused_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and not x.is_inference():
        parts = []
        for layer in (getattr(self, n) for n in _MLP_LAYERS):
            name = _fusable(layer)
            if name is None:
                break
            parts.append(_parts(layer, name))
        else:
            if len({(p[0].dtype, compute_dtype(p[0]), p[2].dtype) for p in parts}) == 1:
                return _LoraMlp.apply(x, self.act_fn, tuple(p[4] for p in parts),
                                      parts[2][5], *(t for p in parts for t in p[:4]))
    return type(self).forward(self, x)  # computing no gradient, or a layer's state changed


def mlp_fuses(model: nn.Module, targets: list[str], dropout: float) -> bool:
    """Whether ``fuse_lora_layers`` will make ``model``'s gated MLPs one function each once
    LoRA layers (on ``targets``, every linear layer when empty, with ``dropout``) are added:
    what a training step keeps for its backward pass depends on it (``memory.py``)."""
    named = targets or _MLP_LAYERS
    return (not dropout and all(n in named for n in _MLP_LAYERS)
            and any(type(m).__name__ in GATED_MLPS for m in model.modules()))


def fuse_lora_layers(model: nn.Module) -> int:
    """Give every PEFT LoRA ``Linear`` of ``model`` the fused forward (in place; the layers stay
    PEFT's, with PEFT's parameters); the number of layers changed."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = _fused_forward.__get__(module)
            changed += 1
        if type(module).__name__ in GATED_MLPS and all(
                type(getattr(module, n, None)) is LoraLinear for n in _MLP_LAYERS):
            module.forward = _fused_mlp_forward.__get__(module)
        for names in SIBLING_GROUPS:
            layers = [getattr(module, n, None) for n in names]
            if all(type(layer) is LoraLinear for layer in layers):
                for layer in layers:  # in the instance's dict: not a submodule
                    layer.__dict__["_tunelab_siblings"] = layers
    return changed


def unfuse_lora_layers(model: nn.Module) -> None:
    """Give the layers ``fuse_lora_layers`` changed PEFT's own forward back."""
    for module in model.modules():
        if "forward" in module.__dict__ and module.__dict__["forward"].__func__ in (
                _fused_forward, _fused_mlp_forward):
            del module.__dict__["forward"]
        module.__dict__.pop("_tunelab_siblings", None)
    release_cast()


def release_cast() -> None:
    """Drop the one input cast kept for sibling layers, and the outputs a sibling group made
    for layers not yet called (and the input they were made from)."""
    _cast.clear()
    _siblings.clear()
