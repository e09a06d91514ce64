"""Greedy's choice between near-equal tokens when an answer copies a word of its prompt.

A tuned model that copies a value from its prompt into a structured answer (an item into JSON,
a name into a list) must often write the word in other tokens than the prompt holds it: SmolLM2
reads " caesar" as `` ca`` + ``esar`` but writes it after a quote as ``ca`` + ``esar``. Tuned on
500 ``orders`` examples, for a test item it had never seen the model gave ``ca`` and ``c`` the
very same probability after ``{"item": "``; greedy took ``c``, went on with ``es`` + ``ar``,
and 17 of its 18 wrong answers out of 100 were such misspellings (``cesar salad``). So where
the most likely token continues a word of the prompt (the answer's last word, with the token,
is the beginning of a word of the prompt), greedy takes, among the tokens within
``NEAR_NATS`` of it that write the same text and more (``ca`` after ``c``; not `` ca``, not
another word), the one that continues that copy furthest, and the most likely token otherwise:
the same word, only in the tokens that spell it as the prompt does. Only tokens that begin or
continue a word (a letter or digit first, after any space) count as copies, and a token the
model finds clearly more likely always wins. Measured (``tunelab eval``, docs/quality.md):
``orders`` at 500, exact match 0.83 without the rule, 0.94 with a margin of 1 nat, 0.99 with
2 nats and only the same text continued; a made-up contacts → JSON task 0.80 → 0.90
(``Léopold`` for ``Leopold`` no more). A margin of 4 nats that let a near token copy another
word of the prompt scored 0.82 on ``orders``: hence the same text.

It is a rule of greedy decoding (temperature 0: ``generateContent`` without a temperature,
``tunelab eval``, the compare page, the validation scores); a sampled answer is sampled from
the model's own probabilities.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# How much less likely (in nats: a difference of logits) a token may be than the most likely
# one and still be taken because it continues a copy further (the model's own splits between
# two spellings of a copied word measured up to 1.6 nats on orders at 500).
NEAR_NATS = 2.0
# Candidates looked at: the most likely ones.
CANDIDATES = 8
# A prompt's words are read from at most this many characters of it.
MAX_SOURCE_CHARS = 100_000
# The beginnings of a word are taken up to this many characters: a word's beginnings take
# memory in the square of its length (one 20,000-character word, a base64 blob in a prompt,
# held 200 MB), and a copy longer than this goes on as greedy writes it.
MAX_WORD_CHARS = 64
# The answer's last tokens decoded to find the word a token continues (a long answer is not
# decoded whole for every candidate).
TAIL_TOKENS = 24

_WORD = re.compile(r"[^\W_]+")
_LAST_WORD = re.compile(r"[^\W_]+$")


def copy_source(turns: Sequence[tuple[str, str]]) -> str:
    """The text whose words an answer to a conversation may copy: every turn's (role, text)."""
    return "\n".join(text for _, text in turns)


def word_prefixes(text: str) -> frozenset[str]:
    """Every beginning of every word of ``text`` (letters and digits, any script), up to
    ``MAX_WORD_CHARS`` characters."""
    words = {w[:MAX_WORD_CHARS] for w in _WORD.findall(text[:MAX_SOURCE_CHARS])}
    return frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


def _copy(reply: Any, tail: list[int], before: str, token: int) -> tuple[str, int] | None:
    """What ``token`` adds to the answer's text and the length of the beginning of a prompt
    word the answer then ends with; None where the token does not continue or begin a word, or
    the word is none of the prompt's (``tail``: the answer's last tokens, ``before`` their
    text)."""
    text = reply.tokenizer.decode([*tail, token], skip_special_tokens=False)
    if not text.startswith(before):
        return None
    added = text[len(before):]
    if not added.lstrip()[:1].isalnum():
        return None
    found = _LAST_WORD.search(text)
    word = found.group(0) if found else ""
    return (added, len(word)) if word in reply.copy_words else None


def choose(reply: Any, values: Sequence[float], ids: Sequence[int]) -> int:
    """Greedy's token for ``reply`` from its most likely candidates (``values`` descending,
    their token ``ids``): the first, unless it copies a prompt word and a candidate within
    ``NEAR_NATS`` of it writes the same text and more of that word (module docstring)."""
    top = int(ids[0])
    if not reply.copy_words or top in reply.end_ids:
        return top
    tail = reply.ids[-TAIL_TOKENS:]
    before = reply.tokenizer.decode(tail, skip_special_tokens=False)
    first = _copy(reply, tail, before, top)
    if first is None:
        return top
    written, best = first
    chosen = top
    for value, token in zip(values[1:], ids[1:], strict=True):
        if values[0] - value > NEAR_NATS:
            break
        further = _copy(reply, tail, before, int(token))
        if further is not None and further[1] > best and further[0].startswith(written):
            best, chosen = further[1], int(token)
    return chosen


def top_candidates(logits: Any) -> list[tuple[list[float], list[int]]]:
    """Each row's ``CANDIDATES`` most likely tokens, (logits, token ids), most likely first;
    of tokens with equal logits, the one argmax takes first (as greedy without this rule)."""
    import torch

    values, ids = torch.topk(logits, min(CANDIDATES, logits.shape[-1]), dim=-1)
    first = logits.argmax(-1)
    out = []
    for vals, toks, top in zip(values.tolist(), ids.tolist(), first.tolist(), strict=True):
        if toks[0] != top:  # a tie: argmax's token first
            at = toks.index(top) if top in toks else None
            if at is None:
                vals, toks = [vals[0], *vals], [top, *toks]
            else:
                toks[0], toks[at] = toks[at], toks[0]
        out.append((vals, toks))
    return out


def prefer_copies(logits: Any, replies: Sequence[Any]) -> None:
    """Where a reply's greedy choice (``choose``) is another token than argmax of its row of
    next-token ``logits``, that token's logit is raised above the others: argmax takes it."""
    rows = [row for row, reply in enumerate(replies) if not reply.done and reply.copy_words]
    if not rows:
        return
    for row, (values, ids) in zip(rows, top_candidates(logits[rows]), strict=True):
        token = choose(replies[row], values, ids)
        if token != ids[0]:
            logits[row, token] = values[0] + 1.0
