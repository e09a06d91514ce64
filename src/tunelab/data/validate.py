"""Check a parsed dataset before any job is queued: errors stop tuning, warnings are advice.

Everything is checked in one pass and reported at once (style point 4). Errors are things that
would make tuning fail or silently train on garbage (too few examples, empty or over-long
fields, examples that do not fit the base model's context). Warnings are things that usually
make the tuned model worse but may be intended: duplicates, contradicting outputs and examples
written in different formats. The model learns the *format* of the examples as much as their
content, so a dataset that mixes ``"question: ..."`` with bare questions teaches two formats,
and production prompts that match neither get worse answers.

Locations follow ``parse``: ``Problem.row`` is the 1-based example number; ``location`` names
the source row ("data.csv, row 7" — the header is row 1) when the examples came from
``read_file`` / ``read_bytes`` / ``from_records``, else ``"<location>, example <n>"``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from tunelab.catalog.templates import CONTROL_MARKER
from tunelab.data.examples import Example
from tunelab.data.prompt_format import RECOMMENDED, detect_task, format_findings, quote
from tunelab.errors import DatasetError, Problem

MIN_EXAMPLES = 20  # Gemini's minimum; 100-500 give noticeably better models
MAX_INPUT_CHARS = 40_000  # Gemini's per-example limits
MAX_OUTPUT_CHARS = 5_000

_MAX_GROUPS = 20  # duplicate / conflict warnings listed before a summary line
_MAX_ROWS = 10  # rows named in one message before "and N more"

# A leading label such as "question:", "Q:", "### Input:", "**Answer:**" or "Translate to French:"
# -- one to four words starting with a letter, then a colon followed by whitespace or the end
# (so "http://..." and "10:30" are not labels).
_LABEL = re.compile(r"^[\s#*>]*([^\W\d_][\w'/-]*(?:[ \t]+[\w'/-]+){0,3})[ \t]*\**:\**(?=\s|$)")

# Each warning's ``code`` (``Problem.code``), with ``rows`` the examples it concerns, so that a
# client (the Studio) places and words it without reading the message.
WARNING_CODES = {
    "DUPLICATE_EXAMPLES": "examples with the same input and output (rows: the copies)",
    "CONFLICTING_OUTPUTS": "one input with different outputs (rows: those examples)",
    "MIXED_FORMATS": "inputs or outputs (field) written in several formats (rows: the "
                     "examples not in the commonest one)",
    "MIXED_SYSTEM_PROMPTS": "some examples with a system prompt, others without (rows: "
                            "those without)",
    "PROMPT_FORMAT": "inputs lacking the preamble or a field label most inputs have (rows: "
                     "those inputs)",
    "CONTROL_TOKEN": "a text with a chat-template control token (rows: that example)",
    "TASK_SIZE": "fewer examples than the Gemini tuning guide recommends for the task type "
                 "the outputs suggest",
}

_FORMAT_ADVICE = {
    "input": "The model learns the format of the examples, so prompts in production must match "
             "the training format: write every input in one format, and send prompts in it",
    "output": "The model learns the format of the examples and will answer in a mix of these "
              "formats: write every output in one format",
}


def validate(examples: list[Example], *, count_tokens: Callable[[Example], int] | None = None,
             context_length: int | None = None, min_examples: int = MIN_EXAMPLES,
             location: str = "training data") -> list[Problem]:
    """Check ``examples``; return the warnings, or raise ``DatasetError(problems, warnings)``.

    Errors: fewer than ``min_examples`` examples; an empty or whitespace-only input or output;
    an input over ``MAX_INPUT_CHARS`` or an output over ``MAX_OUTPUT_CHARS`` characters; and,
    when both ``count_tokens`` and ``context_length`` are given, an example with more tokens
    than ``context_length`` (``count_tokens`` should count the whole formatted example).
    Warnings: exact duplicates, one input with different outputs, inputs (or outputs) in
    different formats -- some starting with a label like ``"Q:"`` and others not, different
    labels, or only some wrapped as JSON / a code block / quotes -- and text that contains a
    chat-template control token such as ``<|im_end|>``.

    Findings are located by the rows/lines ``read_file``/``read_bytes``/``from_records``
    recorded on the list (an ``ExampleList``); for any other list, as ``"<location>, example n"``.
    """
    where = _Where(examples, location)
    problems: list[Problem] = []
    n = len(examples)
    if n < min_examples:
        given = "no examples were given" if n == 0 else (
            f"only {n} example{' was' if n == 1 else 's were'} given")
        problems.append(Problem(
            f"{given}; at least {min_examples} are needed, and 100-500 are recommended for a "
            "good model. Add more examples", where.source))
    for i, ex in enumerate(examples):
        for field, value, limit, what in (("text_input", ex.text_input, MAX_INPUT_CHARS, "input"),
                                          ("output", ex.output, MAX_OUTPUT_CHARS, "output")):
            if not value.strip():
                empty = "empty" if not value else "only whitespace"
                todo = ("the text the model receives" if what == "input"
                        else "the answer the model should give")
                problems.append(Problem(f"the {what} is {empty}; write {todo}, or remove the "
                                        "example", where.at(i), field, i + 1))
            elif len(value) > limit:
                problems.append(Problem(
                    f"the {what} is {len(value):,} characters; the limit is {limit:,}. Shorten "
                    "it, or split it into several examples", where.at(i), field, i + 1))
        if count_tokens is not None and context_length is not None:
            tokens = count_tokens(ex)
            if tokens > context_length:
                problems.append(Problem(
                    f"the example is {tokens:,} tokens (input and output together); the base "
                    f"model's context length is {context_length:,}. Shorten the input or the "
                    "output, or choose a base model with a longer context",
                    where.at(i), "", i + 1))
    warnings = [*_duplicates(examples, where), *_conflicts(examples, where),
                *_formats([ex.text_input for ex in examples], "input", "text_input", where),
                *_formats([ex.output for ex in examples], "output", "output", where),
                *_systems(examples, where), *_control_markers(examples, where),
                *_prompt_formats(examples, where), *_task_size(examples, where)]
    if problems:
        raise DatasetError(problems, warnings)
    return warnings


class _Where:
    """Names examples: by the parser's rows/lines when it recorded them, else by number."""

    def __init__(self, examples: Sequence[Example], location: str) -> None:
        labels = getattr(examples, "labels", None)
        source = getattr(examples, "source", "")
        if labels is not None and len(labels) == len(examples) and source:
            self.source, self.labels = source, list(labels)
        else:
            self.source = location
            self.labels = [f"example {i}" for i in range(1, len(examples) + 1)]

    def at(self, i: int) -> str:
        return f"{self.source}, {self.labels[i]}"

    def rows(self, indexes: Sequence[int]) -> str:
        """``"rows 3, 8 and 12"`` (or ``"examples ..."``, ``"lines ..."``)."""
        parts = [self.labels[i].split(" ", 1) for i in indexes[:_MAX_ROWS]]
        more = len(indexes) - len(parts)
        if len({p[0] for p in parts}) == 1 and all(len(p) == 2 for p in parts):
            head, items = parts[0][0] + ("s" if len(indexes) > 1 else ""), [p[1] for p in parts]
        else:
            head, items = "", [" ".join(p) for p in parts]
        if more:
            items.append(f"{more} more")
        text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        return f"{head} {text}".strip()


