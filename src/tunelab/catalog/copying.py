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

The same margin decides the other way a copy goes wrong: a value the model has never seen
given up for one it was trained on. Tuned on 20 "book me on LH32 from Vienna to Madrid" →
``{"flight": "LH32", "from": "Vienna", "to": "Madrid"}`` examples, asked about a flight from
Lima, the model wrote ``L`` + ``is`` (on to ``Lisbon``, a training city) with ``ima`` 1.75
nats behind, and ``K`` (an invented city) 1.37 nats before the ``N`` of the prompt's
``Nairobi``. So where the most likely token writes a word the prompt does not hold in any
letter case, and a token within ``NEAR_NATS`` writes a word it does (in any letter case too),
greedy takes that one -- for a model tuned to copy (``copies_prompt``: at least half of its
training outputs' words are words of their inputs, in any letter case, recorded in its
manifest); a base model chatting, a classifier or a model tuned to write in words of its own
is left to choose its words. A word the prompt holds in other letters (``Leila`` for
``LEILA``: a normalised name) and a number (``04`` for ``APR``: a normalised date) are the
model's to write, and a model sure of a new word (free text, a label) keeps it. Measured on
the same adapters (docs/quality.md): that flights task at 20 examples 0.333 / 0.317 / 0.367 →
0.517 / 0.517 / 0.650 exact match over three seeds; ``dates``, ``entities``, ``orders`` at 100
and a names task at 20 unchanged; ``tickets`` at 100 token F1 0.987 → 0.988.

A model that copies its prompt's words in other letters (a name normalised from capitals,
``LUCIA B FAROUK`` → ``Lucia B. Farouk``; an address's city in title case) misspells unseen
ones the same way (``Faruk``; an invented city for ``TUCSON``), so such a model counts as tuned
to copy and the near token that writes the prompt's word in other letters is taken. On two
tasks made up for it (docs/quality.md), the same adapters answered with and without:
addresses → JSON at 100 examples 0.517 → 0.767 exact match, names 0.333 → 0.400.

