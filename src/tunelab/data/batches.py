"""Tokenize examples with the base model's template and build padded training batches.

Only output tokens are learned from: each tokenized example keeps its prompt and its output
apart, and a batch records which positions predict an output token, so the trainer computes
the LM head only there (for small models the LM head is the largest matmul: Gemma's
vocabulary has 262,144 entries).

The user's text (inputs, outputs, system prompts, prompts at serving time) is encoded as plain
text: a ``<|im_end|>`` typed into it becomes the characters ``<``, ``|``, … and never the
control token that closes a turn; only the template's own control tokens are control tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.catalog.templates import Piece, Template, Turn
from tunelab.data.examples import Example


@dataclass(frozen=True)
class TokenizedExample:
    prompt_ids: list[int]
    output_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


_SPECIAL_IDS: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """The ids a tokenizer gives text it treats as control tokens (its special added tokens);
    computed once per tokenizer."""
    ids = _SPECIAL_IDS.get(tokenizer)
    if ids is None:
        ids = frozenset(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
        ids |= frozenset(tokenizer.all_special_ids)
        _SPECIAL_IDS[tokenizer] = ids
    return ids


def encode_pieces(tokenizer: Any, pieces: list[Piece]) -> list[int]:
    """Token ids of rendered ``pieces`` in which only the control pieces are control tokens.

    The whole text is tokenized first, as it always was; when it holds exactly the template's
    control tokens (the user's text holds none) that is the answer, so ordinary text is
    encoded as before to the token. Otherwise the plain pieces are encoded again with the
    tokenizer's special tokens split into plain text. Splitting at control tokens keeps every
    other token as it was: tokenizers split their input at special tokens before anything
    else."""
    ids = tokenizer("".join(text for text, _ in pieces), add_special_tokens=False)["input_ids"]
    specials = _special_ids(tokenizer)
    if sum(1 for i in ids if i in specials) == sum(1 for _, control in pieces if control):
        return ids
    out: list[int] = []
    for text, control in pieces:
        out += tokenizer(text, add_special_tokens=False,
                         split_special_tokens=not control)["input_ids"]
    return out


def encode_prompt(
    tokenizer: Any, template: Template, turns: list[Turn], system: str | None
) -> list[int]:
    ids = encode_pieces(tokenizer, template.pieces(turns, system))
    if template.bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return ids


def label_token_ids(tokenizer: Any, template: Template, labels: Sequence[str]) -> list[list[int]]:
    """Each label's tokens as the model writes it as an output: the label, then the end of its
    turn (a tuned classifier's labels, ``catalog/labels.py``)."""
    return [encode_pieces(tokenizer, template.output_pieces(label)) for label in labels]


def tokenize_example(tokenizer: Any, template: Template, ex: Example) -> TokenizedExample:
    prompt = encode_prompt(tokenizer, template, [("user", ex.text_input)], ex.system)
    output = encode_pieces(tokenizer, template.output_pieces(ex.output))
    return TokenizedExample(prompt, output)


@dataclass
class Batch:
    """A padded batch. ``predict_rows/predict_cols`` index the hidden states whose next token is
    an output token; ``targets`` are those tokens. ``n_tokens`` = number of targets."""

    input_ids: Any
    attention_mask: Any
    predict_rows: Any
    predict_cols: Any
    targets: Any
    n_tokens: int
    # Packed rows (``pack``): each example's positions start at 0 and ``attention_mask`` is None;
    # the model keeps every example's attention to itself (see ``pack``).
    position_ids: Any = None
    # Packed rows: for each row, the (start, length) of each example in it.
    segments: list[list[tuple[int, int]]] | None = None
    # Packed rows with a shared prefix (``pack(share_prefix=True)``): the tokens every example
    # of the batch begins with, laid once at each row's start; the segments are the rest of
    # each example, whose positions go on from the prefix's.
    prefix: int = 0

    def to(self, device: str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            None if self.attention_mask is None else self.attention_mask.to(device),
            self.predict_rows.to(device),
            self.predict_cols.to(device),
            self.targets.to(device),
            self.n_tokens,
            None if self.position_ids is None else self.position_ids.to(device),
            self.segments,
            self.prefix,
        )


def pack_rows(lengths: Sequence[int], attention_span: float) -> list[list[int]]:
    """Which examples share a row (lists of indices into ``lengths``), for ``pack``.

    A row of width W costs about W·(1 + W/attention_span): its linear layers' work grows with
    its tokens, its attention's with their square. ``attention_span`` is the width at which a
    token's attention costs as much as its linear layers (``attention_span`` in loop.py). For
    a number of rows the examples are dealt longest first to the emptiest row, and the
    cheapest layout wins: one long row wastes work on attention across examples that the
    mask discards, one row per example wastes it on padding (31% of the tokens of random
    batches of 4 on the throughput benchmark's data). With T tokens and a longest example of
    L, the cost falls with the number of rows until rows are about L wide, so the counts tried
    are one row and those near T/L."""
    import heapq

    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    near = sum(lengths) // max(lengths)
    counts = {1, *range(max(1, near - 2), min(len(lengths), near + 2) + 1)}
    best: list[list[int]] = []
    best_cost = float("inf")
    for n_rows in sorted(counts):
        rows: list[list[int]] = [[] for _ in range(n_rows)]
        fill = [(0, k) for k in range(n_rows)]  # (tokens, row): the emptiest row first
        for i in order:
            tokens, k = heapq.heappop(fill)
            rows[k].append(i)
            heapq.heappush(fill, (tokens + lengths[i], k))
        width = max(tokens for tokens, _ in fill)
        cost = n_rows * width * (1 + width / attention_span)
        if cost < best_cost:
            best, best_cost = [sorted(r) for r in rows if r], cost
    return best


def _lay_out(items: Sequence[TokenizedExample], rows: list[list[int]], pad_id: int,
             prefix: int = 0):
    """The examples ``rows`` names (indices into ``items``) placed one after another in each
    row, padded at the end: (input ids, each example's (row, start, length), the predicting
    rows, columns and targets). With ``prefix``, the first ``prefix`` tokens, which every
    example shares, are laid once at each row's start and each example's span is its rest."""
    import torch

    ids = torch.full((len(rows), _width(items, rows, prefix)), pad_id, dtype=torch.long)
    spans: list[tuple[int, int, int]] = []
    pr, pc, targets = [], [], []
    for r, row in enumerate(rows):
        start = prefix
        if prefix:
            ids[r, :prefix] = torch.tensor(items[row[0]].prompt_ids[:prefix], dtype=torch.long)
        for i in row:
            it = items[i]
            seq = (it.prompt_ids + it.output_ids)[prefix:]
            ids[r, start : start + len(seq)] = torch.tensor(seq, dtype=torch.long)
            spans.append((r, start, len(seq)))
            p = start + len(it.prompt_ids) - prefix
            for j, tok in enumerate(it.output_ids):
                pr.append(r)
                pc.append(p + j - 1)  # the hidden state at p+j-1 predicts token p+j
                targets.append(tok)
            start += len(seq)
    return (ids, spans, torch.tensor(pr, dtype=torch.long), torch.tensor(pc, dtype=torch.long),
            torch.tensor(targets, dtype=torch.long))


def shared_prefix(items: Sequence[TokenizedExample]) -> int:
    """How many leading tokens every one of ``items`` has in common (0 for fewer than two),
    leaving each example at least its last prompt token, which predicts its first output
    token. Examples rendered with one chat template and system prompt share the template's
    opening and the system turn (24 tokens of SmolLM2's, half the length of a short
    classification example), and a preamble the training prompts carry extends it."""
    if len(items) < 2:
        return 0
    limit = min(len(it.prompt_ids) for it in items) - 1
    first = items[0].prompt_ids
    n = 0
    while n < limit and all(it.prompt_ids[n] == first[n] for it in items):
        n += 1
    return n


def laid_out_tokens(items: Sequence[TokenizedExample], attention_span: float | None,
                    share_prefix: bool = False) -> int:
    """The positions a forward pass of ``items`` computes, padding included: rows × width as
    ``pack`` lays them out (``attention_span`` and ``share_prefix`` as it takes them), or as
    ``collate`` pads them where ``attention_span`` is None. What a step keeps for its backward
    pass grows with this count (``training/memory.py``)."""
    if not items:
        return 0
    if attention_span is None:
        return len(items) * max(it.length for it in items)
    prefix, rows = _packed_rows(items, attention_span, share_prefix)
    return len(rows) * _width(items, rows, prefix)


def _packed_rows(items: Sequence[TokenizedExample], attention_span: float,
                 share_prefix: bool) -> tuple[int, list[list[int]]]:
    """The shared prefix ``pack`` lays once (0 without ``share_prefix``) and its rows."""
    prefix = shared_prefix(items) if share_prefix else 0
    return prefix, pack_rows([it.length - prefix for it in items], attention_span)


def _width(items: Sequence[TokenizedExample], rows: list[list[int]], prefix: int) -> int:
    """A packed batch's width: the prefix and its fullest row's rests."""
    return prefix + max(sum(items[i].length - prefix for i in row) for row in rows)


def pack(items: Sequence[TokenizedExample], pad_id: int, attention_span: float,
         share_prefix: bool = False) -> Batch:
    """Several examples per row, each with its own positions (0, 1, …), padded at the end.

    Given ``position_ids`` that restart and no attention mask, the model's causal mask keeps
    each example's tokens to that example (transformers reads the restarts as packed
    sequences), so every example's loss is what it is in a padded batch of its own; the
    trainer checks that the model honours this before it packs (``packing_works``). Padding
    at a row's end gets positions of its own and so forms one more sequence no example sees.

    ``share_prefix``: the tokens every example begins with (``shared_prefix``) are laid once
    at the start of each row and each example's rest follows with positions going on from
    them. A token's hidden states depend only on the tokens before it, so the prefix's are the
    same in every example and are computed once; only attention by example
    (``training/segment_attention.py``, which lets each example's rest attend to the prefix)
    reads such a row correctly, and the trainer checks it does (``prefix_sharing_works``).
    """
    import torch

    prefix, rows = _packed_rows(items, attention_span, share_prefix)
    ids, spans, pr, pc, targets = _lay_out(items, rows, pad_id, prefix)
    width = ids.shape[1]
    positions = torch.zeros_like(ids)
    positions[:, :prefix] = torch.arange(prefix)
    segments: list[list[tuple[int, int]]] = [[] for _ in rows]
    for r, start, n in spans:
        positions[r, start : start + n] = torch.arange(prefix, prefix + n)
        segments[r].append((start, n))
    for r, row in enumerate(segments):
        end = row[-1][0] + row[-1][1]  # every row holds at least one example
        positions[r, end:] = torch.arange(width - end)
    return Batch(ids, None, pr, pc, targets, len(targets), positions, segments, prefix)


def collate(items: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Right-pad to the longest example of the batch."""
    import torch

    ids, spans, pr, pc, targets = _lay_out(items, [[i] for i in range(len(items))], pad_id)
    mask = torch.zeros_like(ids)
    for r, start, n in spans:
        mask[r, start : start + n] = 1
    return Batch(ids, mask, pr, pc, targets, len(targets))
