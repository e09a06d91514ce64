"""Attention of packed examples computed example by example.

A packed row (``data/batches.py`` ``pack``) holds several examples one after another. Given
their restarting positions, transformers builds a block-diagonal causal mask and computes the
attention of the whole row against it: a row of width W costs W² however its examples divide it,
and the masked kernel cannot skip the blocks that are all masked. With examples of lengths L₁…Lₙ
in the row only ΣLᵢ² of that is wanted. On the throughput benchmark attention was a fifth of a
training step's CPU time.

``segment_attention`` is registered with transformers as an attention implementation. While a
packed batch's forward pass runs inside ``segments(batch.segments)``, each example's queries
attend to its own keys through plain causal attention (PyTorch's kernel, no mask to build or
read); the padding at a row's end is not computed at all (its outputs are zeros, and no loss
reads them). On a CPU one autograd function does it, forward and backward (``_by_example_
function``): it calls PyTorch's CPU flash-attention kernel per example and writes each result
straight into the row's output and gradients, where autograd would give each example's slice a
gradient the size of the whole row, zero it and add them up (1.05× the training step's speed on
the throughput benchmark, the same kernels). Other devices go through
``F.scaled_dot_product_attention`` example by example. Anything else, and any call outside the
context, is transformers' own SDPA attention with the mask it was given, unchanged. Layers with
a sliding window shorter than an example (Gemma 3's local layers) also take transformers' path.

A row may begin with a **shared prefix** (``pack(share_prefix=True)``): the tokens every example
of the batch begins with, laid once, each example's rest following. Each example then attends
over the prefix and its own tokens. The row's first example is one causal attention over the
prefix and its rest, whose prefix outputs are the row's; a later example's queries are its rest
alone, attending to the prefix's keys and values and its own under a lower-right causal mask (on
other devices it computes the prefix's queries again and drops their outputs). The gradients
that reach the prefix's keys and values from every example add up, as they would in each
example's own copy of the prefix. Transformers' path cannot read such a row (its mask would cut
the examples off their prefix), so where a layer would fall back to it with a prefix the call
fails instead of computing something else.

The trainer switches its private copy of the model (never the served base) to this
implementation, and checks before it packs that two packed examples give the hidden states each
gives alone (``loop.packing_works``), and before it shares prefixes that two examples sharing
one give them too (``loop.prefix_sharing_works``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

NAME = "tunelab_segments"


class _Active(threading.local):
    segments: Sequence[Sequence[tuple[int, int]]] | None = None
    prefix: int = 0
    keep: Any = None


_active = _Active()
_registered: list[bool] = []


@contextmanager
def segments(rows: Sequence[Sequence[tuple[int, int]]] | None, prefix: int = 0,
             keep: Any = None) -> Iterator[None]:
    """Within this context a packed forward pass attends example by example. ``rows``: for each
    row of the batch, the (start, length) of each example in it; None: no packing. ``prefix``:
    the shared prefix at each row's start (``Batch.prefix``), which every example attends to.
    ``keep``: the dtype the attention keeps its values and output in for the
    backward pass (``fused_lora.keeps_bf16``), None: as computed."""
    previous = _active.segments, _active.prefix, _active.keep
    _active.segments, _active.prefix, _active.keep = rows, prefix, keep
    try:
        yield
    finally:
        _active.segments, _active.prefix, _active.keep = previous


def use_segment_attention(model: Any) -> bool:
    """Switch ``model`` (a private copy: its config is its own) to ``segment_attention`` where
    it uses transformers' SDPA attention; whether it did."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    config._attn_implementation = NAME
    return True


def _register() -> None:
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from tunelab.catalog.labels import reads_masks_as_sdpa

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the fallback reads SDPA's mask
    reads_masks_as_sdpa(NAME)  # and applies a mask it is given as SDPA does
    _registered.append(True)


def segment_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
                      ) -> tuple[Any, None]:
    """transformers' attention-function signature; see the module's docstring."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, prefix = _active.segments, _active.prefix
    batch, heads, width, dim = query.shape
    window = getattr(module, "sliding_window", None)
    if (rows is None or len(rows) != batch or key.shape[2] != width or dropout
            or kwargs.get("softcap") is not None or (window and max(
                (prefix + n for row in rows for _, n in row), default=0) > window)):
        if prefix and rows is not None:
            raise RuntimeError("a row with a shared prefix needs attention by example")
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.device.type == "cpu":
        out = _by_example_function().apply(query, key, value, rows, prefix, scaling,
                                           _active.keep)
    else:
        out = _by_example(query, key, value, rows, prefix, scaling)
    return out.transpose(1, 2).contiguous(), None


def _by_example(query: Any, key: Any, value: Any, rows: Sequence[Sequence[tuple[int, int]]],
                prefix: int, scaling: float | None) -> Any:
    """Attention by example through ``F.scaled_dot_product_attention`` (any device; autograd
    differentiates it): each example's causal attention, written into the row's output."""
    import torch
    import torch.nn.functional as F

    batch, heads, width, dim = query.shape
    gqa = key.shape[1] != heads
    out_rows = []
    for r, row in enumerate(rows):
        pieces, end = [], 0
        for i, (start, n) in enumerate(row):
            later = bool(prefix) and i > 0
            q, k, v, _ = _pieces(query, key, value, r, start, n, prefix, later)
            if later:  # the prefix's queries too, as one causal sequence; their outputs are
                # the row's first example's
                q = torch.cat((query[r:r + 1, :, :prefix], q), dim=2)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling,
                                                 enable_gqa=gqa)
            pieces.append(out[:, :, prefix:] if later else out)
            end = start + n
        if end < width:  # the row's padding
            pieces.append(query.new_zeros((1, heads, width - end, dim)))
        out_rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    return torch.cat(out_rows, dim=0) if len(out_rows) > 1 else out_rows[0]


def _pieces(query: Any, key: Any, value: Any, r: int, start: int, n: int, prefix: int,
            later: bool) -> tuple[Any, Any, Any, int]:
    """One example's queries, keys and values in row ``r``, and where its queries begin. With a
    prefix, the row's first example is one slice from the row's start (the prefix and its rest);
    a later example's queries are its rest alone, its keys and values the prefix's joined to
    its rest's."""
    import torch

    if later:
        k, v = (torch.cat((t[r:r + 1, :, :prefix], t[r:r + 1, :, start:start + n]), dim=2)
                for t in (key, value))
        return query[r:r + 1, :, start:start + n], k, v, start
    first = 0 if prefix else start
    q, k, v = (t[r:r + 1, :, first:start + n] for t in (query, key, value))
    return q, k, v, first


