"""The format of the training prompts, and whether a production prompt follows it.

A tuned model learns the *format* of its training inputs as much as their content: trained on
``"Classify the ticket.\\n\\nTicket: ..."`` it answers a bare ticket worse, and trained on
``"question: ...\\ncontext: ..."`` it answers a prompt without ``context:`` worse. That is the
main reason a tuned model that scored well fails in production, so the format is checked at
the two moments it matters:

- **at validation** (``format_findings``): inputs whose format differs from the rest -- a
  preamble most inputs start with and a few lack, or a field label most inputs carry and a few
  lack -- named by row, as dataset warnings (``data/validate.py``);
- **at inference** (``PromptFormat.check``): the profile of the training prompts
  (``profile_of``: the preamble they all start with, the field labels they all carry, in
  order) is recorded in the model's manifest at training time, and a prompt that lacks them is
  answered with a note saying so (``promptFormat`` in the generateContent response).

It also detects the likely *task type* from the outputs (``detect_task``), for the dataset-size
advice of the Gemini tuning guide (classification 100+, summarisation 100-500, document search
100+). Everything here is plain string work on bounded text: no model, no tokenizer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# A field label at the start of a line: one to four words starting with a letter, then a colon
# followed by whitespace or the end ("question:", "Context:", "### Input:", "**Answer:**");
# "http://..." and "10:30" are not labels.
LABEL_LINE = re.compile(
    r"^[ \t#*>]*([^\W\d_][\w'/-]*(?:[ \t]+[\w'/-]+){0,3})[ \t]*\**:\**(?=\s|$)", re.MULTILINE
)
# Only the start of a prompt is searched for its preamble and labels (a prompt may be 40,000
# characters; the format is in its first lines, the rest is content).
SCAN_CHARS = 4_000
# A preamble is at least this long: "add " or "Q: What" are content or labels, not preambles.
MIN_PREAMBLE_WORDS = 3
MIN_PREAMBLE_CHARS = 12
MAX_PREAMBLE_WORDS = 200
# A format most inputs follow: at least this share of them, and at least MIN_FOLLOWING inputs.
MAJORITY = 0.7
MIN_FOLLOWING = 3
# A label is part of the training format (checked at inference) when at least this share of the
# training inputs carry it (one example in twenty may be written differently).
PROFILE_SHARE = 0.95
MAX_PROFILE_LABELS = 12
# Texts quoted in messages are cut to this many characters.
QUOTE_CHARS = 60

CLASSIFICATION, SUMMARISATION, DOCUMENT_SEARCH = "classification", "summarisation", "search"
# Gemini's tuning guide: examples recommended per task type (low end, high end).
RECOMMENDED = {CLASSIFICATION: (100, 100), SUMMARISATION: (100, 500), DOCUMENT_SEARCH: (100, 100)}
# A reference to a document: a URL, a file name, or an identifier such as "doc-17" / "KB1234".
_DOC_REF = re.compile(
    r"^(https?://\S+|[\w./-]+\.(pdf|md|txt|html?|docx?)"
    r"|(doc|docs|document|kb|article|page|faq|section|passage)[-_# ]?\d{1,9})$", re.I
)
_REF_SEPARATOR = re.compile(r"[,;\s]+")
_WORD = re.compile(r"\S+")


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """A short, one-line rendering of ``text`` for a message: each run of whitespace one space,
    characters that do not print escaped (``\\x1b``, never sent to a terminal), at most
    ``limit`` characters with the "…" that cuts it."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def labels_of(text: str) -> list[str]:
    """The field labels at line starts in the beginning of ``text``, in order, lower-cased and
    with single spaces (``"Question:"`` and ``"question :"`` are the same label)."""
    out = []
    for m in LABEL_LINE.finditer(text[:SCAN_CHARS]):
        label = " ".join(m.group(1).split()).lower() + ":"
        if label not in out:
            out.append(label)
    return out


def _normal(text: str) -> str:
    return " ".join(text[:SCAN_CHARS].split())


