"""Attention of packed examples computed example by example.

A packed row (``data/batches.py`` ``pack``) holds several examples one after another. Given
their restarting positions, transformers builds a block-diagonal causal mask and computes the
attention of the whole row against it: a row of width W costs W² however its examples divide
it, and the masked kernel cannot skip the blocks that are all masked. With examples of lengths
L₁…Lₙ in the row only ΣLᵢ² of that is wanted. On the throughput benchmark attention was a
fifth of a training step's CPU time.

``segment_attention`` is registered with transformers as an attention implementation. While a
packed batch's forward pass runs inside ``segments(batch.segments)``, each example's queries
attend to its own keys through plain causal attention (PyTorch's kernel, no mask to build or
read); the padding at a row's end is not computed at all (its outputs are zeros, and no loss
reads them). Anything else, and any call outside the context, is transformers' own SDPA
attention with the mask it was given, unchanged. Layers with a sliding window shorter than an
example (Gemma 3's local layers) also take transformers' path.

A row may begin with a **shared prefix** (``pack(share_prefix=True)``): the tokens every example
of the batch begins with, laid once, each example's rest following. Each example then attends
over the prefix and its own tokens: one causal attention over the prefix's queries, keys and
values followed by the example's, of which the prefix's outputs are kept once (from the row's
first example) and the rest for each example. The gradients that reach the prefix's keys and
values from every example add up, as they would in each example's own copy of the prefix.
Transformers' path cannot read such a row (its mask would cut the examples off their prefix),
so where a layer would fall back to it with a prefix the call fails instead of computing
something else.

The trainer switches its private copy of the model (never the served base) to this
implementation, and checks before it packs that two packed examples give the hidden states each
gives alone (``loop.packing_works``), and before it shares prefixes that two examples sharing
one give them too (``loop.prefix_sharing_works``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

NAME = "tunelab_segments"


class _Active(threading.local):
    segments: Sequence[Sequence[tuple[int, int]]] | None = None
    prefix: int = 0


_active = _Active()
_registered: list[bool] = []


@contextmanager
def segments(rows: Sequence[Sequence[tuple[int, int]]] | None, prefix: int = 0
             ) -> Iterator[None]:
    """Within this context a packed forward pass attends example by example. ``rows``: for each
    row of the batch, the (start, length) of each example in it; None: no packing. ``prefix``:
    the shared prefix at each row's start (``Batch.prefix``), which every example attends to."""
    previous = _active.segments, _active.prefix
    _active.segments, _active.prefix = rows, prefix
    try:
        yield
    finally:
        _active.segments, _active.prefix = previous


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

    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the fallback reads SDPA's mask
    _registered.append(True)


def segment_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
                      ) -> tuple[Any, None]:
    """transformers' attention-function signature; see the module's docstring."""
    import torch
    import torch.nn.functional as F
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
    gqa = key.shape[1] != heads
    out_rows = []
    for r, row in enumerate(rows):
        pieces, end = [], 0
        for start, n in row:  # one after another from the row's start (data/batches.py)
            # with a prefix, the prefix and the example's rest attend as one sequence: the
            # row's first example follows the prefix (one slice, whose outputs keep the
            # prefix's), a later one is joined to it (the prefix's outputs dropped)
            later = bool(prefix and pieces)
            first = 0 if prefix and not later else start
            q, k, v = (t[r:r + 1, :, first:start + n] for t in (query, key, value))
            if later:
                q, k, v = (torch.cat((t[r:r + 1, :, :prefix], part), dim=2)
                           for t, part in ((query, q), (key, k), (value, v)))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling,
                                                 enable_gqa=gqa)
            pieces.append(out[:, :, prefix:] if later else out)
            end = start + n
        if end < width:  # the row's padding
            pieces.append(query.new_zeros((1, heads, width - end, dim)))
        out_rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(out_rows, dim=0) if len(out_rows) > 1 else out_rows[0]
    return out.transpose(1, 2).contiguous(), None
