"""Turn what users send (inline records, CSV / JSON / JSONL files) into ``Example`` lists.

Parsing reports every problem it can find in one ``DatasetError`` (style point 4): a user fixing
a 2,000-row spreadsheet should not have to re-upload it once per bad row. Each ``Problem`` names
where it is, with these conventions:

* ``Problem.row`` is always the 1-based *example* number (the n-th record that holds data).
* ``Problem.location`` names the place in the source the user can jump to:
  ``"data.csv, row 7"`` is the spreadsheet row (the header is row 1, so example 1 is row 2;
  a quoted value spanning several lines is still one row), ``"data.jsonl, line 3"`` is the text
  line, ``"data.json, example 4"`` / ``"training data, example 4"`` count records.

The returned list is an ``ExampleList``: a plain ``list[Example]`` that also remembers where each
example came from, so that ``validate`` can name the same rows, and every record as it was read
(``records``, the bad ones too): ``parse_bytes`` returns them without raising, for a preview
that shows each row beside its problems (``data/preview.py``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunelab.data.examples import Example
from tunelab.data.prompt_format import quote
from tunelab.errors import DatasetError, Problem

MAX_FILE_BYTES = 4 * 1024 * 1024  # AI Studio's upload limit: 4 MiB = 4,194,304 bytes

# Accepted field / column names, in the order they are suggested to users. The Gemini API sends
# textInput (JSON) or text_input (google-genai's snake_case); prompt/completion is the OpenAI style.
INPUT_KEYS = ("text_input", "textInput", "input", "prompt")
OUTPUT_KEYS = ("output", "completion")

_MAX_LISTED = 10  # bad-byte lines listed before "and N more"
_LONG_NUMBER = re.compile(r"-?\d{4301,}")  # Python refuses int() of more than 4,300 digits


@dataclass(frozen=True)
class _Unreadable:
    """A JSONL line that is not JSON (already reported); its text is what a preview shows."""

    text: str


@dataclass(frozen=True)
class SourceRecord:
    """One record of the source that holds data, as read: ``example`` holds what could be read
    of it (a value that is not text as its JSON, a missing one as ""), ``readable`` whether it
    made an example. A problem's ``row`` n is ``records[n - 1]``."""

    label: str
    example: Example
    readable: bool = True


class ExampleList(list[Example]):
    """A ``list[Example]`` that remembers where each example came from.

    ``source`` names the whole dataset ("data.csv", "training data"); ``labels[i]`` names example
    ``i`` inside it ("row 2", "line 1", "example 1"). ``validate`` uses them to locate findings;
    anything that treats this as a plain list keeps working (slices are plain lists).
    ``records`` lists every record that holds data, the unreadable ones too; ``kind`` is the
    format read ("csv", "json", "jsonl") and ``header`` a CSV's column names.
    """

    def __init__(self, examples: Sequence[Example] = (), *, source: str = "",
                 labels: Sequence[str] = (), records: Sequence[SourceRecord] = (),
                 kind: str = "", header: Sequence[str] | None = None) -> None:
        super().__init__(examples)
        self.source = source
        self.labels = list(labels)
        self.records = list(records)
        self.kind = kind
        self.header = list(header) if header is not None else None


# ---------------------------------------------------------------------------------------------
# Records (inline examples, JSON, JSONL)


def _norm(name: str) -> str:
    """Compare names the way users mean them: "Text Input" == "text_input" == "textInput"."""
    return re.sub(r"[\s_-]", "", name).lower()


