"""bf16 weights, fp32 results: how a base held in bf16 keeps a LoRA adapter's small updates.

A LoRA layer adds the adapter's output to the frozen layer's: ``y = W x + B A x``. Early in
training (and for a well-behaved adapter, always) ``B A x`` is small next to ``W x``. PEFT adds
the two in fp32 and then casts the sum back to the frozen layer's dtype; with the base in bf16
(8 bits of mantissa, ~0.4% relative precision) every part of the adapter's contribution below
that is rounded away, so the model trains on a coarsened version of its own updates. Measured
on the default model (120 sentence → JSON examples, one epoch, batch 4, lr 1e-3): the loss of
the second step was 0.557 with a plain bf16 base, 0.473 with this module and 0.476 in fp32; the
mean of the last ten steps 0.0420, 0.0326 and 0.0327 (docs/performance.md).

``widen_linear_outputs`` changes every bf16 ``nn.Linear`` of a model in place into
``WideLinear``: the matmul still runs in bf16 (the point of holding the base in bf16), but its
result is returned in fp32, so the adapter's output is added to it at full precision and the
residual stream between layers is fp32 (the norms upcast to fp32 anyway). Training and serving
load the base through the same function, so a tuned model answers as it was trained.

``widen_embedding_output`` does the same for the input embedding: its table stays bf16, its
output is fp32. Without it the first layer's input is bf16, and so are the rotary position
tables most models compute once per forward pass in the dtype of that input (the cos/sin every
layer's queries and keys are turned by): autocast, which leaves embeddings alone, keeps both in
fp32. On the throughput benchmark (default model, every contender on the same batches, five
seeds) tunelab's mean held-out loss went to 0.94× the fp32 loop's with it (seeds 0–2: 0.0042
against 0.0045 without); docs/performance.md.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class WideLinear(nn.Linear):
    """An ``nn.Linear`` whose weights stay in their (narrow) dtype: the input is cast to it, the
    matmul runs in it, the result is fp32. Still an ``nn.Linear`` for PEFT, which wraps it as
    the base layer of a LoRA layer; ``merge`` and ``unmerge`` work on its weight as on any."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).float()


def widen_linear_outputs(model: Any, dtype: torch.dtype = torch.bfloat16) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` whose weight is ``dtype`` into a
    ``WideLinear`` (same parameters, same module tree); the number changed."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == dtype:
            module.__class__ = WideLinear
            changed += 1
    return changed


def _fp32_output(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def widen_embedding_output(model: Any) -> bool:
    """Make the output of ``model``'s input embedding fp32 (its table stays as it is; a forward
    hook, kept by copies of the model); whether it changed anything."""
    embedding = model.get_input_embeddings()
    if embedding is None or getattr(embedding, "_tunelab_fp32_output", None) is not None:
        return False
    embedding._tunelab_fp32_output = embedding.register_forward_hook(_fp32_output)
    return True


# --- Weights stored in bf16, products in fp32 -----------------------------------------------


class _Scratch(threading.local):
    """One fp32 buffer per weight shape (per thread) that a stored weight is widened into just
    before its product: the buffer is written again by the next weight of that shape, so no
    more than one widened copy of each shape is ever alive (a few MB), and it is the same
    memory every time (fresh pages would fault in at every widening)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}

    def widen(self, weight: torch.Tensor) -> torch.Tensor:
        key = (tuple(weight.shape), weight.device)
        buffer = self.buffers.get(key)
        if buffer is None:
            buffer = self.buffers[key] = torch.empty(weight.shape, dtype=torch.float32,
                                                     device=weight.device)
        return buffer.copy_(weight)


_scratch = _Scratch()


def is_stored(weight: torch.Tensor) -> bool:
    """Whether ``weight`` is a frozen weight stored narrow whose products run in fp32."""
    return getattr(weight, "_tunelab_stored", False)


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype ``weight``'s products run in: fp32 for a stored weight, else its own."""
    return torch.float32 if is_stored(weight) else weight.dtype


def for_product(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as its product reads it: a stored weight widened into the scratch buffer of
    its shape (valid until the next widening of that shape), any other as it is."""
    return _scratch.widen(weight) if is_stored(weight) else weight


class _StoredProduct(torch.autograd.Function):
    """``x Wᵀ + b`` for a stored ``W``: the backward pass widens ``W`` again rather than
    keeping the widened copy (which the next layer's product overwrites)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, _scratch.widen(weight), bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ _scratch.widen(weight)
        if ctx.needs_input_grad[1]:
            flat = grad.reshape(-1, grad.shape[-1])
            grad_w = (flat.t() @ x.reshape(-1, x.shape[-1])).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b


class StoredLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is stored in bf16 (half the memory) and whose products run
    in fp32 on a copy widened just before each one: for a CPU where bf16 products are slow,
    a frozen base in half the memory for the cost of the widening. Input and result are fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x if x.dtype == torch.float32 else x.float()
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _StoredProduct.apply(x, self.weight, self.bias)
        return F.linear(x, _scratch.widen(self.weight), self.bias)


def _file_mapped(start: int, end: int) -> bool:
    """Whether the addresses ``[start, end)`` lie in one mapping of a file (``/proc/self/maps``:
    a path, not ``[heap]`` or an anonymous mapping)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, high = (int(a, 16) for a in fields[0].split("-"))
                if low <= start and end <= high:
                    return len(fields) == 6 and fields[5].strip().startswith("/")
    except (OSError, ValueError, IndexError):
        pass
    return False


def release_file_pages(tensor: torch.Tensor) -> bool:
    """Give back the resident pages of ``tensor``'s data where it is a view of a mapped file
    that nothing will read again (loading maps the weights' file; a weight converted to
    another dtype leaves its old pages resident while the mapping stays for the other
    weights): the whole pages inside its bytes, with ``madvise(MADV_DONTNEED)``, which for a
    file mapping drops them from this process and leaves the file as it is. Anything else
    (memory of our own, another system) is left alone. Whether pages were given back."""
    if tensor.device.type != "cpu" or not hasattr(os, "sysconf"):
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page
    if last <= first or not _file_mapped(start, end):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc.madvise(first, last - first, 4) == 0  # MADV_DONTNEED


def store_linear_weights(model: Any, skip: tuple = ()) -> int:
    """Make every plain bf16 ``nn.Linear`` of ``model`` (a model loaded in bf16) a
    ``StoredLinear`` (the weight stays bf16, its products run in fp32), except the modules in
    ``skip`` (the output head, whose weight may be the input embedding's); every other
    floating-point parameter and buffer (the embedding, the norms, the head, the biases) becomes
    fp32. The number of layers made stored."""
    stored = 0
    skipped = {id(m) for m in skip}
    for module in model.modules():
        if (type(module) is nn.Linear and module.weight.dtype == torch.bfloat16
                and id(module) not in skipped):
            module.weight._tunelab_stored = True
            module.__class__ = StoredLinear
            stored += 1
    widened: dict[int, nn.Parameter] = {}  # one fp32 copy of a tensor two modules share
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype == torch.bfloat16 and not is_stored(param):
                if id(param) not in widened:
                    widened[id(param)] = nn.Parameter(param.detach().float(),
                                                      requires_grad=param.requires_grad)
                    release_file_pages(param)
                module._parameters[name] = widened[id(param)]
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.dtype == torch.bfloat16:
                module._buffers[name] = buffer.float()
    return stored
