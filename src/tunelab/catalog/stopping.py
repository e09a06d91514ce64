"""When an answer ends: the one set of stopping rules for every answer tunelab decodes.

Served answers (``inference/generate.py``) and the answers scored during training
(``training/evaluate.py``) must stop alike, or a validation score would describe answers the
service never gives. An answer ends at the base model's end token or the chat template's
end-of-turn token (``end_token_ids``), at the first of its stop texts (the end-of-turn text and,
when serving, the caller's ``stopSequences``: the text is cut before it), or at its token budget.

**Not before its format is whole.** Where every training output shares pieces of text in the
same order (a template's ``people: `` and ``; cities: ``, a JSON object's keys and braces),
``output_pieces`` finds them and the tuned model's manifest keeps them; an answer that lacks one
of them may not end (``Reply.may_end``): the decoders refuse the end token there and take the
next most likely one (``refuse_end``). A 135M model tuned on 100 ``entities`` examples ended 19
of its 100 test answers after the people, before the ``; cities: …`` every training output has;
refusing those ends scored 71 / 100 against 52 on the same adapter (docs/quality.md). Pieces
are only kept where they are structure: with punctuation in them, never cutting through a word
or a number (dates' ``-0`` is a chance piece of ``-04`` and ``-07``), and together a sizeable
share of an output (``MIN_PIECES_SHARE``), so free text (where outputs share a ``. `` by chance)
is never held open. Nor is an answer held open forever: once it is as long as the longest
training output (``longest``, in characters), it may end with a piece still missing. A 135M model
tuned on 60 product titles → ``brand | model | 512 GB | color`` left the brand out of one unseen
title (``X30 | 512 GB | green``), and with its end refused until a `` GB | `` came again, it wrote
`` | Nokia | official | 2022 | 10 | 4 | 1 | 3 | …`` to its budget of 1,024 tokens.

**Nor on past them into another.** Where the text after an output's last piece never holds a
piece's text again (``output_ends``: `` | `` in ``Apple | iPhone 13 | 128 GB | black``; a second
JSON object's ``{"product": "``), the manifest keeps those texts, and once an answer holds every
piece, the first of them after its last piece ends it (the text is cut before it, as at a stop
text): ``Nokia | X30 | 512 GB | green | Nokia | official`` ends at ``Nokia | X30 | 512 GB |
green``. A text some output holds after its last piece (the ``, `` of a list that ends the
output) is not among them.

**No whitespace where no output has it.** Where every training output goes on right after a
piece without whitespace (a JSON value after ``"ingredient": "``; the brand after `` | ``),
the manifest keeps that piece's place (``output_unspaced``), and a token that begins with
whitespace is refused there (``Reply.allowed``, ``unspaced_mask``). Most of a vocabulary's
words come in two spellings, with and without a leading space, and a prompt holds its words
with one: a 135M model tuned on 60 ingredient lines → ``{"quantity": "1/4", "unit": "cup",
"ingredient": "maple syrup"}`` answered ``"ingredient": " Maple Syrup"`` for ``about 100 tsp.
maple syrup``, its `` Maple`` 0.24 nats above the ``m`` of ``maple``.

**Not past its fixed shape.** Where every training output has one fixed shape (``output_shape``:
the same length, and at each place a digit, a letter or the same other character: a date's
``9999-99-99``, a time's ``99:99``, a code's ``aa-999``), the manifest keeps the shape, and an
answer ends once it is that long (``Reply``: the text is cut there, as at a stop text). A 135M
model tuned on 20 dates answered ``2029-01-2029`` for ``20-JAN-2029`` and ``2032-02-2032`` for
``20.02.2032``: right up to the tenth character, then on with the input's year (docs/quality.md).

**And in its shape all along.** While an answer is shorter than its shape, each token it may
take must continue the shape (``keep_to_shape``, ``Reply.allowed``): a digit where the shape has
``9``, a letter where it has ``a``, the very character elsewhere; the decoders take the most
likely such token, as ``refuse_end`` takes the most likely one that is not an end. A model tuned
on 40 spoken times (``"2h50 am"`` → ``02:50``) answered ``0h50``, keeping the input's letter
where every training output has a digit; and one tuned on 20 dates ended ``2007-09-2nd``. An
end token writes no character and stays allowed: a value shorter than every training output
(a year ``476`` where all were four digits) is left as the model ends it.
"""