def find_key(keys: Sequence[str], wanted: str | None, accepted: Sequence[str]) -> list[str]:
    """The keys (or column names) that match ``wanted`` if given, else any accepted name."""
    if wanted is not None:
        exact = [k for k in keys if k == wanted]
        return exact or [k for k in keys if _norm(k) == _norm(wanted)]
    targets = {_norm(a) for a in accepted}
    return [k for k in keys if _norm(k) in targets]


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _text(value: Any, where: str, field: str, row: int, problems: list[Problem]) -> str | None:
    """A field's value as text: strings as they are, numbers via ``str()``, else a Problem."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    hint = ("; serialize it to a string (e.g. with json.dumps) if the model should write JSON"
            if isinstance(value, dict | list) else "; give a string (in quotes)")
    kind = "input" if field == "text_input" else "output"
    problems.append(Problem(f"the {kind} is {_describe(value)}{hint}", where, field, row))
    return None


_MAX_SHOWN_COLUMNS = 20
_NAME_CHARS = 41  # a column's or field's name in a message: 40 characters and "…" at most


def _name_shown(name: str) -> str:
    """A column's or field's name as a message shows it (``quote``)."""
    return quote(name, _NAME_CHARS)


def _names_listed(names: Sequence[str], quoted: bool = True) -> str:
    """Names for a message: each shown (``_name_shown``), in quotes unless not ``quoted``, at
    most ``_MAX_SHOWN_COLUMNS`` and how many more; "none" for none."""
    shown = [_name_shown(n) for n in names[:_MAX_SHOWN_COLUMNS]]
    text = ", ".join(f"'{n}'" if quoted else n for n in shown) or "none"
    more = len(names) - _MAX_SHOWN_COLUMNS
    return text + (f" and {more} more" if more > 0 else "")


def _pick(record: dict, wanted: str | None, accepted: Sequence[str], field: str, where: str,
          row: int, problems: list[Problem]) -> str | None:
    keys = [k for k in record if isinstance(k, str)]
    found = find_key(keys, wanted, accepted)
    if len(found) == 1:
        return _text(record[found[0]], where, field, row, problems)
    kind = "input" if field == "text_input" else "output"
    if found:
        names = _names_listed(found)
        problems.append(Problem(f"has several {kind} fields ({names}); keep only one",
                                where, field, row))
    else:
        have = _names_listed(keys, quoted=False)
        expected = (f"'{_name_shown(wanted)}'" if wanted is not None
                    else "one of " + ", ".join(accepted))
        problems.append(Problem(f"no {kind} field; expected {expected} (the fields found: {have})",
                                where, field, row))
    return None


# Chat-format records: OpenAI's {"messages": [{"role", "content"}]} and Gemini's / Vertex AI's
# {"contents": [{"role", "parts": [{"text"}]}], "systemInstruction": {"parts": [...]}}. tunelab
# tunes single-turn examples: an optional system prompt, one user turn, one reply.
_SYSTEM_ROLES = ("system", "developer")
_REPLY_ROLES = ("assistant", "model")
CHAT_SHAPE = ('{"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": '
              '"..."}, {"role": "assistant", "content": "..."}]}')


def _is_chat(record: dict) -> bool:
    """A chat record: ``messages`` or ``contents``, and no input/output field beside it."""
    pair = {_norm(a) for a in INPUT_KEYS + OUTPUT_KEYS}
    has_pair = any(isinstance(k, str) and _norm(k) in pair for k in record)
    return not has_pair and ("messages" in record or "contents" in record)


def _chat_text(content: Any) -> str | None:
    """A message's text: a string, OpenAI's [{"type": "text", "text"}] or Gemini's parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and isinstance(content.get("parts"), list):
        content = content["parts"]
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def _from_chat(record: dict, where: str, row: int, problems: list[Problem],
               ) -> tuple[str | None, str | None, str | None]:
    key = "messages" if "messages" in record else "contents"
    turns = record[key]
    if not isinstance(turns, list):
        problems.append(Problem(f"'{key}' is {_describe(turns)}; expected a list of messages",
                                where, key, row))
        return None, None, None
    system_parts: list[str] = []
    if "systemInstruction" in record or "system_instruction" in record:
        value = record.get("systemInstruction", record.get("system_instruction"))
        text = _chat_text(value)
        if text is None:
            problems.append(Problem("the systemInstruction has no text parts; give "
                                    '{"parts": [{"text": "..."}]}', where, "systemInstruction",
                                    row))
            return None, None, None
        system_parts.append(text)
    convo: list[tuple[str, str]] = []
    for n, msg in enumerate(turns, start=1):
        role = msg.get("role", "user") if isinstance(msg, dict) else None
        text = _chat_text(msg.get("content", msg.get("parts"))) if isinstance(msg, dict) else None
        if not isinstance(role, str) or text is None:
            problems.append(Problem(
                f"message {n} has no text; each message needs a role and text content (images "
                "and tool calls cannot be tuned here)", where, key, row))
            return None, None, None
        if role in _SYSTEM_ROLES and not convo:
            system_parts.append(text)
        else:
            convo.append((role, text))
    roles = [r for r, _ in convo]
    if len(roles) != 2 or roles[0] != "user" or roles[1] not in _REPLY_ROLES:
        shape = f"the conversation is {' → '.join(roles)}" if roles else "there are no messages"
        problems.append(Problem(
            f"{shape}; tunelab tunes single-turn examples: an optional "
            "system message, one user message, then one assistant (or model) reply",
            where, key, row))
        return None, None, None
    system = "\n\n".join(system_parts) if system_parts else None
    return convo[0][1], convo[1][1], system