def common_preamble(texts: Sequence[str], share: float) -> tuple[str, list[int]] | None:
    """The longest opening (whole words, ending at a ``:``/``.``/``?``/``!`` or a line break)
    that at least ``share`` of ``texts`` start with, and the indexes of those that do; None
    when there is no such opening of at least ``MIN_PREAMBLE_WORDS`` words."""
    words = [_WORD.findall(_normal(t))[:MAX_PREAMBLE_WORDS] for t in texts]
    need = max(MIN_FOLLOWING, share * len(texts))
    followers = set(range(len(texts)))
    best: tuple[int, list[int]] | None = None
    for k in range(1, MAX_PREAMBLE_WORDS + 1):
        counts = Counter(tuple(w[:k]) for i, w in enumerate(words) if i in followers
                         and len(w) > k)  # a preamble is followed by content
        if not counts:
            break
        prefix, n = counts.most_common(1)[0]
        if n < need:
            break
        followers = {i for i in followers if tuple(words[i][:k]) == prefix}
        if k >= MIN_PREAMBLE_WORDS and _ends_a_part(texts[min(followers)], prefix):
            best = (k, sorted(followers))
    if best is None:
        return None
    k, rows = best
    text = " ".join(words[rows[0]][:k])
    if len(text) < MIN_PREAMBLE_CHARS:
        return None
    return text, rows


def _ends_a_part(text: str, prefix: tuple[str, ...]) -> bool:
    """Whether the opening ``prefix`` (words) ends where a part of ``text`` ends: at a
    sentence end or a colon, or at a line break (so a preamble never stops mid-sentence, which
    would make content words part of the format)."""
    start = 0
    for w in prefix:  # where the prefix ends in the original text
        start = text.find(w, start) + len(w)
    if prefix[-1][-1] == ":":
        # a field label ("Ticket:") on a line of its own belongs to the fields, not the preamble
        line = text[text.rfind("\n", 0, start) + 1:start]
        return not LABEL_LINE.fullmatch(line.strip())
    if prefix[-1][-1] in ".?!":
        return True
    return text[start:start + 1] in ("\n", "\r")


def starts_with(text: str, preamble: str) -> bool:
    return _normal(text).startswith(preamble)


@dataclass(frozen=True)
class PromptFormat:
    """What every training prompt has in common: an opening (``preamble``) and field labels in
    an order (``labels``). Recorded in the manifest (``to_dict``) at training time."""

    preamble: str | None = None
    labels: tuple[str, ...] = ()
    example_count: int = 0

    @property
    def empty(self) -> bool:
        return self.preamble is None and not self.labels

    def to_dict(self) -> dict:
        return {"preamble": self.preamble, "labels": list(self.labels),
                "example_count": self.example_count}

    @classmethod
    def from_dict(cls, d: object) -> PromptFormat:
        """The profile a manifest recorded; an empty one for anything else (an older manifest,
        or one tunelab did not write)."""
        if not isinstance(d, dict):
            return cls()
        preamble = d.get("preamble")
        labels = d.get("labels")
        count = d.get("example_count")
        return cls(
            preamble if isinstance(preamble, str) and preamble else None,
            tuple(x for x in labels[:MAX_PROFILE_LABELS] if isinstance(x, str))
            if isinstance(labels, list) else (),
            count if isinstance(count, int) else 0,
        )

    def check(self, prompt: str) -> str | None:
        """Why ``prompt`` does not follow the training format (one sentence saying what to
        change), or None when it does."""
        if self.empty:
            return None
        wrong = []
        if self.preamble is not None and not starts_with(prompt, self.preamble):
            wrong.append(f"start with \"{quote(self.preamble)}\"")
        if self.labels:
            follows = self.preamble is not None and starts_with(prompt, self.preamble)
            have = labels_of(_after(prompt, self.preamble) if follows else prompt)
            missing = [x for x in self.labels if x not in have]
            present = [x for x in have if x in self.labels]
            order = [x for x in self.labels if x in present]
            if missing:
                listed = ", ".join(f"'{x}'" for x in missing)
                wrong.append(f"carry the field label{'s' if len(missing) > 1 else ''} {listed}"
                             " at the start of a line")
            elif present != order:
                wrong.append("give the fields in the order " +
                             ", ".join(f"'{x}'" for x in self.labels))
        if not wrong:
            return None
        return (f"This prompt does not follow the format the model was tuned on: the "
                f"{self.example_count} training prompts all {' and '.join(wrong)}, and this one "
                "does not. A tuned model answers prompts in its training format best; send "
                "prompts written the way the training examples were.")