from __future__ import annotations

import functools
import statistics
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from tunelab.catalog.copying import COPIES_NOTE, copies_prompt, prefixes_of, prompt_words

FINISHED = "STOP"  # an end token or a stop text
OUT_OF_TOKENS = "MAX_TOKENS"  # the budget ran out first

# What a decoded text ends with while a character's UTF-8 bytes are split across tokens.
INCOMPLETE = "\ufffd"


def end_token_ids(tokenizer: Any, template: Any) -> set[int]:
    """The tokens that end an answer: the tokenizer's end token, and the template's end-of-turn
    text where it is one token."""
    ids = {tokenizer.eos_token_id}
    end = tokenizer(template.end, add_special_tokens=False)["input_ids"]
    if len(end) == 1:
        ids.add(end[0])
    ids.discard(None)
    return ids


# Outputs compared when looking for shared pieces, and the longest output compared: beyond
# these the outputs are free text or the pieces already settled (SequenceMatcher is quadratic).
MAX_PIECES_OUTPUTS = 500
MAX_PIECES_OUTPUT_CHARS = 2_000
MIN_PIECES_OUTPUTS = 5
MIN_PIECE_CHARS = 2
MAX_OUTPUT_PIECES = 64  # pieces kept (the first ones: still in order)
# The pieces must make up at least this share of the median output's characters.
MIN_PIECES_SHARE = 0.15


def output_pieces(outputs: Sequence[str]) -> list[str]:
    """The pieces of text that every one of ``outputs`` contains, in the same order (module
    docstring); [] where they share none that is structure."""
    outs = [o for o in outputs[:MAX_PIECES_OUTPUTS] if o]
    if len(outs) < MIN_PIECES_OUTPUTS or any(len(o) > MAX_PIECES_OUTPUT_CHARS for o in outs):
        return []
    pieces = [outs[0]]
    for out in outs[1:]:
        shared, at = [], 0
        for piece in pieces:  # each piece's parts found in order in what is left of ``out``
            rest = out[at:]
            end = 0
            for a, b, size in SequenceMatcher(None, piece, rest, autojunk=False
                                              ).get_matching_blocks():
                if size >= MIN_PIECE_CHARS:
                    shared.append(piece[a:a + size])
                    end = b + size
            at += end
        pieces = shared
        if not pieces:
            return []
    pieces = [p for p in pieces if any(not (c.isalnum() or c.isspace()) for c in p)]
    whole = [True] * len(pieces)  # a piece that cuts through a word or number is a chance one
    for out in outs:
        for k, (piece, i) in enumerate(zip(pieces, _found_in_order(out, pieces), strict=True)):
            j = i + len(piece)
            if (piece[0].isalnum() and i > 0 and out[i - 1].isalnum()) or (
                    piece[-1].isalnum() and j < len(out) and out[j].isalnum()):
                whole[k] = False
    pieces = [p for p, w in zip(pieces, whole, strict=True) if w]
    if sum(map(len, pieces)) < MIN_PIECES_SHARE * statistics.median(map(len, outs)):
        return []
    return pieces[:MAX_OUTPUT_PIECES]


# Outputs needed to take a shape for fixed (fewer could share one by chance), and the longest
# shape kept: a fixed format is short (a date, a time, a code); longer outputs are text.
MIN_SHAPE_OUTPUTS = 10
MAX_SHAPE_CHARS = 64


def shape_of(text: str) -> str:
    """``text`` with each digit written ``9`` and each letter ``a`` (any script, any case);
    every other character as it is."""
    return "".join("9" if c.isdigit() else "a" if c.isalpha() else c for c in text)


def output_shape(outputs: Sequence[str]) -> str:
    """The shape every one of ``outputs`` has (``shape_of``, each without its surrounding
    whitespace), where they all have one, are at least ``MIN_SHAPE_OUTPUTS`` and at most
    ``MAX_SHAPE_CHARS`` long; "" otherwise (module docstring). Give the validation outputs
    too: a held-out output of another shape means the shape is not fixed."""
    if len(outputs) < MIN_SHAPE_OUTPUTS:
        return ""
    shape = ""
    for out in outputs:
        out = out.strip()
        if not out or len(out) > MAX_SHAPE_CHARS:
            return ""
        this = shape_of(out)
        if shape and this != shape:
            return ""
        shape = this
    return shape


