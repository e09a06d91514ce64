"""Greedy answers to several prompts at once: one forward pass per token for all of them.

On a CPU a decoding pass of a small model is bound by reading its weights from memory, not by
arithmetic: on the default model (bf16 base, AMD EPYC, 2 threads) a matrix product of one of
its MLP projections took 224 µs for 10 rows and 314 µs for 32, against 206 µs for one. So
answering 32 prompts together costs little more per pass than answering one, and scoring a test
file one prompt at a time spent most of its time reading the same weights again: `tunelab eval`
on 50 test examples took 6 min 54 s so, 1 min 9 s batched (docs/evaluation.md).

Every caller that scores greedy answers decodes through ``greedy_answers``: the validation
scoring of a training run (``training/evaluate.py``) and the ``Generator``'s answers to a test
file (``tunelab eval``, ``:evaluate``, the quality benchmark). Each answer is stopped as a
served answer is, by its own ``Reply`` (``catalog/stopping.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.catalog.copying import choose, prefer_copies, top_candidates
from tunelab.catalog.kv_cache import (
    Prefilled,
    cache_of,
    growing_cache,
    prefilled_cache,
    states_at,
    with_cache,
)
from tunelab.catalog.stopping import Reply, refuse_off_format

# Prompts answered together: at most ANSWER_BATCH, and as many as keep their decoding cache
# within CACHE_BYTES. A pass costs little more for 32 rows than for 16 (above): 32 prompts of the
# default model took 5.5-5.8 s together and 7.0-7.8 s as two batches of 16 (48-token answers,
# AMD EPYC, bf16 base, 2 threads). The cache is what grows with the rows: the keys and values
# of every layer for every token (fp32: the frozen layers return fp32, wide_linear.py), 46 KB
# a token on the default model, so 16 prompts of 2,000 tokens would hold 1.5 GB; the cap keeps
# long prompts to a few rows a batch.
ANSWER_BATCH = 32
CACHE_BYTES = 256 * 2**20


def cache_bytes_per_token(config: Any) -> int:
    """The decoding cache's bytes per token of ``config``'s model (fp32 keys and values in
    every layer; a model whose shape is not given is taken as the default model)."""
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", None) or 30
    heads = getattr(config, "num_attention_heads", None) or 9
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (
        getattr(config, "hidden_size", 576) // heads)
    return layers * 2 * kv_heads * head_dim * 4


def answer_batches(lengths: Sequence[int], budget: int, config: Any, rows_each: int = 1,
                   cache_bytes: int = CACHE_BYTES) -> list[list[int]]:
    """The prompts (of ``lengths`` tokens, answers of at most ``budget`` tokens) cut into
    batches in their order: at most ``ANSWER_BATCH`` each, and as many as keep the cache of
    the batch's rows (``rows_each`` a prompt, each as long as its longest prompt plus the
    budget) within ``cache_bytes``; at least one each."""
    per_token = cache_bytes_per_token(config)
    batches: list[list[int]] = []
    widest = 0
    for i, n in enumerate(lengths):
        if batches:
            wider = max(widest, n)
            rows = len(batches[-1]) + 1
            if (rows <= ANSWER_BATCH
                    and rows * rows_each * (wider + budget) * per_token <= cache_bytes):
                batches[-1].append(i)
                widest = wider
                continue
        batches.append([i])
        widest = n
    return batches


def greedy_answers(model: Any, prompts: Sequence[list[int]], replies: Sequence[Reply],
                   pad_id: int | None, device: Any,
                   prefilled: Sequence[Prefilled | None] | None = None) -> list[str]:
    """Every reply finished greedily, and each one's text: a reply already done is not decoded
    again, and one that already holds tokens (``start_from_choices``) goes on from its prompt
    (token ids) followed by them. The rest are decoded together: the prompts padded on the
    left, each with its own positions, each token fed to its ``Reply`` until every one is done.
    ``prefilled`` (one per reply, or None): the keys and values a pass that read the choices
    already computed (``kv_cache.states_at``); where every row to decode has them for all its
    tokens but the last, decoding begins from them instead of computing its prompts again.
    The caller chooses the grad mode (``torch.no_grad`` in training, where tensors made in
    inference mode could not take part in the steps that follow; else ``inference_mode``)."""
    rows = [i for i, r in enumerate(replies) if not r.done]
    if rows:
        sequences = [list(prompts[i]) + replies[i].ids for i in rows]
        ready = None
        if prefilled is not None:
            ready = [prefilled[i] for i in rows]
            if not all(p is not None and p.tokens == s[:-1] for p, s in zip(
                    ready, sequences, strict=True)):
                ready = None
        _decode(model, sequences, [replies[i] for i in rows], pad_id, device, ready)
    return [r.text() for r in replies]


def _decode(model: Any, prompts: list[list[int]], replies: list[Reply], pad_id: int | None,
            device: Any, prefilled: list[Prefilled] | None = None) -> None:
    """``prompts`` decoded on, each token fed to its reply. With ``prefilled`` (each row's
    keys and values for all its tokens but the last) the first pass reads one token a row."""
    import torch

    # no row holds more than its prompt's width and the largest budget left (kv_cache.py)
    budget = max(r.budget - len(r.ids) for r in replies)
    if prefilled is None:
        width = max(len(p) for p in prompts)
        pad = pad_id if pad_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        past, cur = growing_cache(model.config, width + budget), ids
    else:
        width = max(len(p) for p in prompts) - 1  # the cached part, padded on the left
        mask = torch.tensor([[0] * (width + 1 - len(p)) + [1] * len(p) for p in prompts],
                            device=device)
        positions = torch.tensor([[len(p) - 1] for p in prompts], device=device)
        past = prefilled_cache(model.config, prefilled, width + 1 + budget)
        cur = torch.tensor([[p[-1]] for p in prompts], device=device)
    while not all(r.done for r in replies):
        out = model(input_ids=cur, attention_mask=mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **with_cache(model, past))
        past = cache_of(out)
        logits = out.logits[:, -1]
        # no end before an answer's format is whole, no token off its shape (stopping.py)
        refuse_off_format(logits, replies)
        prefer_copies(logits, replies)  # near-equal tokens: the one copying the prompt (copying.py)
        nxt = torch.argmax(logits, dim=-1).tolist()
        for reply, t in zip(replies, nxt, strict=True):
            if not reply.done:
                reply.add(t)
        cur = torch.tensor([[t] for t in nxt], device=device)
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=-1)
        positions = positions[:, -1:] + 1


def head_logits(lm: Any, hidden: Any) -> Any:
    """Next-token logits from final hidden states: the output head's, in fp32, through the
    logit soft cap where the model has one (Gemma 2's), as the model's own forward makes them."""
    import torch

    logits = lm.get_output_embeddings()(hidden).float()
    config = getattr(lm.config, "text_config", None) or lm.config
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# Expected-output positions whose logits are made at once when reading greedy's choices (a
# vocabulary of 262,144 makes 64 of them 64 MB in fp32).
CHOICE_CHUNK = 64


def choices_along(model: Any, prompts: Sequence[list[int]], outputs: Sequence[list[int]],
                  pad_id: int | None, device: Any, cache: Any = None
                  ) -> list[list[tuple[list[float], list[int]]]]:
    """Greedy's candidates for the next token (the ``CANDIDATES`` most likely: logits and
    token ids, most likely first) after the prompt and after every prefix of the expected
    output, for each (prompt, expected output tokens) pair: one forward pass for all of them
    (rows padded on the right), logits only where a choice is read. As long as each choice
    equals the expected token, greedy decoding would have chosen exactly these tokens; so a
    model that has learnt its task has most answers decided by this one pass
    (``start_from_choices``), and the rest are decoded on from their first mismatch.
    ``cache`` (``kv_cache.pass_cache``): the pass's keys and values are kept in it, each row's
    token ``j`` at column ``j`` (``pass_states``)."""
    import torch

    lengths = [len(p) + len(o) - 1 for p, o in zip(prompts, outputs, strict=True)]
    width = max(lengths, default=0)
    if width <= 0:
        return [[] for _ in prompts]
    pad = pad_id if pad_id is not None else 0
    rows = [(list(p) + list(o))[:n] for p, o, n in zip(prompts, outputs, lengths, strict=True)]
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = lm.get_decoder()
    kept = {} if cache is None else with_cache(decoder, cache)
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=cache is not None, **kept
                     ).last_hidden_state
    at_rows = [r for r, o in enumerate(outputs) for _ in o]
    at_cols = [len(p) - 1 + j for p, o in zip(prompts, outputs, strict=True)
               for j in range(len(o))]
    picked = hidden[at_rows, at_cols]
    flat = [candidate for i in range(0, picked.shape[0], CHOICE_CHUNK)
            for candidate in top_candidates(head_logits(lm, picked[i:i + CHOICE_CHUNK]))]
    out, at = [], 0
    for o in outputs:
        out.append(flat[at:at + len(o)])
        at += len(o)
    return out


def states_before_last(cache: Any, row: int, columns: Sequence[int], tokens: Sequence[int],
                       prompt_length: int, reply: Reply) -> Prefilled | None:
    """The keys and values a pass (kept in ``cache``) computed for an undecided ``reply``'s
    prompt and all its tokens but the last (those it holds match the expected output's up to
    its last), or its prompt but the last token where it holds none: to decode on from
    (``greedy_answers``). ``columns``: where the pass laid the example's prompt and expected
    output in ``row``, in order; ``tokens``: what it read there. None for a reply that is
    done, or whose tokens before its last run past what the pass read."""
    n = prompt_length + len(reply.ids) - 1
    if reply.done or n < 1 or n > len(columns):
        return None
    return states_at(cache, row, list(columns[:n]), list(tokens[:n]))


def pass_states(cache: Any, prompts: Sequence[list[int]], outputs: Sequence[list[int]],
                replies: Sequence[Reply]) -> list[Prefilled | None]:
    """``states_before_last`` for each reply of a ``choices_along`` pass (row ``r``'s token
    ``j`` at column ``j``)."""
    kept: list[Prefilled | None] = []
    for r, (p, o, reply) in enumerate(zip(prompts, outputs, replies, strict=True)):
        row = (list(p) + list(o))[:len(p) + len(o) - 1]  # what the pass read in row r
        kept.append(states_before_last(cache, r, range(len(row)), row, len(p), reply))
    return kept


def start_from_choices(reply: Reply, expected: Sequence[int],
                       candidates: Sequence[tuple[Sequence[float], Sequence[int]]]) -> Reply:
    """``reply`` fed with greedy's choices (``choose`` among each position's ``candidates``,
    from ``choices_along`` or a loss pass) as far as they determine the answer: to its end,
    or up to and including the first choice that differs from the ``expected`` token
    (greedy's choice after a prefix greedy also chose). Candidates off the answer's shape are
    passed over (``Reply.allowed``): greedy's choice is the first that keeps it."""
    for want, (values, ids) in zip(expected, candidates, strict=True):
        allowed = reply.allowed()
        if allowed is not None:
            kept = [(v, i) for v, i in zip(values, ids, strict=True)
                    if reply.may_take(i, allowed)]
            if not kept:
                break  # no candidate keeps the shape: decoded on from here (stopping.py)
            values, ids = [v for v, _ in kept], [i for _, i in kept]
        if ids[0] in reply.end_ids and not reply.may_end:
            break  # greedy's end refused (stopping.py): decoded on from here
        got = choose(reply, values, ids)  # near-equal tokens: the copy (copying.py)
        reply.add(got)
        if reply.done or got != want:
            break
    return reply