def _shown(value: Any) -> str:
    """A value as a preview shows it: text as it is, anything else as its JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _shown_field(record: dict, wanted: str | None, accepted: Sequence[str]) -> str:
    found = find_key([k for k in record if isinstance(k, str)], wanted, accepted)
    return _shown(record[found[0]]) if len(found) == 1 else ""


def _convert(records: Sequence[Any], source: str, labels: Sequence[str],
             input_key: str | None = None, output_key: str | None = None, kind: str = "json",
             ) -> tuple[ExampleList, list[Problem]]:
    """Records (dicts or ``(input, output)`` pairs) → examples, collecting every problem."""
    examples: list[Example] = []
    kept: list[str] = []  # the labels of the examples made
    read: list[SourceRecord] = []
    problems: list[Problem] = []
    for i, (record, label) in enumerate(zip(records, labels, strict=True)):
        row, where = i + 1, f"{source}, {label}"
        if isinstance(record, _Unreadable):
            read.append(SourceRecord(label, Example(record.text, ""), readable=False))
            continue
        system = None
        if isinstance(record, dict) and input_key is None and _is_chat(record):
            text_input, output, system = _from_chat(record, where, row, problems)
            shown = (text_input, output) if text_input is not None else (_shown(record), "")
        elif isinstance(record, dict):
            text_input = _pick(record, input_key, INPUT_KEYS, "text_input", where, row, problems)
            output = _pick(record, output_key, OUTPUT_KEYS, "output", where, row, problems)
            shown = (_shown_field(record, input_key, INPUT_KEYS),
                     _shown_field(record, output_key, OUTPUT_KEYS))
        elif isinstance(record, list | tuple) and len(record) == 2:
            text_input = _text(record[0], where, "text_input", row, problems)
            output = _text(record[1], where, "output", row, problems)
            shown = (_shown(record[0]), _shown(record[1]))
        else:
            problems.append(Problem(
                f"is {_describe(record)}; expected an object like "
                '{"text_input": "...", "output": "..."} or a pair ["input", "output"]',
                where, "", row))
            read.append(SourceRecord(label, Example(_shown(record), ""), readable=False))
            continue
        if text_input is not None and output is not None:
            examples.append(Example(text_input, output, system))
            kept.append(label)
            read.append(SourceRecord(label, examples[-1]))
        else:
            read.append(SourceRecord(label, Example(*shown), readable=False))
    return ExampleList(examples, source=source, labels=kept, records=read, kind=kind), problems


def from_records(records: list, *, location: str = "training data") -> list[Example]:
    """Inline examples → ``Example`` list; raises ``DatasetError`` naming every bad record.

    Each record is a dict with an input field (``text_input``, ``textInput``, ``input`` or
    ``prompt``) and an output field (``output`` or ``completion``), or an ``(input, output)``
    pair. Other fields are ignored; numbers become strings. Problems are located as
    ``"<location>, example <n>"`` with ``row`` = n (1-based).
    """
    if not isinstance(records, list | tuple):
        raise DatasetError([Problem(
            f"expected a list of examples, got {_describe(records)}; send "
            '[{"text_input": "...", "output": "..."}, ...]', location)])
    labels = [f"example {i}" for i in range(1, len(records) + 1)]
    examples, problems = _convert(records, location, labels)
    if problems:
        raise DatasetError(problems)
    return examples


# ---------------------------------------------------------------------------------------------
# Files


def read_file(path: str | os.PathLike[str], *, input_column: str | None = None,
              output_column: str | None = None) -> list[Example]:
    """Read a CSV / JSON / JSONL file (see ``read_bytes``); problems are located by file name."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise DatasetError([Problem("is a folder, not a file; give the path of a "
                                        ".csv, .json or .jsonl file", str(p))])
        if size > MAX_FILE_BYTES:  # don't read a huge file just to reject it
            raise DatasetError([_too_big(p.name, size)])
        data = p.read_bytes()
    except FileNotFoundError:
        raise DatasetError([Problem("file not found; check the path (relative paths start at "
                                    f"{Path.cwd()})", str(p))]) from None
    except PermissionError:
        raise DatasetError([Problem("cannot read the file (permission denied); check its "
                                    "permissions", str(p))]) from None
    return read_bytes(data, p.name, input_column=input_column, output_column=output_column)