def shape_note(shape: str) -> str:
    """The choice in one line, for the CLI, the Studio and the operation's metadata."""
    return (f"every training output has one shape, {shape!r} (9: a digit, a: a letter); an "
            f"answer keeps to it and ends once it is {len(shape)} characters long.")


def _fits(token_shape: str, rest: str) -> bool:
    """Whether a token whose text has ``token_shape`` continues a shape whose places still to
    write are ``rest`` (a token longer than ``rest`` fits if it begins so: the answer is cut at
    the shape's end). Part of a character's bytes (``INCOMPLETE``: a character that is more
    than one token, as a CJK character or ``Ё`` is to the default model's vocabulary) fits
    where the shape has a letter or a character outside ASCII; what follows it in the token is
    not checked, since how many characters its bytes end up making is not known until they are
    whole (``Reply.allowed`` then holds the answer to the shape again)."""
    if not token_shape:
        return False
    for c, r in zip(token_shape, rest, strict=False):
        if c == INCOMPLETE:
            return r == "a" or ord(r) > 127
        if c != r:
            return False
    return True


# Each tokenizer's tokens as text, made once (1.5 s for a vocabulary of 262,144), and the
# tokens each shape allows at each place: at most SHAPE_MASKS shapes a tokenizer.
_TOKEN_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
SHAPE_MASKS = 8
_SHAPES_LOCK = threading.Lock()  # the server answers requests in several threads


def _token_shapes(tokenizer: Any) -> dict:
    """``{"shapes": {token shape: [token ids]}, "masks": {shape: allowed}}`` for
    ``tokenizer``, made when first asked for. A token's text is read after another token
    (``a``), so a tokenizer that drops a word's leading space at the start of a text still
    shows it; special tokens and tokens with no text are in no shape."""
    try:
        return _TOKEN_SHAPES[tokenizer]
    except KeyError:
        pass
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    lead = len(tokenizer.decode(anchor, skip_special_tokens=False,
                                clean_up_tokenization_spaces=False))
    size = len(tokenizer)
    pairs = [anchor + [i] for i in range(size)]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer: 3-8× quicker
    texts = (backend.decode_batch(pairs, skip_special_tokens=False) if backend is not None
             else tokenizer.batch_decode(pairs, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False))
    special = set(tokenizer.all_special_ids)
    shapes: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        if i not in special and text[lead:]:
            shapes.setdefault(shape_of(text[lead:]), []).append(i)
    found = {"shapes": shapes, "masks": {}, "size": size}
    _TOKEN_SHAPES[tokenizer] = found
    return found


def shape_masks(tokenizer: Any, shape: str) -> Any:
    """A bool tensor, one row for each place of ``shape`` (the characters written so far,
    leading whitespace not counted) and a column for each of ``tokenizer``'s tokens: whether the
    token may come next (``_fits``). At the first place a token may also begin with whitespace
    (not counted, as ``Reply`` does not count it). None where some place allows no token at
    all (a shape this tokenizer cannot write): then no token is refused."""
    with _SHAPES_LOCK:
        return _shape_masks(tokenizer, shape)


def _shape_masks(tokenizer: Any, shape: str) -> Any:
    import torch

    found = _token_shapes(tokenizer)
    masks = found["masks"]
    if shape not in masks:
        allowed = torch.zeros((len(shape), found["size"]), dtype=torch.bool)
        for token_shape, ids in found["shapes"].items():
            index = torch.tensor(ids)
            stripped = token_shape.lstrip()
            for k in range(len(shape)):
                if _fits(token_shape, shape[k:]) or (k == 0 and _fits(stripped, shape)):
                    allowed[k, index] = True
        if len(masks) >= SHAPE_MASKS:
            masks.pop(next(iter(masks)))
        masks[shape] = allowed if bool(allowed.any(dim=1).all()) else None
    return masks[shape]


