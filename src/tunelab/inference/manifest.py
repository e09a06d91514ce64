"""What serving reads from a tuned model's manifest, read once per version of the file.

The trainer writes ``manifest.json`` beside a tuned model's adapter. Serving needs four facts
from it: the system instruction the training examples all shared (answered with when a request
brings none), the labels a tuned classifier answers with (``catalog/labels.py``), what its
training outputs say of how its answers are decoded (``catalog/stopping.py`` ``AnswerRules``,
which reads its own fields) and the format its training prompts followed
(``data/prompt_format.py``, checked by ``prompt_check.py``). The
manifest also lists every snapshot -- too much to parse on each request -- so this module is its
one reader: it stats the file, refuses one over the bound the trainer never writes, parses it
once per (path, mtime, size) and keeps only what is well formed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tunelab.catalog.labels import MAX_ANSWER_LABELS
from tunelab.catalog.stopping import NO_RULES, AnswerRules
from tunelab.data.prompt_format import PromptFormat

# A manifest lists every step's snapshot: ~200 bytes a step, so even 100,000 steps stay far
# below this. A bigger file is not one the trainer wrote, and is not read.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServedFacts:
    """A tuned model's recorded facts; all empty for a base model or an unreadable manifest."""

    system_instruction: str | None = None
    answer_labels: tuple[str, ...] | None = None
    # how its answers are decoded: the pieces every training output holds, where an answer
    # ends after them and where it puts no space, the longest output, their fixed shape,
    # whether they copy the prompt's words (catalog/stopping.py AnswerRules)
    rules: AnswerRules = NO_RULES
    prompt_format: PromptFormat = field(default_factory=PromptFormat)


NO_FACTS = ServedFacts()


def served_facts(adapter: Path | None) -> ServedFacts:
    """The facts recorded for the tuned model whose adapter is ``adapter``."""
    if adapter is None:
        return NO_FACTS
    manifest = Path(adapter).parent / "manifest.json"
    try:
        st = manifest.stat()
    except OSError:
        return NO_FACTS
    return _read(str(manifest), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _read(manifest: str, mtime_ns: int, size: int) -> ServedFacts:
    if size > MAX_MANIFEST_BYTES:
        return NO_FACTS
    try:
        data = json.loads(Path(manifest).read_bytes())
    except (OSError, ValueError, RecursionError):
        return NO_FACTS
    if not isinstance(data, dict):
        return NO_FACTS
    system = data.get("system_instruction")
    labels = data.get("answer_labels")
    labels_ok = (isinstance(labels, list) and 2 <= len(labels) <= MAX_ANSWER_LABELS
                 and all(isinstance(x, str) and x.strip() for x in labels))
    return ServedFacts(
        system_instruction=system if isinstance(system, str) else None,
        answer_labels=tuple(labels) if labels_ok else None,
        rules=AnswerRules.from_record(data),
        prompt_format=PromptFormat.from_dict(data.get("prompt_format")),
    )


def rules_words(adapter: Path | None) -> str | None:
    """The rules a tuned model's answers keep, in words (``its system prompt and its 5
    labels``), or None where it keeps none (free text, no shared system prompt)."""
    facts = served_facts(adapter)
    parts = []
    if facts.system_instruction:
        parts.append("its system prompt")
    if facts.answer_labels:
        parts.append(f"its {len(facts.answer_labels)} labels")
    if facts.rules.shape:
        parts.append("its outputs' fixed shape")
    elif facts.rules.pieces:
        parts.append("the parts every output holds")
    if facts.rules.copies:
        parts.append("its preference for the prompt's words")
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class AskedAs(NamedTuple):
    """The tuned model a base model in a comparison is asked as: its name, its adapter and its
    rules in words (``rules_words``)."""

    name: str
    adapter: Path
    words: str


def answer_rules_of(models: list[tuple[str, Path | None]]) -> AskedAs | None:
    """The tuned model whose rules a base model in a comparison answers by, from the compared
    ``(name, adapter)`` pairs (adapter None for a base model): the first tuned model, where it
    keeps any rules (``rules_words``); None otherwise. A tuned model keeps rules learnt from its
    data -- it answers with its labels, keeps to its outputs' shape, remembers their system
    prompt -- and its validation scores ask the base model the same way, so the base's score is
    what those rules give an untuned model, not a chat answer scored against labels;
    ``tunelab eval``, ``:evaluate`` and the compare page ask it so too (``Generator.answers``'
    ``rules_of``), and their base score is the one ``tunelab tune`` reports."""
    name, adapter = next(((n, a) for n, a in models if a is not None), (None, None))
    words = rules_words(adapter) if adapter is not None else None
    return AskedAs(name, adapter, words) if name is not None and words else None