def _lower_right(n: int, total: int, like: Any) -> Any:
    """The additive causal mask of ``n`` queries that are the last ``n`` of ``total`` keys'
    positions (each sees every key up to its own position)."""
    import torch

    seen = torch.ones(n, total, dtype=torch.bool, device=like.device).tril(total - n)
    return torch.zeros(n, total, dtype=like.dtype, device=like.device).masked_fill_(
        ~seen, float("-inf"))


@cache
def _by_example_function() -> Any:
    """The autograd function below, made on first use (this module imports torch lazily)."""
    import torch

    from tunelab.training.fused_lora import keep_cast

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

    class ByExample(torch.autograd.Function):
        """Attention by example on a CPU, forward and backward in one function: PyTorch's CPU
        flash-attention kernel once per example, each writing straight into the row's output
        and, in the backward, into the row's gradients. Through autograd each example's slice
        of the queries, keys and values would get a gradient of the whole row's size, zeroed
        and then summed with the others (9 such tensors a layer on the benchmark's batches).
        A later example of a row with a shared prefix computes only its own queries (against
        the prefix's keys and its own, with a lower-right causal mask) instead of the prefix's
        again. The kernel, its inputs and its results are the ones ``F.scaled_dot_product_
        attention`` uses on a CPU (``tests/unit/test_packing.py`` compares the gradients)."""

        @staticmethod
        def forward(ctx: Any, query: Any, key: Any, value: Any, rows: Any, prefix: int,
                    scale: float | None, keep: Any) -> Any:
            batch, heads, width, dim = query.shape
            # laid out as the caller wants it back (tokens, then heads): no copy to reorder it
            out = query.new_empty(batch, width, heads, dim).transpose(1, 2)
            calls, lses = [], []
            for r, row in enumerate(rows):
                end = 0
                for i, (start, n) in enumerate(row):
                    later = bool(prefix) and i > 0
                    q, k, v, first = _pieces(query, key, value, r, start, n, prefix, later)
                    mask = _lower_right(n, prefix + n, query) if later else None
                    o, lse = flash(q, k, v, 0.0, not later, attn_mask=mask, scale=scale)
                    out[r:r + 1, :, first:start + n] = o
                    calls.append((r, start, n, later, mask))
                    lses.append(lse)
                    end = start + n
                if end < width:  # the row's padding
                    out[r, :, end:].zero_()
            if keep is not None and any(ctx.needs_input_grad[:3]):
                # the values and the output kept rounded, for the backward pass only
                # (fused_lora.keeps_bf16); the output cast once, for the output projection
                # that reads it next too. Not the queries and keys: the backward pass makes
                # the attention weights again from them and the forward's log-sum-exp, and
                # rounded ones would not sum to one (1.6% off the adapter's gradient on the
                # default model, against 0.6% with the values and output rounded)
                kept = [query, key, value.to(keep)]
                laid = out.transpose(1, 2)  # the buffer as laid out (tokens, then heads)
                kept.append(keep_cast(laid, laid.to(keep)).transpose(1, 2))
            else:
                kept = [query, key, value, out]
            ctx.save_for_backward(*kept, *lses)
            ctx.calls, ctx.prefix, ctx.scale = calls, prefix, scale
            return out

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple:
            query, key, value, out, *lses = ctx.saved_tensors
            # the values and output in the queries' dtype again where they were kept rounded
            value, out = value.to(query.dtype), out.to(query.dtype)
            prefix = ctx.prefix
            gq, gk, gv = (torch.zeros_like(t) for t in (query, key, value))
            for (r, start, n, later, mask), lse in zip(ctx.calls, lses, strict=True):
                q, k, v, first = _pieces(query, key, value, r, start, n, prefix, later)
                dq, dk, dv = flash_backward(
                    grad[r:r + 1, :, first:start + n], q, k, v, out[r:r + 1, :, first:start + n],
                    lse, 0.0, not later, attn_mask=mask, scale=ctx.scale)
                gq[r:r + 1, :, first:start + n] = dq
                if later:  # the prefix's keys and values gather every example's gradient
                    gk[r:r + 1, :, :prefix] += dk[:, :, :prefix]
                    gv[r:r + 1, :, :prefix] += dv[:, :, :prefix]
                    gk[r:r + 1, :, start:start + n] = dk[:, :, prefix:]
                    gv[r:r + 1, :, start:start + n] = dv[:, :, prefix:]
                else:
                    gk[r:r + 1, :, first:start + n] += dk
                    gv[r:r + 1, :, first:start + n] += dv
            return gq, gk, gv, None, None, None, None

    return ByExample