def read_bytes(data: bytes, filename: str, *, input_column: str | None = None,
               output_column: str | None = None) -> list[Example]:
    """Parse an uploaded file's bytes; the format comes from ``filename``'s extension.

    * ``.csv`` (``.tsv``): a header row, then one example per row. The input and output columns
      are ``input_column`` / ``output_column`` when given, else found by name (``text_input``,
      ``textInput``, ``input`` or ``prompt``; ``output`` or ``completion``; any case). Other
      columns are ignored. A header with ``;`` or tabs and no commas uses that delimiter.
    * ``.json``: a list of records, ``{"examples": [...]}`` (also the Gemini
      ``{"examples": {"examples": [...]}}``), or columns ``{"text_input": [...], "output": [...]}``.
    * ``.jsonl`` (``.ndjson``): one record per line; blank lines are skipped.
    * anything else: JSON/JSONL if the text starts with ``[`` or ``{``, else CSV.

    Records are as in ``from_records``; for JSON, ``input_column`` / ``output_column`` name the
    fields. The file must be UTF-8 (a BOM is fine) and at most ``MAX_FILE_BYTES``. Raises
    ``DatasetError`` with every problem found; see the module docstring for row numbering.
    """
    examples, problems = parse_bytes(data, filename, input_column=input_column,
                                     output_column=output_column)
    if problems:
        found = problems + content_findings(examples, problems)[0]
        raise DatasetError(sorted(found, key=lambda p: p.row or 0))
    return examples


def parse_bytes(data: bytes, filename: str, *, input_column: str | None = None,
                output_column: str | None = None) -> tuple[ExampleList, list[Problem]]:
    """``read_bytes`` without raising: the examples read (an ``ExampleList`` with every record,
    the unreadable ones too) and the problems of the parse, by example number. A file that
    cannot be read as a whole (too big, not UTF-8, empty) has no records and one problem."""
    name = filename or "the file"
    try:
        return _parse(data, filename, name, input_column, output_column)
    except DatasetError as e:
        return ExampleList(source=name), e.problems


def _parse(data: bytes, filename: str, name: str, input_column: str | None,
           output_column: str | None) -> tuple[ExampleList, list[Problem]]:
    if len(data) > MAX_FILE_BYTES:
        raise DatasetError([_too_big(name, len(data))])
    text = _decode(data, name)
    if not text.strip():
        raise DatasetError([Problem("the file is empty; it should hold at least "
                                    "one example", name)])
    ext = Path(filename).suffix.lower()
    if ext in (".csv", ".tsv"):
        kind = "csv"
    elif ext in (".json", ".jsonl", ".ndjson"):
        kind = "jsonl" if ext != ".json" else "json"
    else:  # sniff
        kind = "json" if text.lstrip()[:1] in ("[", "{") else "csv"
    try:
        if kind == "csv":
            delimiter = "\t" if ext == ".tsv" else None
            examples, problems = _parse_csv(text, name, delimiter, input_column, output_column)
        elif kind == "json":
            examples, problems = _parse_json(text, name, input_column, output_column)
        else:
            examples, problems = _parse_jsonl(text, name, input_column, output_column)
    except RecursionError:  # e.g. "[[[[..." thousands deep: the json module gives up
        raise DatasetError([Problem("the JSON is nested too deeply; an example is an object "
                                    "with two text fields", name)]) from None
    return examples, problems