def unspaced_mask(tokenizer: Any) -> Any:
    """A bool tensor over ``tokenizer``'s tokens: True for each token whose text does not begin
    with whitespace (special tokens and tokens with no text included: they write none), made
    once a tokenizer; None where no token begins with whitespace."""
    with _SHAPES_LOCK:
        found = _token_shapes(tokenizer)
        if "unspaced" not in found:
            import torch

            mask = torch.ones(found["size"], dtype=torch.bool)
            for token_shape, ids in found["shapes"].items():
                if token_shape[:1].isspace():
                    mask[torch.tensor(ids)] = False
            found["unspaced"] = None if bool(mask.all()) else mask
        return found["unspaced"]


def keep_to_shape(logits: Any, replies: Sequence[Reply]) -> None:
    """Where a reply must keep to its shape, or write no whitespace next (``Reply.allowed``),
    its row of next-token ``logits`` gets no token that would not: the most likely one that
    does is chosen. Its end tokens keep their logits: an answer may end before the shape is
    whole."""
    for row, reply in enumerate(replies):
        allowed = reply.allowed()
        if allowed is not None:
            ends = sorted(reply.end_ids)
            kept = logits[row, ends].clone()  # refused already where the pieces are not whole
            n = min(allowed.shape[0], logits.shape[-1])
            logits[row, :n].masked_fill_(~allowed[:n].to(logits.device), float("-inf"))
            logits[row, n:] = float("-inf")
            logits[row, ends] = kept


def pieces_note(pieces: Sequence[str], ends: Sequence[str] = (),
                unspaced: Sequence[int] = ()) -> str:
    """The choice in one line, for the CLI, the Studio and the operation's metadata."""
    shown = ", ".join(repr(p) for p in pieces[:6]) + (", …" if len(pieces) > 6 else "")
    after = ""
    if ends:
        texts = " or ".join(repr(e) for e in ends[:3]) + (" …" if len(ends) > 3 else "")
        after = f", and ends where it would write {texts} again after the last of them"
    if unspaced:
        which = "any of them" if len(unspaced) == len(pieces) else (
            f"{len(unspaced)} of them")
        after += (f"; nor does it put a space right after {which}, as no training output "
                  "does")
    return (f"every training output holds {len(pieces)} piece{'s' * (len(pieces) != 1)} of "
            f"text in the same order ({shown}); an answer does not end before it holds them "
            f"all{after}.")


def output_ends(outputs: Sequence[str], pieces: Sequence[str]) -> list[str]:
    """The texts of ``pieces`` (each once, in order) that no one of ``outputs`` holding the
    pieces has after its last piece: an answer that holds its pieces ends before the first of
    them after its last (module docstring). [] where no piece is kept, or fewer than
    ``MIN_PIECES_OUTPUTS`` outputs hold the pieces (give the validation outputs too: the
    texts after theirs count)."""
    tails = []
    for out in outputs[:MAX_PIECES_OUTPUTS]:
        found = _found_in_order(out, pieces) if pieces else None
        if found is not None:
            tails.append(out[found[-1] + len(pieces[-1]):])
    if len(tails) < MIN_PIECES_OUTPUTS:
        return []
    return [p for p in dict.fromkeys(pieces) if not any(p in tail for tail in tails)]


def output_unspaced(outputs: Sequence[str], pieces: Sequence[str]) -> list[int]:
    """The places (indexes into ``pieces``) after which every one of ``outputs`` holding the
    pieces goes on at once with a character that is not whitespace: an answer does not put
    whitespace there either (module docstring). [] where fewer than ``MIN_PIECES_OUTPUTS``
    outputs hold the pieces."""
    held, spaced = 0, set()
    for out in outputs[:MAX_PIECES_OUTPUTS]:
        found = _found_in_order(out, pieces) if pieces else None
        if found is None:
            continue
        held += 1
        for i, (at, piece) in enumerate(zip(found, pieces, strict=True)):
            after = out[at + len(piece):at + len(piece) + 1]
            if not after or after.isspace():
                spaced.add(i)
    if held < MIN_PIECES_OUTPUTS:
        return []
    return [i for i in range(len(pieces)) if i not in spaced]