def _systems(examples: Sequence[Example], where: _Where) -> list[Problem]:
    """Some examples with a system prompt and others without: the model learns two formats."""
    without = [i for i, ex in enumerate(examples) if ex.system is None]
    if not without or len(without) == len(examples):
        return []
    return [Problem(
        f"{where.rows(without)} {'has' if len(without) == 1 else 'have'} no system prompt while "
        "the other examples have one; give every example the same system prompt (or none), the "
        "way production requests will be sent", where.source, "system",
        code="MIXED_SYSTEM_PROMPTS", rows=_numbers(without))]


def _prompt_formats(examples: Sequence[Example], where: _Where) -> list[Problem]:
    """Inputs missing a preamble or a field label that most inputs have, named by row (the
    leading label is ``_formats``' concern, so it is not reported twice)."""
    texts = [ex.text_input for ex in examples]
    leading = Counter(x for x in (_label(t) for t in texts) if x is not None)
    out = []
    for f in format_findings(texts, list(leading)):
        verb = "lacks" if len(f.rows) == 1 else "lack"
        if f.kind == "preamble":
            what = f"the opening \"{quote(f.what)}\" that the other {f.usual} inputs start with"
        else:
            what = f"the field label '{f.what}' that the other {f.usual} inputs carry"
        out.append(Problem(f"{where.rows(f.rows)} {verb} {what}. {_FORMAT_ADVICE['input']}",
                           where.source, "text_input", code="PROMPT_FORMAT",
                           rows=_numbers(f.rows)))
    return out