def content_findings(examples: ExampleList, problems: list[Problem],
                     ) -> tuple[list[Problem], list[Problem]]:
    """The content problems (an empty or over-long field) and the warnings of the examples that
    did parse, so that a file with a malformed row also reports the empty output three rows
    further on in the same pass. ``validate`` owns these checks; it runs here on the readable
    examples only (without the minimum count: the unreadable rows are not counted), and its
    example numbers are mapped back to the file's, which count the unreadable rows too."""
    from tunelab.data.validate import validate

    if not examples:
        return [], []
    try:
        found, warnings = [], validate(examples, min_examples=0)
    except DatasetError as e:
        found, warnings = e.problems, e.warnings
    bad_rows = {p.row for p in problems if p.row is not None}
    numbers = [n for n in range(1, len(examples) + len(bad_rows) + 1) if n not in bad_rows]

    def mapped(p: Problem) -> Problem:
        return replace(p, row=numbers[p.row - 1] if p.row is not None else None,
                       rows=tuple(numbers[n - 1] for n in p.rows))

    return [mapped(p) for p in found], [mapped(p) for p in warnings]


def _too_big(name: str, size: int) -> Problem:
    return Problem(
        f"the file is {size / 2**20:.1f} MB ({size:,} bytes); the limit is "
        f"{MAX_FILE_BYTES / 2**20:.0f} MB ({MAX_FILE_BYTES:,} bytes). Remove examples or "
        "shorten them (tuning rarely gains from more than a few thousand examples)", name)


# What a file that is not text at all begins with, and what it is; the advice after it.
_BINARY_KINDS = (
    (b"PK\x03\x04", "a ZIP archive: an Excel workbook (.xlsx) or another Office document"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls) or another Office document"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "compressed with gzip"),
    (b"PAR1", "a Parquet file"),
)
_AS_TEXT = ("Save or export the examples as CSV UTF-8 (in Excel: Save As → 'CSV UTF-8'), JSON or "
            "JSONL")


def _not_text(data: bytes) -> str | None:
    """What ``data`` is where it is plainly not text (a known binary format, or NUL bytes),
    said for a person; None otherwise."""
    for magic, kind in _BINARY_KINDS:
        if data.startswith(magic):
            return f"the file is {kind}, not text. {_AS_TEXT}"
    nul = data.find(b"\x00", 0, 1 << 16)
    if nul >= 0:
        return (f"the file holds binary data (a NUL byte at byte offset {nul:,}), not text. "
                f"{_AS_TEXT}")
    return None


def _decode(data: bytes, name: str) -> str:
    """UTF-8 (optionally with a BOM) → text, or a DatasetError naming each bad line and byte
    (or saying the file is not text at all)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError([Problem("the file is UTF-16 encoded; re-save it as UTF-8 (in Excel: "
                                    "Save As → 'CSV UTF-8')", name)])
    binary = _not_text(data)
    if binary is not None:
        raise DatasetError([Problem(binary, name)])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    problems: list[Problem] = []
    bad_lines = 0
    pos = 0
    while True:
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            start = pos + e.start
            line = data.count(b"\n", 0, start) + 1
            column = start - data.rfind(b"\n", 0, start)  # 1-based byte within the line
            bad_lines += 1
            if bad_lines <= _MAX_LISTED:
                problems.append(Problem(
                    f"byte 0x{data[start]:02X} at byte offset {start:,} (byte {column} of the "
                    "line) is not valid UTF-8. Re-save the file as UTF-8 (in Excel: Save "
                    "As → 'CSV UTF-8'; or `iconv -f latin1 -t utf-8`)",
                    f"{name}, line {line}"))
            next_line = data.find(b"\n", start)  # one problem per line is enough
            if next_line < 0:
                break
            pos = next_line + 1
    if bad_lines > _MAX_LISTED:
        problems.append(Problem(f"and {bad_lines - _MAX_LISTED} more lines with bytes that are "
                                "not valid UTF-8", name))
    raise DatasetError(problems)


def load_json(text: str | bytes) -> Any:
    """``json.loads``, with a number too long for Python's ``int()`` reported as a
    ``JSONDecodeError`` at its position (``json`` raises a bare ``ValueError`` for it, which
    nothing expects)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        found = _LONG_NUMBER.search(doc)
        raise json.JSONDecodeError("A number has more than 4,300 digits; write it as a string",
                                   doc, found.start() if found else 0) from None