A number is the model's to write, but not one made by going on from a number the prompt holds
into one it lacks (the prompt's house number ``9430`` on to ``94300``, with `` As`` of the
prompt's ``aspen`` 1.03 nats behind): there the near token that keeps to the prompt's words, or
ends the prompt's number where it is whole, is taken (``_number_as_copied``). Those addresses
at 100: 0.767 → 0.783; every other adapter above answered as before. And a word written in
other letters than the prompt's keeps to one case (``_one_case``): ``CyPRESS`` for the prompt's
``CYPRESS`` gives way to ``Cypress`` where ``press`` is within ``NEAR_NATS`` of ``PRESS``
(those addresses at 20: 0.517 → 0.533; the other adapters as before).

It is a rule of greedy decoding (temperature 0: ``generateContent`` without a temperature,
``tunelab eval``, the compare page, the validation scores); a sampled answer is sampled from
the model's own probabilities.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

# A tuned model goes back to its prompt's words (``_back_to_prompt``) where at least this share
# of its training outputs' words (those with a letter) are words of their own inputs, in any
# letter case.
COPYING_SHARE = 0.5
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


def copies_prompt(inputs: Sequence[str], outputs: Sequence[str]) -> bool:
    """Whether outputs copy their words from their inputs: at least ``COPYING_SHARE`` of the
    outputs' words with a letter in them are, in any letter case, words of the input they
    answer (extraction: ``{"from": "Vienna"}`` for "… from Vienna …"; a name normalised from
    capitals; not a label, a summary in words of its own or a date to numbers). The format's own
    words, those in at least half of the outputs (JSON keys, ``people:``, a label), are not
    counted: they are written the same whatever the input."""
    found = [({w.casefold() for w in _WORD.findall(text[:MAX_SOURCE_CHARS])},
              [w for w in _WORD.findall(output[:MAX_SOURCE_CHARS]) if _has_letter(w)])
             for text, output in zip(inputs, outputs, strict=True)]
    in_outputs = Counter(w for _, words in found for w in set(words))
    words = copied = 0
    for source, output_words in found:
        for word in output_words:
            if 2 * in_outputs[word] < len(found):
                words += 1
                copied += word.casefold() in source
    return words > 0 and copied >= COPYING_SHARE * words


COPIES_NOTE = ("the training outputs copy their words from the prompts; where the model "
               "hesitates between a new word and one of the prompt's, it writes the prompt's.")


def prompt_words(text: str) -> frozenset[str]:
    """The words of ``text`` (letters and digits, any script), each up to ``MAX_WORD_CHARS``
    characters."""
    return frozenset(w[:MAX_WORD_CHARS] for w in _WORD.findall(text[:MAX_SOURCE_CHARS]))


def prefixes_of(words: frozenset[str]) -> frozenset[str]:
    """Every beginning of every one of ``words``."""
    return frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


def word_prefixes(text: str) -> frozenset[str]:
    """Every beginning of every word of ``text`` (letters and digits, any script), up to
    ``MAX_WORD_CHARS`` characters."""
    return prefixes_of(prompt_words(text))


def _added(reply: Any, tail: list[int], before: str, token: int) -> str | None:
    """What ``token`` adds to the answer's text (``tail``: the answer's last tokens, ``before``
    their text); None where the tokens decode together otherwise."""
    text = reply.tokenizer.decode([*tail, token], skip_special_tokens=False)
    return text[len(before):] if text.startswith(before) else None


def _word_after(before: str, added: str) -> str | None:
    """The word the answer ends with once ``added`` follows ``before``; None where ``added``
    does not continue or begin a word."""
    if not added.lstrip()[:1].isalnum():
        return None
    found = _LAST_WORD.search(before + added)
    return found.group(0) if found else ""


def _word(reply: Any, tail: list[int], before: str, token: int) -> tuple[str, str] | None:
    """What ``token`` adds to the answer's text and the word the answer then ends with; None
    where the token does not continue or begin a word (``tail``: the answer's last tokens,
    ``before`` their text)."""
    added = _added(reply, tail, before, token)
    word = None if added is None else _word_after(before, added)
    return None if word is None else (added, word)


def _copy(reply: Any, tail: list[int], before: str, token: int) -> tuple[str, int] | None:
    """What ``token`` adds to the answer's text and the length of the beginning of a prompt
    word the answer then ends with; None where the token does not continue or begin a word, or
    the word is none of the prompt's."""
    got = _word(reply, tail, before, token)
    return (got[0], len(got[1])) if got is not None and got[1] in reply.copy_words else None


def choose(reply: Any, values: Sequence[float], ids: Sequence[int]) -> int:
    """Greedy's token for ``reply`` from its most likely candidates (``values`` descending,
    their token ``ids``): the first, unless it copies a prompt word and a candidate within
    ``NEAR_NATS`` of it writes the same text and more of that word, or, for a model tuned to
    copy, it writes a word the prompt lacks as written and a candidate within ``NEAR_NATS``
    keeps closer to the prompt's (``_back_to_prompt``; module docstring)."""
    top = int(ids[0])
    if not reply.copy_words or top in reply.end_ids:
        return top
    tail = reply.ids[-TAIL_TOKENS:]
    before = reply.tokenizer.decode(tail, skip_special_tokens=False)
    got = _word(reply, tail, before, top)
    if got is None:  # no word: a sign, a space
        return top
    if got[1] not in reply.copy_words:
        return (_back_to_prompt(reply, values, ids, tail, before, got)
                if reply.back_to_prompt else top)
    written, best = got[0], len(got[1])
    chosen = top
    for token in _near(values, ids):
        further = _copy(reply, tail, before, token)
        if further is not None and further[1] > best and further[0].startswith(written):
            best, chosen = further[1], token
    return chosen


def _back_to_prompt(reply: Any, values: Sequence[float], ids: Sequence[int], tail: list[int],
                    before: str, got: tuple[str, str]) -> int:
    """Where the most likely token adds ``got[0]`` and so writes ``got[1]``, a word the prompt
    lacks as written: a word the prompt holds in other letters keeps to one case
    (``_one_case``); a number is the model's unless it leaves a number of the prompt
    (``_number_as_copied``); for a word with a letter that the prompt lacks in every letter
    case, the most likely token within ``NEAR_NATS`` of it that writes a word of the prompt
    instead, in any letter case; the most likely token otherwise (module docstring)."""
    top = int(ids[0])
    added, word = got
    if word.casefold() in reply.folded_words:
        return _one_case(reply, values, ids, tail, before, added, word)
    if not _has_letter(word):
        return _number_as_copied(reply, values, ids, tail, before, word)
    for token in _near(values, ids):
        other = _word(reply, tail, before, token)
        if (other is not None and other[1].casefold() in reply.folded_words
                and _has_letter(other[1])):
            return token
    return top


def _one_case(reply: Any, values: Sequence[float], ids: Sequence[int], tail: list[int],
              before: str, added: str, word: str) -> int:
    """Where the most likely token writes a word of the prompt in other letters that mixes its
    cases (``CyPRESS``, ``LAUREl`` for the prompt's ``CYPRESS``, ``LAUREL``), the most likely
    token within ``NEAR_NATS`` that writes the same letters in one case, all small, all
    capitals or the first alone capital (``press``: ``Cypress``); the most likely token
    otherwise (``added``: what the most likely token adds)."""
    top = int(ids[0])
    if _one_cased(word):
        return top
    for token in _near(values, ids):
        other = _word(reply, tail, before, token)
        if (other is not None and other[0].casefold() == added.casefold()
                and _one_cased(other[1])):
            return token
    return top


def _one_cased(word: str) -> bool:
    """All small, all capitals, the first letter alone capital, or no letters."""
    letters = [c for c in word if c.isalpha()]
    rest = "".join(letters[1:])
    return not letters or (not any(c.isupper() for c in rest)) or (
        not any(c.islower() for c in letters))


def _number_as_copied(reply: Any, values: Sequence[float], ids: Sequence[int],
                      tail: list[int], before: str, number: str) -> int:
    """Where the most likely token makes a number the prompt lacks out of the beginning of one
    it holds (``9430`` on to ``94300``), the most likely token within ``NEAR_NATS`` that
    ends the prompt's number there (where it is whole) or writes a word of the prompt; the
    most likely token otherwise. A number begun anew is the model's to write (``04`` for
    ``APR``: a normalised date)."""
    top = int(ids[0])
    found = _LAST_WORD.search(before)
    stem = found.group(0) if found else ""
    if not stem or stem not in reply.copy_words or not (
            len(number) > len(stem) and number.startswith(stem)):
        return top  # a number begun anew, or one the prompt lacks gone on with
    for token in _near(values, ids):
        added = _added(reply, tail, before, token)
        if added is None:
            continue
        other = _word_after(before, added)
        if other is None:  # no word: the number ends here
            if stem in reply.whole_words:
                return token
        elif other.casefold() in reply.folded_words:
            return token
    return top


def _near(values: Sequence[float], ids: Sequence[int]) -> Iterator[int]:
    """The candidates after the most likely one that are within ``NEAR_NATS`` of it, most
    likely first."""
    for value, token in zip(values[1:], ids[1:], strict=True):
        if values[0] - value > NEAR_NATS:
            return
        yield int(token)


def _has_letter(word: str) -> bool:
    return any(c.isalpha() for c in word)


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
