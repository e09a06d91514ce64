"""RMS norms that keep their output for the backward pass instead of their input.

transformers computes an RMS norm as plain operations (``x · rsqrt(mean(x²) + eps)``, then the
weight), and autograd keeps the norm's input ``x`` for the backward pass. The norm's output is
kept anyway: it is the input of the LoRA layers that follow (q/k/v, gate/up), which keep it for
their A matrices' gradients. So each decoder layer keeps two hidden-width vectors per token that
the output already determines: on the default model 135 of the ~820 KB a training step keeps
per token (docs/performance.md "Memory").

``fuse_rms_norms`` gives each RMS norm of a known kind a forward that keeps its output ``y``,
the per-token ``rstd`` and the weight instead, and a backward that gets the normalised input
back from them (the weight is frozen, so the input's gradient is the only one)::

    x̂ = y / w,   g_w = g · w,   ∂x = rstd · (g_w − x̂ · mean(g_w · x̂))

That needs a weight without zeros, checked once per norm, and a norm that computes what this
does, checked once per norm on a random input against its own forward; a norm that fails
either keeps its own forward, as does any call without gradients or with an input that is not
fp32 (the training step's hidden states are fp32: the frozen layers return fp32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.training.fused_lora import cast_once


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = w · x · rstd``, ``rstd = rsqrt(mean(x²) + eps)`` over the last dimension."""
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
    return (x * rstd).mul_(w), rstd


class _RmsNorm(torch.autograd.Function):
    """An RMS norm, ``w`` its weight (plus one for Gemma's norms) in fp32; keeps ``y`` (in
    ``keep``, the dtype a step keeps activations in, where one is given), ``rstd`` and ``w``
    for the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, eps: float,
                keep: torch.dtype | None) -> torch.Tensor:
        y, rstd = _rms_norm(x, w, eps)
        # the copy the LoRA layers reading y keep as well (fused_lora.cast_once): one for all
        ctx.save_for_backward(cast_once(y, keep) if keep is not None else y, rstd, w)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        y, rstd, w = ctx.saved_tensors
        y = y.to(g.dtype)  # as computed, where it was kept rounded (no copy otherwise)
        g_w = g * w
        x_hat = y / w
        dot = (g_w * x_hat).mean(-1, keepdim=True)
        return g_w.sub_(x_hat.mul_(dot)).mul_(rstd), None, None, None


# RMS norms by transformers' class names: y = w · x̂ (offset 0) or y = (1 + w) · x̂ (offset 1).
RMS_NORMS = {"LlamaRMSNorm": 0, "MistralRMSNorm": 0, "Qwen2RMSNorm": 0, "Qwen3RMSNorm": 0,
             "SmolLM3RMSNorm": 0, "Olmo2RMSNorm": 0, "GemmaRMSNorm": 1, "Gemma2RMSNorm": 1,
             "Gemma3RMSNorm": 1}


def _eps(norm: nn.Module) -> float | None:
    for name in ("variance_epsilon", "eps"):
        value = getattr(norm, name, None)
        if isinstance(value, float):
            return value
    return None


def _scale(norm: nn.Module) -> torch.Tensor:
    w = norm.weight.detach().float()
    return w + 1.0 if RMS_NORMS[type(norm).__name__] else w


def _fused_norm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if (x.dtype == torch.float32 and torch.is_grad_enabled() and not x.is_inference()
            and not self.weight.requires_grad):
        w = self.__dict__.get("_tunelab_scale")
        if w is None or w.device != x.device:
            w = self.__dict__["_tunelab_scale"] = _scale(self).to(x.device)
        return _RmsNorm.apply(x, w, self.__dict__["_tunelab_eps"],
                              self.__dict__.get("_tunelab_keep"))
    return type(self).forward(self, x)


def _computes_the_same(norm: nn.Module, eps: float) -> bool:
    """Whether ``norm``'s own forward equals ``_RmsNorm``'s on a random fp32 input, and its
    weight has no zero (the backward divides by it)."""
    w = _scale(norm)
    if not bool(torch.isfinite(w).all()) or bool((w == 0).any()):
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, w.shape[-1], generator=generator).to(norm.weight.device)
    with torch.no_grad():
        theirs = type(norm).forward(norm, x)
        ours, _ = _rms_norm(x, w.to(x.device), eps)
    return theirs.dtype == torch.float32 and bool(torch.allclose(theirs, ours, rtol=1e-5,
                                                                 atol=1e-6))


def fusable_norm(norm: nn.Module) -> bool:
    """Whether ``fuse_rms_norms`` gives ``norm`` the fused forward."""
    if type(norm).__name__ not in RMS_NORMS or getattr(norm, "weight", None) is None:
        return False
    eps = _eps(norm)
    return eps is not None and norm.weight.dim() == 1 and _computes_the_same(norm, eps)


def norms_fuse(model: nn.Module) -> bool:
    """Whether ``fuse_rms_norms`` will give every RMS norm of ``model`` the fused forward (what
    a training step keeps depends on it: ``memory.py``)."""
    norms = [m for m in model.modules() if type(m).__name__ in RMS_NORMS]
    return bool(norms) and all(fusable_norm(m) for m in norms)


def fuse_rms_norms(model: nn.Module, keep: torch.dtype | None = None) -> int:
    """Give every RMS norm of ``model`` that computes as ``_RmsNorm`` does the forward that
    keeps its output (in ``keep`` where given: ``fused_lora.keeps_bf16``; in place, on the
    instances); the number of norms changed."""
    changed = 0
    for module in model.modules():
        if "forward" not in module.__dict__ and fusable_norm(module):
            module.__dict__["_tunelab_eps"] = _eps(module)
            module.__dict__["_tunelab_keep"] = keep
            module.forward = _fused_norm_forward.__get__(module)
            changed += 1
    return changed


def unfuse_rms_norms(model: nn.Module) -> None:
    """Give the norms ``fuse_rms_norms`` changed their own forward back."""
    for module in model.modules():
        forward = module.__dict__.get("forward")
        if forward is not None and getattr(forward, "__func__", None) is _fused_norm_forward:
            del module.__dict__["forward"]
            module.__dict__.pop("_tunelab_scale", None)
            module.__dict__.pop("_tunelab_eps", None)
            module.__dict__.pop("_tunelab_keep", None)