_JSON_CAUSES = ("Fix the syntax there (common causes: a trailing comma, single quotes instead of "
                "double quotes, an unescaped quote or line break in a string)")


def _parse_json(text: str, name: str, input_key: str | None, output_key: str | None,
                ) -> tuple[ExampleList, list[Problem]]:
    try:
        value = load_json(text)
    except json.JSONDecodeError as e:
        if e.msg.startswith("Extra data"):  # several values: it is JSON Lines
            return _parse_jsonl(text, name, input_key, output_key)
        where = f"{name}, line {e.lineno}, column {e.colno}"
        return ExampleList(source=name, kind="json"), [
            Problem(f"invalid JSON: {e.msg}. {_JSON_CAUSES}", where)]
    return _from_json_value(value, name, input_key, output_key)


def _from_json_value(value: Any, name: str, input_key: str | None, output_key: str | None,
                     ) -> tuple[ExampleList, list[Problem]]:
    """A parsed .json document: a list, ``{"examples": ...}`` or a column mapping."""
    for _ in range(2):  # {"examples": [...]} and Gemini's {"examples": {"examples": [...]}}
        if isinstance(value, dict) and "examples" in value:
            value = value["examples"]
    if isinstance(value, list):
        labels = [f"example {i}" for i in range(1, len(value) + 1)]
        return _convert(value, name, labels, input_key, output_key)
    if not isinstance(value, dict):
        return ExampleList(source=name, kind="json"), [Problem(
            f"the file holds {_describe(value)}; expected a list of examples "
            '[{"text_input": "...", "output": "..."}, ...]', name)]
    if not any(isinstance(v, list) for v in value.values()):
        return ExampleList(source=name, kind="json"), [Problem(
            "the file holds a single object; put the examples in a list "
            '[{"text_input": "...", "output": "..."}, ...], or write one per line as .jsonl',
            name)]
    # Columns: {"text_input": [...], "output": [...]}.
    problems: list[Problem] = []
    cols = []
    for wanted, accepted, field in ((input_key, INPUT_KEYS, "text_input"),
                                    (output_key, OUTPUT_KEYS, "output")):
        found = find_key([k for k in value if isinstance(k, str)], wanted, accepted)
        kind = "input" if field == "text_input" else "output"
        if len(found) != 1:
            problems.append(_column_problem(name, kind, field, found, list(value), wanted,
                                            accepted))
        elif not isinstance(value[found[0]], list):
            problems.append(Problem(f"the '{found[0]}' column is {_describe(value[found[0]])}; "
                                    "expected a list with one value per example", name, field))
        else:
            cols.append(value[found[0]])
    if problems:
        return ExampleList(source=name, kind="json"), problems
    inputs, outputs = cols
    if len(inputs) != len(outputs):
        return ExampleList(source=name, kind="json"), [Problem(
            f"the columns have different lengths: {len(inputs)} input(s) and {len(outputs)} "
            "output(s); give exactly one output per input", name)]
    labels = [f"example {i}" for i in range(1, len(inputs) + 1)]
    return _convert(list(zip(inputs, outputs, strict=True)), name, labels)


def _parse_jsonl(text: str, name: str, input_key: str | None, output_key: str | None,
                 ) -> tuple[ExampleList, list[Problem]]:
    records: list[Any] = []
    labels: list[str] = []
    problems: list[Problem] = []
    # split("\n"), not splitlines(): U+2028 and friends may appear raw inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            records.append(load_json(line))
        except json.JSONDecodeError as e:
            records.append(_Unreadable(line))
            problems.append(Problem(
                f"invalid JSON at column {e.colno}: {e.msg}. {_JSON_CAUSES}; each line must "
                'hold one complete example, e.g. {"text_input": "...", "output": "..."}',
                f"{name}, line {lineno}", "", len(records)))
        labels.append(f"line {lineno}")
    if problems:
        try:  # a pretty-printed JSON document saved as .jsonl
            return _from_json_value(load_json(text), name, input_key, output_key)
        except json.JSONDecodeError:
            pass
    examples, more = _convert(records, name, labels, input_key, output_key, kind="jsonl")
    return examples, sorted(problems + more, key=lambda p: p.row or 0)