_TASK_WORDS = {"classification": "classification labels", "summarisation": "summaries of longer "
               "inputs", "search": "references to documents (a document search task)"}


def _task_size(examples: Sequence[Example], where: _Where) -> list[Problem]:
    """The Gemini tuning guide's dataset size per task type, for the type the outputs suggest
    (fewer than 20 examples is an error already)."""
    n = len(examples)
    task = detect_task([ex.text_input for ex in examples], [ex.output for ex in examples])
    if task is None or n < MIN_EXAMPLES:
        return []
    low, high = RECOMMENDED[task]
    if n >= low:
        return []
    advice = f"{low} or more" if low == high else f"{low}-{high} or more"
    detail = ""
    if task == "classification":
        counts = Counter(ex.output.strip() for ex in examples)
        fewest = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))[:3]
        detail = (f" ({len(counts)} labels; the fewest examples: "
                  + ", ".join(f"'{quote(x)}' {c}" for x, c in fewest) + ")")
    return [Problem(
        f"the outputs look like {_TASK_WORDS[task]}{detail}; for this kind of task {advice} "
        f"examples are recommended and {n} were given, so the tuned model may answer new "
        "inputs poorly. Add examples, covering every kind of input production will send",
        where.source, code="TASK_SIZE")]


def _control_markers(examples: Sequence[Example], where: _Where) -> list[Problem]:
    """Text that looks like a chat format's control token (``<|im_end|>``, ``<end_of_turn>``):
    it is tuned as plain text (it cannot end or start a turn), so the model learns to write
    it, which is rarely what was meant (often a conversation pasted with its template)."""
    found = []
    for i, ex in enumerate(examples):
        for field, what, value in (("system", "system prompt", ex.system or ""),
                                   ("text_input", "input", ex.text_input),
                                   ("output", "output", ex.output)):
            m = CONTROL_MARKER.search(value)
            if m:
                found.append(Problem(
                    f"the {what} contains '{m.group()}', which looks like a chat-template "
                    "control token. tunelab tunes it as plain text (it cannot end or start a "
                    "turn), so the model learns to write it; remove it unless the model should "
                    "write it literally", where.at(i), field, i + 1, code="CONTROL_TOKEN",
                    rows=(i + 1,)))
    if len(found) <= _MAX_GROUPS:
        return found
    return [*found[:_MAX_GROUPS], Problem(
        f"and {len(found) - _MAX_GROUPS} more texts with chat-template control tokens",
        where.source, code="CONTROL_TOKEN")]


def _numbers(indexes: Sequence[int]) -> tuple[int, ...]:
    """0-based example indexes as the 1-based example numbers of ``Problem.rows``."""
    return tuple(i + 1 for i in indexes)


def _capped(groups: list[list[int]], what: str, where: _Where, code: str) -> list[Problem]:
    if len(groups) <= _MAX_GROUPS:
        return []
    return [Problem(f"and {len(groups) - _MAX_GROUPS} more groups of {what}", where.source,
                    code=code, rows=_numbers([i for g in groups[_MAX_GROUPS:] for i in g]))]


