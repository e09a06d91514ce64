"""When an answer ends: the one set of stopping rules for every answer tunelab decodes.

Served answers (``inference/generate.py``) and the answers scored during training
(``training/evaluate.py``) must stop alike, or a validation score would describe answers the
service never gives. An answer ends at the base model's end token or the chat template's
end-of-turn token (``end_token_ids``), at the first of its stop texts (the end-of-turn text and,
when serving, the caller's ``stopSequences``: the text is cut before it), or at its token budget.
"""

from __future__ import annotations

from typing import Any

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


def find_stop(text: str, stops: list[str]) -> int | None:
    """Where the first of ``stops`` begins in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


class Reply:
    """One answer being decoded, a token at a time (``add``), until ``done``; ``reason`` is
    ``FINISHED`` or ``OUT_OF_TOKENS`` once it is."""

    def __init__(self, tokenizer: Any, end_ids: set[int], stops: list[str], budget: int):
        self.tokenizer, self.end_ids, self.stops, self.budget = (
            tokenizer, end_ids, [s for s in stops if s], budget)
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
        if cut is not None:
            self.decoded = self.decoded[:cut]
            self.done, self.reason, self.cut = True, FINISHED, True
        elif len(self.ids) >= self.budget:
            self.done, self.reason = True, OUT_OF_TOKENS

    @property
    def incomplete(self) -> bool:
        """Whether the text so far ends inside a character whose UTF-8 bytes are split across
        tokens (its next token completes it); a text cut at a stop text never does."""
        return not self.cut and self.decoded.endswith(INCOMPLETE)

    def text(self) -> str:
        """The answer so far (a final, incomplete character left out unless it was cut)."""
        return self.decoded if self.cut else self.decoded.rstrip(INCOMPLETE)