def _column_problem(where: str, kind: str, field: str, found: list[str], columns: list[str],
                    wanted: str | None, accepted: Sequence[str]) -> Problem:
    """No (or several) input/output columns: name the columns found and how to choose one."""
    have = _names_listed(columns)
    how = (f"choose the {kind} column ({kind}Column when uploading, --{kind}-column in the "
           "CLI)")
    if found:
        names = _names_listed(found)
        return Problem(f"several {kind} columns ({names}); rename or remove all but one, or "
                       f"{how}", where, field)
    if wanted is not None:
        return Problem(f"no column named '{_name_shown(wanted)}' (the {kind} column you "
                       f"chose); the columns are: {have}", where, field)
    expected = ", ".join(accepted)
    return Problem(f"no {kind} column; the columns are: {have}; expected one named {expected} "
                   f"(any case). Rename the column, or {how}", where, field)


def _sniff_delimiter(header_line: str) -> str:
    """Excel in many locales writes ``;``-separated "CSV"; some tools write tabs."""
    if "," in header_line:
        return ","
    if ";" in header_line or "\t" in header_line:
        return ";" if header_line.count(";") >= header_line.count("\t") else "\t"
    return ","


def _parse_csv(text: str, name: str, delimiter: str | None, input_col: str | None,
               output_col: str | None) -> tuple[ExampleList, list[Problem]]:
    if delimiter is None:
        delimiter = _sniff_delimiter(text.lstrip("\r\n").split("\n", 1)[0])
    if csv.field_size_limit() < MAX_FILE_BYTES:  # default 128 KiB; one field may be longer
        csv.field_size_limit(MAX_FILE_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    problems: list[Problem] = []
    examples: list[Example] = []
    labels: list[str] = []
    read: list[SourceRecord] = []  # every data row, when both columns are known
    header: list[str] | None = None
    idx: list[int] = []
    number = 0  # example number (1-based) of data rows
    try:
        for row_no, row in enumerate(reader, start=1):
            if header is None:
                if not any(cell.strip() for cell in row):
                    continue
                header = [cell.strip() for cell in row]
                header_row = row_no
                for wanted, accepted, field, kind in (
                        (input_col, INPUT_KEYS, "text_input", "input"),
                        (output_col, OUTPUT_KEYS, "output", "output")):
                    found = find_key(header, wanted, accepted)  # repeats a repeated name
                    if len(found) == 1:
                        idx.append(header.index(found[0]))
                    else:
                        problems.append(_column_problem(f"{name}, row {row_no}", kind, field,
                                                        found, header, wanted, accepted))
                continue
            if not any(row):  # blank line or a row of empty cells (Excel's trailing rows)
                continue
            number += 1
            if len(row) != len(header):
                if len(idx) == 2:
                    cells = [row[j] if j < len(row) else "" for j in idx]
                    read.append(SourceRecord(f"row {row_no}", Example(*cells), readable=False))
                d = "a tab" if delimiter == "\t" else f"'{delimiter}'"
                problems.append(Problem(
                    f"has {len(row)} field{'s' if len(row) != 1 else ''} but the header "
                    f"(row {header_row}) has "
                    f"{len(header)}; put values that contain {d} in double quotes, and double "
                    'any double quote inside a quoted value ("like ""this""")',
                    f"{name}, row {row_no}", "", number))
                continue
            if len(idx) == 2:
                examples.append(Example(row[idx[0]], row[idx[1]]))
                labels.append(f"row {row_no}")
                read.append(SourceRecord(labels[-1], examples[-1]))
    except csv.Error as e:
        problems.append(Problem(f"the CSV cannot be read: {e}; check the quoting there",
                                f"{name}, line {reader.line_num}"))
    if header is None:
        problems.append(Problem("the file has no header row; the first row must name the "
                                "columns, e.g. text_input,output", name))
    return ExampleList(examples, source=name, labels=labels, records=read, kind="csv",
                       header=header), problems