def _found_so_far(text: str, pieces: Sequence[str]) -> list[int]:
    """Where the first of ``pieces`` begin in ``text``, each found after the one before, up to
    the first that is not."""
    found, at = [], 0
    for piece in pieces:
        i = text.find(piece, at)
        if i < 0:
            break
        found.append(i)
        at = i + len(piece)
    return found


def _found_in_order(text: str, pieces: Sequence[str]) -> list[int] | None:
    """Where each of ``pieces`` begins in ``text``, each found after the one before; None where
    one is not."""
    found = _found_so_far(text, pieces)
    return found if len(found) == len(pieces) else None


def has_pieces(text: str, pieces: Sequence[str]) -> bool:
    """Whether ``text`` holds every one of ``pieces`` in order."""
    return _found_in_order(text, pieces) is not None


def find_stop(text: str, stops: list[str]) -> int | None:
    """Where the first of ``stops`` begins in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


@dataclass(frozen=True)
class AnswerRules:
    """What a tuned model's training outputs say of how its answers are decoded: the one
    object every answer for it keeps (``Reply``), made by the trainer (``answer_rules``),
    recorded in its manifest and read back for serving (``inference/manifest.py``).

    ``pieces``: what every training output holds, in order: an answer may not end before
    (``output_pieces``); ``ends``: texts that end it where they follow its last piece
    (``output_ends``); ``longest``: the longest output's length in characters: an answer that
    long may end without its pieces (0: held open to its budget, as a manifest written before
    this was recorded says nothing of its outputs' lengths); ``unspaced``: the pieces (their
    indexes) after which no output puts whitespace (``output_unspaced``); ``shape``: the one
    fixed shape of every output (``output_shape``; "": none): each token keeps to it and the
    answer ends at its length; ``copies``: the outputs copy their prompts' words
    (``catalog/copying.py`` ``copies_prompt``): a new word is given up for a near one of the
    prompt's."""

    pieces: tuple[str, ...] = ()
    ends: tuple[str, ...] = ()
    unspaced: tuple[int, ...] = ()
    longest: int = 0
    shape: str = ""
    copies: bool = False

    def to_record(self) -> dict:
        """The manifest's fields for these rules (read back by ``from_record``)."""
        return {"output_pieces": list(self.pieces), "output_ends": list(self.ends),
                "output_unspaced": list(self.unspaced),
                "longest_output_chars": self.longest, "output_shape": self.shape,
                "copies_prompt": self.copies}

    @classmethod
    def from_record(cls, data: dict) -> AnswerRules:
        """The rules a manifest's fields record (``to_record``); a field missing or not well
        formed is none (a manifest written before it was recorded, or not by the trainer)."""
        pieces = data.get("output_pieces")
        pieces_ok = (isinstance(pieces, list) and len(pieces) <= MAX_OUTPUT_PIECES
                     and all(isinstance(x, str) and x for x in pieces))
        ends = data.get("output_ends")
        ends_ok = pieces_ok and (isinstance(ends, list) and len(ends) <= MAX_OUTPUT_PIECES
                                 and all(isinstance(x, str) and x for x in ends))
        unspaced = data.get("output_unspaced")
        unspaced_ok = pieces_ok and (isinstance(unspaced, list) and all(
            type(i) is int and 0 <= i < len(pieces) for i in unspaced))
        longest = data.get("longest_output_chars")
        shape = data.get("output_shape")
        shape_ok = isinstance(shape, str) and 0 < len(shape) <= MAX_SHAPE_CHARS
        return cls(pieces=tuple(pieces) if pieces_ok else (),
                   ends=tuple(ends) if ends_ok else (),
                   unspaced=tuple(sorted(set(unspaced))) if unspaced_ok else (),
                   longest=longest if type(longest) is int and longest > 0 else 0,
                   shape=shape if shape_ok else "",
                   copies=data.get("copies_prompt") is True)

    def notes(self) -> list[str]:
        """One line on each rule, as the CLI and the operation's metadata say them."""
        return ([pieces_note(self.pieces, self.ends, self.unspaced)] if self.pieces else []) + (
            [shape_note(self.shape)] if self.shape else []) + (
            [COPIES_NOTE] if self.copies else [])


