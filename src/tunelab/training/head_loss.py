"""The output head and its cross-entropy in one autograd function.

The loss of a training step is the cross-entropy of the output tokens' logits: a vocabulary
wide row per output token (49,152 for SmolLM2, 262,144 for Gemma 3). Done as
``F.cross_entropy(head(h).float(), targets)``, each of those rows is written and read many
times over: the head's result, its fp32 copy, the log-softmax (kept for the backward), then in
the backward a zero-filled gradient with one entry set, the log-softmax's gradient and its copy
back to the head's dtype. On a CPU those passes over memory cost more than the head's matmul
itself: profiled on the throughput benchmark's steps (default model, bf16 base, AMX machine),
the vocabulary-wide copies, fills and log-softmax took ~15% of the step's CPU time
(docs/performance.md).

``head_cross_entropy`` computes the same sum of cross-entropies (up to rounding) in a few
passes, a block of rows at a time so no temporary is larger than ``BLOCK_ELEMENTS``::

    forward:   z = head(h) (the head's dtype, as its matmul returns it); lse = logsumexp(z);
               loss = Σ lse − z[target]
    backward:  ∂z = g · (exp(z − lse) − onehot(target)), made in place in one fp32 block;
               ∂h = ∂z W (in the head weight's dtype, as autograd does it for the plain head)

``keep_logits``: the logits are kept for the backward pass in the head's dtype (half of an
fp32 copy with a bf16 head); otherwise (a run short of memory, ``memory.py``) nothing
vocabulary-wide is kept and each block's logits are made again in the backward pass.

It applies to a plain frozen linear head (``nn.Linear`` or ``WideLinear``) without logit
soft-capping; anything else keeps the plain path (``usable``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.catalog.wide_linear import WideLinear

# At most this many logits per block (fp32: 16 MB), so a block's temporaries stay below the
# allocator's mmap threshold (allocator.py) and are reused rather than mapped anew.
BLOCK_ELEMENTS = 1 << 22


def usable(head: Any, config: Any) -> bool:
    """Whether ``head_cross_entropy`` computes ``head``'s loss: a frozen plain linear head and
    no logit soft-capping."""
    return (type(head) in (nn.Linear, WideLinear) and not head.weight.requires_grad
            and (head.bias is None or not head.bias.requires_grad)
            and not getattr(config, "final_logit_softcapping", None))


def _block_rows(n: int, vocab: int) -> int:
    """Rows of a block: as many as ``BLOCK_ELEMENTS`` holds, at most ``n``, at least one."""
    return max(1, min(n, BLOCK_ELEMENTS // max(1, vocab)))


class _HeadCrossEntropy(torch.autograd.Function):
    """Each block's logits are made in the head's dtype (into the kept logits, or a scratch
    block), copied into one fp32 work block and turned there, in place, into what is needed;
    the work block is made once per call and handed on to the backward pass, so a step maps
    fresh memory for it once (a block allocated anew each time costs a page fault per 4 KB).

    Where the logits are kept, they are made by one product for every row, and the backward
    pass writes each block's gradient over them and makes ``∂h`` by one product too: a product
    per block reads (and the BLAS library repacks) the whole vocabulary-wide weight once per
    block (85 rows with SmolLM2's 49,152 tokens). On the throughput benchmark's steps in fp32
    the head's products ran at 96 GFLOP/s a block at a time, against 160 for the model's other
    large products (docs/performance.md)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, keep_logits: bool) -> torch.Tensor:
        n, vocab = hidden.shape[0], weight.shape[0]
        step = _block_rows(n, vocab)
        h = hidden.to(weight.dtype)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        picked = torch.empty(n, dtype=torch.float32, device=hidden.device)
        kept = (torch.empty((n, vocab), dtype=weight.dtype, device=hidden.device)
                if keep_logits else None)
        work = torch.empty((step, vocab), dtype=torch.float32, device=hidden.device)
        scratch = (None if kept is not None or weight.dtype == torch.float32 else
                   torch.empty((step, vocab), dtype=weight.dtype, device=hidden.device))
        if kept is not None:  # one product for every row (see the class's docstring)
            _logits_into(h, weight, bias, kept)
        for i in range(0, n, step):
            j = min(n, i + step)
            w = work[:j - i]
            z = kept[i:j] if kept is not None else _logits_into(
                h[i:j], weight, bias, scratch[:j - i] if scratch is not None else w)
            picked[i:j] = z.gather(1, targets[i:j, None]).squeeze(1)
            _to_work(z, w)
            top = w.amax(dim=-1, keepdim=True)
            lse[i:j] = w.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(1))
        ctx.save_for_backward(h, weight, bias, targets, lse)
        # held by the function, not saved through autograd: the backward pass writes the
        # gradient over them, which autograd would refuse for a saved tensor
        ctx.kept, ctx.hidden_dtype, ctx.work, ctx.scratch = kept, hidden.dtype, work, scratch
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        h, weight, bias, targets, lse = ctx.saved_tensors
        n, vocab = h.shape[0], weight.shape[0]
        # let go when this pass ends; a second pass (a retained graph) makes its own, and the
        # logits again, block by block: this pass turns the kept ones into their gradient
        kept, work, scratch = ctx.kept, ctx.work, ctx.scratch
        ctx.kept = ctx.work = ctx.scratch = None
        if work is None:
            work = torch.empty((_block_rows(n, vocab), vocab), dtype=torch.float32,
                               device=h.device)
        step = work.shape[0]
        in_place = kept is not None and kept.dtype == torch.float32  # no copy to make
        narrow = None if kept is not None or weight.dtype == torch.float32 else (
            scratch if scratch is not None else torch.empty_like(work, dtype=weight.dtype))
        grad_h = torch.empty((n, h.shape[1]), dtype=ctx.hidden_dtype, device=h.device)
        for i in range(0, n, step):
            j = min(n, i + step)
            w = kept[i:j] if in_place else work[:j - i]
            if not in_place:
                _to_work(kept[i:j] if kept is not None else _logits_into(
                    h[i:j], weight, bias, narrow[:j - i] if narrow is not None else w), w)
            w.sub_(lse[i:j, None]).exp_()  # the softmax
            flat = torch.arange(j - i, device=w.device) * vocab + targets[i:j]
            w.view(-1).index_add_(0, flat, torch.full_like(flat, -1, dtype=w.dtype))
            w.mul_(grad)
            if kept is not None:  # the gradient in the head's dtype, where the logits were
                if not in_place:
                    kept[i:j].copy_(w)
                continue
            if narrow is not None:  # the gradient in the head's dtype, as autograd has it
                g = narrow[:j - i]
                g.copy_(w)
            else:
                g = w
            grad_h[i:j] = g @ weight
        if kept is not None:  # one product for every row, as in the forward pass
            grad_h.copy_(kept @ weight)
        return grad_h, None, None, None, None


def _to_work(z: torch.Tensor, work: torch.Tensor) -> None:
    """A block's logits into the fp32 work block (nothing to do where they were made there)."""
    if z is not work:
        work.copy_(z)


def _logits_into(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 out: torch.Tensor) -> torch.Tensor:
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)  # as F.linear adds it


def head_cross_entropy(head: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                       keep_logits: bool = True) -> torch.Tensor:
    """Σ cross-entropy of ``head(hidden)`` (one row per target) against ``targets``, as
    ``F.cross_entropy(head(hidden).float(), targets, reduction="sum")`` computes it."""
    return _HeadCrossEntropy.apply(hidden, head.weight, head.bias, targets, keep_logits)