def profile_of(texts: Sequence[str]) -> PromptFormat:
    """The format the training inputs share: their common opening, and the field labels
    (after it) that nearly all of them carry, in their usual order."""
    if not texts:
        return PromptFormat()
    found = common_preamble(texts, 1.0)
    preamble = found[0] if found else None
    per_text = [labels_of(_after(t, preamble)) for t in texts]
    counts = Counter(x for labels in per_text for x in labels)
    need = PROFILE_SHARE * len(texts)
    common = [x for x, n in counts.items() if n >= need]
    # the usual order: by the mean position of each label in the texts that carry it
    position = {x: sum(labels.index(x) for labels in per_text if x in labels) / counts[x]
                for x in common}
    labels = tuple(sorted(common, key=position.__getitem__)[:MAX_PROFILE_LABELS])
    return PromptFormat(preamble, labels, len(texts))


def _after(text: str, preamble: str | None) -> str:
    """``text`` without the preamble (so a label inside the preamble is not counted twice)."""
    if preamble is None:
        return text
    words = len(preamble.split())
    parts = re.split(r"(\s+)", text.lstrip(), maxsplit=words)
    return "".join(parts[2 * words:]) if len(parts) > 2 * words else ""


@dataclass
class FormatFinding:
    """Inputs written differently from most: ``rows`` (0-based) lack ``what``, which the other
    ``usual`` inputs have."""

    kind: str  # "preamble" | "label"
    what: str
    rows: list[int] = field(default_factory=list)
    usual: int = 0


def format_findings(texts: Sequence[str], skip_labels: Sequence[str] = ()) -> list[FormatFinding]:
    """Inputs that lack a preamble or a field label that most of the inputs (at least
    ``MAJORITY``) have. ``skip_labels`` are reported elsewhere (the leading label)."""
    n = len(texts)
    if n < MIN_FOLLOWING + 1:
        return []
    out = []
    found = common_preamble(texts, MAJORITY)
    if found is not None and len(found[1]) < n:
        preamble, rows = found
        have = set(rows)
        out.append(FormatFinding("preamble", preamble, [i for i in range(n) if i not in have],
                                 len(rows)))
    per_text = [set(labels_of(t)) for t in texts]
    counts = Counter(x for labels in per_text for x in labels)
    skip = {" ".join(x.split()).lower() for x in skip_labels}
    for label, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        if label in skip or count == n or count < max(MIN_FOLLOWING, MAJORITY * n):
            continue
        if found is not None and label in labels_of(found[0]):
            continue  # part of the preamble, reported with it
        out.append(FormatFinding("label", label,
                                 [i for i in range(n) if label not in per_text[i]], count))
    return out


def detect_task(inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
    """The likely task type, from the outputs: ``classification`` (a few short labels, each
    repeated), ``summarisation`` (prose much shorter than long inputs) or ``search`` (outputs
    that name documents); None for anything else (extraction, rewriting, ...)."""
    n = len(outputs)
    if n == 0:
        return None
    stripped = [o.strip() for o in outputs]
    distinct = set(stripped)
    words = [len(o.split()) for o in stripped]
    # labels: at least two outputs that repeat, together nearly all of the outputs
    repeated = [c for c in Counter(stripped).values() if c >= 2]
    if (len(repeated) >= 2 and len(distinct) <= 50 and 2 * len(distinct) <= n
            and sum(repeated) >= 0.9 * n and sum(words) / n <= 4):
        return CLASSIFICATION
    if sum(1 for o in stripped if _names_documents(o)) >= 0.8 * n:
        return DOCUMENT_SEARCH
    in_chars = sum(len(t) for t in inputs) / n
    out_chars = sum(len(o) for o in stripped) / n
    json_like = sum(1 for o in stripped if o[:1] in "{[") > n / 2
    if not json_like and in_chars >= 300 and out_chars <= 0.5 * in_chars and sum(words) / n >= 5:
        return SUMMARISATION
    return None


def _names_documents(output: str) -> bool:
    """Whether ``output`` is one or more document references (``"doc-3, doc-17"``)."""
    parts = [p for p in _REF_SEPARATOR.split(output) if p]
    return 0 < len(parts) <= 20 and all(_DOC_REF.match(p) for p in parts)