NO_RULES = AnswerRules()  # a base model's answers, or a manifest that records none


def answer_rules(inputs: Sequence[str], outputs: Sequence[str], held_out: Sequence[str] = (),
                 classifier: bool = False, free: bool = False) -> AnswerRules:
    """The rules of a model tuned on ``inputs`` → ``outputs`` (``held_out``: the validation
    outputs, whose ends, lengths and shape count too). A ``classifier``'s answers are its
    labels already (``catalog/labels.py``): no pieces, shape or copying; ``free``: free answers
    were asked for (``answer_labels`` off), so no shape either."""
    every = [*outputs, *held_out]
    pieces = () if classifier else tuple(output_pieces(outputs))
    return AnswerRules(
        pieces=pieces,
        # where a piece's text never comes again after the last piece, an answer ends there
        ends=tuple(output_ends(every, pieces)),
        # and where no output puts whitespace after a piece, no answer does
        unspaced=tuple(output_unspaced(every, pieces)),
        longest=max((len(o.strip()) for o in every), default=0),
        # the one fixed shape of every output (a date's 9999-99-99)
        shape="" if classifier or free else output_shape(every),
        copies=not classifier and copies_prompt(inputs, outputs))


class Reply:
    """One answer being decoded, a token at a time (``add``), until ``done``; ``reason`` is
    ``FINISHED`` or ``OUT_OF_TOKENS`` once it is."""

    def __init__(self, tokenizer: Any, end_ids: set[int], stops: list[str], budget: int,
                 rules: AnswerRules = NO_RULES, source: str = "",
                 labels: Sequence[str] = ()):
        """``rules``: the tuned model's (``AnswerRules``): its pieces, the texts that end it
        after them, the longest output, the fixed shape (each token keeps to it, and the
        answer ends once its text, without leading whitespace, is that long) and whether it
        copies its prompt's words;
        ``source``: the prompt's text, whose words greedy prefers to copy among near-equal
        tokens (``catalog/copying.py``; empty: none); a model tuned to copy
        (``rules.copies``) also gives up a new word for a near one of the prompt's.
        ``labels``: a tuned classifier's labels, where an answer that is none of them is
        replaced by the most likely one (``catalog/labels.py``) and what it was is not shown:
        the answer ends as soon as it can no longer be one of them (``off_labels``), since
        decoding it further cannot change what replaces it. An untuned model scored on a
        classifier's validation examples runs every answer to its budget otherwise."""
        self.tokenizer, self.end_ids, self.stops, self.budget = (
            tokenizer, end_ids, [s for s in stops if s], budget)
        self.pieces = list(rules.pieces)
        self.ends = [e for e in rules.ends if e] if self.pieces else []
        self.unspaced = frozenset(rules.unspaced) if self.pieces else frozenset()
        self.longest = rules.longest
        self.shape, self.length = rules.shape, len(rules.shape)
        self._masks: Any = False  # shape_masks, once asked for
        # the prompt's words read once: whole, and every beginning of them
        self.whole_words = prompt_words(source) if source else frozenset()
        self.copy_words = prefixes_of(self.whole_words)
        self.back_to_prompt = rules.copies
        self.labels = tuple(labels)
        self.ids: list[int] = []
        self.decoded = ""
        self.done = budget <= 0
        self.reason = OUT_OF_TOKENS if self.done else None
        self.cut = False  # stopped at a stop text

    def add(self, token: int) -> None:
        if self.done:
            return
        if token in self.end_ids:
            self.done, self.reason = True, FINISHED
            return
        self.ids.append(token)
        self.decoded = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        cut = find_stop(self.decoded, self.stops)
        if cut is None and self.length:
            cut = self._shape_end()
        if cut is None and self.ends:
            cut = self._past_pieces()
        if cut is not None:
            self.decoded = self.decoded[:cut]
            self.done, self.reason, self.cut = True, FINISHED, True
        elif self.labels and self.off_labels:
            self.done, self.reason = True, FINISHED
        elif len(self.ids) >= self.budget:
            self.done, self.reason = True, OUT_OF_TOKENS

    def _past_pieces(self) -> int | None:
        """Where one of ``ends`` begins after the answer's last piece, once it holds them all;
        None before."""
        found = _found_in_order(self.decoded, self.pieces)
        if found is None:
            return None
        after = found[-1] + len(self.pieces[-1])
        at = find_stop(self.decoded[after:], self.ends)
        return None if at is None else after + at

    def _shape_end(self) -> int | None:
        """Where the answer's text reaches ``length`` characters past its leading whitespace
        (a character still incomplete not counted), or None while it is shorter."""
        text = self.decoded.rstrip(INCOMPLETE)
        start = len(text) - len(text.lstrip())
        end = start + self.length
        return end if len(text) >= end else None

    def allowed(self) -> Any:
        """The tokens that may come next to keep the answer in its shape (a bool tensor over
        the vocabulary, ``shape_masks``), and without whitespace right after a piece no
        training output has it after (``unspaced_mask``); an end token, which writes no
        character, is never refused so (``may_take``). None where any may: no shape and no
        such piece just written, done, or a character still split across tokens (its place in
        the shape not yet known)."""
        if self.done or self.incomplete:
            return None
        shape = None
        if self.length:
            if self._masks is False:  # looked up once a reply
                self._masks = shape_masks(self.tokenizer, self.shape)
            k = len(self.decoded.lstrip())
            shape = None if self._masks is None or k >= self.length else self._masks[k]
        if self.unspaced and self._after_unspaced():
            unspaced = unspaced_mask(self.tokenizer)
            if unspaced is not None:
                return unspaced if shape is None else shape & unspaced
        return shape

    def _after_unspaced(self) -> bool:
        """Whether the answer's text ends with a piece (its pieces found in order) after
        which no training output has whitespace."""
        found = _found_so_far(self.decoded, self.pieces)
        last = len(found) - 1
        return last in self.unspaced and found[last] + len(self.pieces[last]) == len(
            self.decoded)

    def may_take(self, token: int, allowed: Any) -> bool:
        """Whether ``token`` keeps the answer in its shape, given ``allowed()`` (not None)."""
        return token in self.end_ids or (token < allowed.shape[0] and bool(allowed[token]))

    @property
    def off_labels(self) -> bool:
        """Whether the answer can no longer be one of ``labels`` (compared as ``is_label``
        does, without the surrounding whitespace): no label begins with the text so far, and
        the text begins with none of them (a stop text still to come could cut it back to
        one)."""
        text = self.text().lstrip()
        return not any(label.startswith(text) or text.startswith(label)
                       for label in self.labels)

    @functools.cached_property
    def folded_words(self) -> frozenset[str]:
        """``copy_words`` in any letter case (``casefold``), made when first asked for."""
        return frozenset(w.casefold() for w in self.copy_words)

    @property
    def may_end(self) -> bool:
        """Whether an end token may end the answer now: it holds its pieces, or it is as long
        as the longest training output (module docstring)."""
        return not self.pieces or has_pieces(self.decoded, self.pieces) or (
            0 < self.longest <= len(self.text().strip()))

    @property
    def incomplete(self) -> bool:
        """Whether the text so far ends inside a character whose UTF-8 bytes are split across
        tokens (its next token completes it); a text cut at a stop text never does."""
        return not self.cut and self.decoded.endswith(INCOMPLETE)

    def text(self) -> str:
        """The answer so far (a final, incomplete character left out unless it was cut)."""
        return self.decoded if self.cut else self.decoded.rstrip(INCOMPLETE)


def refuse_off_format(logits: Any, replies: Sequence[Reply]) -> None:
    """What no reply may take next, refused in its row of next-token ``logits``: an end before
    its pieces are whole (``refuse_end``), a token off its shape (``keep_to_shape``)."""
    refuse_end(logits, replies)
    keep_to_shape(logits, replies)


def refuse_end(logits: Any, replies: Sequence[Reply]) -> None:
    """Where a reply may not end yet (``Reply.may_end``), its row of next-token ``logits``
    (one row per reply) gets no end token: the next most likely token is chosen instead."""
    for row, reply in enumerate(replies):
        if not reply.done and not reply.may_end:
            logits[row, list(reply.end_ids)] = float("-inf")