def _duplicates(examples: Sequence[Example], where: _Where) -> list[Problem]:
    seen: dict[Example, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        seen[ex].append(i)
    groups = [rows for rows in seen.values() if len(rows) > 1]
    out = [Problem(
        f"{where.rows(rows)} are identical (the same input and output); a repeated example "
        "counts more in training. Remove the copies unless that weighting is intended",
        where.at(rows[1]), "", rows[1] + 1, code="DUPLICATE_EXAMPLES", rows=_numbers(rows))
        for rows in groups[:_MAX_GROUPS]]
    return out + _capped(groups, "identical examples", where, "DUPLICATE_EXAMPLES")


def _conflicts(examples: Sequence[Example], where: _Where) -> list[Problem]:
    by_input: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_input[ex.text_input].append(i)
    groups = [rows for rows in by_input.values()
              if len({examples[i].output for i in rows}) > 1]
    out = [Problem(
        f"{where.rows(rows)} have the same input but different outputs; the model cannot learn "
        "which one to give. Add what decides the answer to the inputs, or keep one output",
        where.at(rows[0]), "text_input", rows[0] + 1, code="CONFLICTING_OUTPUTS",
        rows=_numbers(rows)) for rows in groups[:_MAX_GROUPS]]
    return out + _capped(groups, "same inputs with different outputs", where,
                         "CONFLICTING_OUTPUTS")


def _label(text: str) -> str | None:
    """The leading ``word(s):`` label of a text, as written (e.g. ``"Q:"``), or None."""
    m = _LABEL.match(text)
    return re.sub(r"\s+", " ", m.group(1)) + ":" if m else None


def _wrapper(text: str) -> str | None:
    """How a text is wrapped as a whole: a JSON object/array, a code block, quotes, or None."""
    s = text.strip()
    for start, end, name in (("{", "}", "a JSON object in braces"),
                             ("[", "]", "a JSON array in brackets"),
                             ("```", "```", "a ``` code block"),
                             ('"', '"', "double quotes")):
        if len(s) >= len(start) + len(end) and s.startswith(start) and s.endswith(end):
            return name
    return None


def _formats(texts: list[str], what: str, field: str, where: _Where) -> list[Problem]:
    """Warn when the texts of one side (inputs or outputs) are written in several formats."""
    out: list[Problem] = []
    advice = _FORMAT_ADVICE[what]
    filled = [i for i, t in enumerate(texts) if t.strip()]  # empty ones are errors already
    labels = {i: _label(texts[i]) for i in filled}
    counts = Counter(x for x in labels.values() if x is not None)
    # A label seen only once is likely content ("Paris: ..."), not a format; labels used at
    # least twice show that the dataset does use labels, and then every difference matters --
    # unless half the labelled texts or more carry a label of their own: "Oslo order: ...",
    # "Cork order: ..." among free phrasings are a sentence's words (its first one varying),
    # not a field.
    repeated = sum(n for n in counts.values() if n >= 2)
    if repeated and 2 * repeated > sum(counts.values()):
        groups = _group({i: f"the label '{x}'" if x else "no label" for i, x in labels.items()})
        if len(groups) > 1:
            out.append(Problem(f"the {what}s start in different ways: "
                               f"{_mix(groups, 'with', where)}. {advice}", where.source, field,
                               code="MIXED_FORMATS", rows=_unusual(groups)))
    groups = _group({i: _wrapper(texts[i]) or "plain text" for i in filled})
    if len(groups) > 1:
        out.append(Problem(f"the {what}s are written in different forms: "
                           f"{_mix(groups, 'as', where)}. {advice}", where.source, field,
                           code="MIXED_FORMATS", rows=_unusual(groups)))
    return out


def _group(kinds: dict[int, str]) -> list[tuple[str, list[int]]]:
    """Example indexes per kind, the most common kind first."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, kind in kinds.items():
        by_kind[kind].append(i)
    return sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _unusual(groups: list[tuple[str, list[int]]]) -> tuple[int, ...]:
    """The examples not written in the commonest kind (those ``_mix`` names)."""
    return _numbers(sorted(i for _, rows in groups[1:] for i in rows))


def _mix(groups: list[tuple[str, list[int]]], verb: str, where: _Where) -> str:
    """``"28 with X, 2 with Y (rows 5 and 9)"``: rows are named for all but the usual kind."""
    parts = [f"{len(groups[0][1])} {verb} {groups[0][0]}"]
    parts += [f"{len(rows)} {verb} {kind} ({where.rows(rows)})" for kind, rows in groups[1:]]
    return ", ".join(parts)
