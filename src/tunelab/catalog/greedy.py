"""Greedy answers to several prompts at once: one forward pass per token for all of them.

On a CPU a decoding pass of a small model is bound by reading its weights from memory, not by
arithmetic: on the default model (bf16 base, AMD EPYC, 2 threads) a matrix product of one of
its MLP projections took 224 µs for 10 rows and 314 µs for 32, against 206 µs for one. So
answering 16 prompts together costs little more per pass than answering one, and scoring a test
file one prompt at a time spent most of its time reading the same weights again: `tunelab eval`
on 50 test examples took 6 min 54 s so, and 5.7-6.9x less batched (docs/evaluation.md).

Every caller that scores greedy answers decodes through ``greedy_answers``: the validation
scoring of a training run (``training/evaluate.py``) and the ``Generator``'s answers to a test
file (``tunelab eval``, ``:evaluate``, the quality benchmark). Each answer is stopped as a
served answer is, by its own ``Reply`` (``catalog/stopping.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.catalog.kv_cache import cache_of, growing_cache, with_cache
from tunelab.catalog.stopping import Reply

# Prompts answered together. A pass costs little more for 16 rows than for one (above); the
# rows' caches and the last token's logits (16 × the vocabulary) stay small.
ANSWER_BATCH = 16


def greedy_answers(model: Any, prompts: Sequence[list[int]], replies: Sequence[Reply],
                   pad_id: int | None, device: Any) -> list[str]:
    """The greedy answer to each prompt (token ids), decoded together: the prompts padded on
    the left, each with its own positions, each answer fed to its ``Reply`` until every one is
    done. The caller chooses the grad mode (``torch.no_grad`` in training, where tensors made in
    inference mode could not take part in the steps that follow; else ``inference_mode``)."""
    import torch

    if not prompts:
        return []
    width = max(len(p) for p in prompts)
    pad = pad_id if pad_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                        device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    past, cur = growing_cache(model.config), ids
    while not all(r.done for r in replies):
        out = model(input_ids=cur, attention_mask=mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **with_cache(model, past))
        past = cache_of(out)
        nxt = torch.argmax(out.logits[:, -1], dim=-1).tolist()
        for reply, t in zip(replies, nxt, strict=True):
            if not reply.done:
                reply.add(t)
        cur = torch.tensor([[t] for t in nxt], device=device)
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=-1)
        positions = positions[:, -1:] + 1
    return [r.text() for r in replies]
