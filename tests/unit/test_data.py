"""The dataset module: formats × errors, table-driven (style point 8).

Each error case names the exact location, field and a fragment of the message, so a change that
loses the row number or the advice fails here.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tunelab.data import (
    MAX_FILE_BYTES,
    MAX_INPUT_CHARS,
    MAX_OUTPUT_CHARS,
    MIN_EXAMPLES,
    Example,
    from_records,
    read_bytes,
    read_file,
    validate,
)
from tunelab.errors import DatasetError, InvalidArgument, Problem

DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"

# ---------------------------------------------------------------------------------------------
# helpers


def pairs(n: int = 3) -> list[tuple[str, str]]:
    return [(f"what is {i} + {i}?", str(2 * i)) for i in range(1, n + 1)]


def examples(n: int = MIN_EXAMPLES) -> list[Example]:
    return [Example(i, o) for i, o in pairs(n)]


def csv_bytes(rows: list, header: tuple = ("text_input", "output"), delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def records(ps: list[tuple[str, str]], in_key: str = "text_input",
            out_key: str = "output") -> list[dict]:
    return [{in_key: i, out_key: o} for i, o in ps]


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def jsonl_bytes(recs: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def problems_of(fn: Callable[[], object]) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        fn()
    return info.value


Expected = tuple[str, str, str]  # (location, field, fragment of the message)


def assert_problems(found: list[Problem], expected: list[Expected]) -> None:
    """Exactly the expected problems, in order, each at its location and field."""
    assert len(found) == len(expected), "\n".join(map(str, found))
    for p, (location, field, fragment) in zip(found, expected, strict=True):
        assert (p.location, p.field) == (location, field), str(p)
        assert fragment in p.message, str(p)


# ---------------------------------------------------------------------------------------------
# accepted formats

KEY_PAIRS = [("text_input", "output"), ("textInput", "output"), ("input", "output"),
             ("prompt", "completion")]


def _in_format(fmt: str, in_key: str, out_key: str) -> tuple[str, bytes]:
    ps = pairs()
    if fmt == "csv":
        return "d.csv", csv_bytes(ps, header=(in_key, out_key))
    if fmt == "json":
        return "d.json", json_bytes(records(ps, in_key, out_key))
    if fmt == "json-examples":
        return "d.json", json_bytes({"examples": records(ps, in_key, out_key)})
    if fmt == "json-gemini":  # the Gemini API's trainingData.examples shape
        return "d.json", json_bytes({"examples": {"examples": records(ps, in_key, out_key)}})
    if fmt == "json-columns":
        return "d.json", json_bytes({in_key: [i for i, _ in ps], out_key: [o for _, o in ps]})
    assert fmt == "jsonl"
    return "d.jsonl", jsonl_bytes(records(ps, in_key, out_key))


@pytest.mark.parametrize("fmt", ["csv", "json", "json-examples", "json-gemini", "json-columns",
                                 "jsonl"])
@pytest.mark.parametrize(("in_key", "out_key"), KEY_PAIRS)
def test_every_key_pair_in_every_format(fmt: str, in_key: str, out_key: str) -> None:
    name, data = _in_format(fmt, in_key, out_key)
    assert read_bytes(data, name) == examples(3)


@pytest.mark.parametrize(("in_key", "out_key"), KEY_PAIRS)
def test_every_key_pair_inline(in_key: str, out_key: str) -> None:
    assert from_records(records(pairs(), in_key, out_key)) == examples(3)


@pytest.mark.parametrize("header", [("TEXT_INPUT", "Output"), ("Text Input", "OUTPUT"),
                                    (" Prompt ", "Completion"), ("id", "input", "output")])
def test_csv_column_names_are_case_insensitive_and_extra_columns_ignored(header: tuple) -> None:
    rows = [(i, o) if len(header) == 2 else (n, i, o) for n, (i, o) in enumerate(pairs())]
    assert read_bytes(csv_bytes(rows, header=header), "d.csv") == examples(3)


def test_pairs_numbers_and_extra_fields() -> None:
    got = from_records([("a", "b"), ["c", 4], {"input": 1.5, "output": 2, "id": "x"}])
    assert got == [Example("a", "b"), Example("c", "4"), Example("1.5", "2")]
    assert read_bytes(b'["a", "b"]\n[3, "c"]\n', "d.jsonl") == [Example("a", "b"),
                                                               Example("3", "c")]


@pytest.mark.parametrize(("name", "data", "kwargs"), [
    ("d.csv", csv_bytes(pairs(), header=("question", "answer")),
     {"input_column": "question", "output_column": "answer"}),
    ("d.csv", csv_bytes(pairs(), header=("Question", "Answer")),
     {"input_column": "question", "output_column": "ANSWER"}),
    ("d.csv", csv_bytes([(i, o, "x") for i, o in pairs()], header=("q", "a", "output")),
     {"input_column": "q", "output_column": "a"}),  # explicit beats the auto-detected 'output'
    ("d.json", json_bytes(records(pairs(), "q", "a")), {"input_column": "q", "output_column": "a"}),
    ("d.json", json_bytes({"q": ["what is 1 + 1?", "what is 2 + 2?", "what is 3 + 3?"],
                           "a": ["2", "4", "6"]}), {"input_column": "q", "output_column": "a"}),
    ("d.jsonl", jsonl_bytes(records(pairs(), "q", "a")),
     {"input_column": "q", "output_column": "a"}),
])
def test_custom_columns(name: str, data: bytes, kwargs: dict) -> None:
    assert read_bytes(data, name, **kwargs) == examples(3)


@pytest.mark.parametrize(("name", "data"), [
    ("d.csv", b"\xef\xbb\xbf" + csv_bytes(pairs())),
    ("d.json", b"\xef\xbb\xbf" + json_bytes(records(pairs()))),
    ("d.jsonl", b"\xef\xbb\xbf" + jsonl_bytes(records(pairs()))),
    ("d.jsonl", jsonl_bytes(records(pairs())).replace(b"\n", b"\n\n  \n")),  # blank lines
    ("d.jsonl", jsonl_bytes(records(pairs())).replace(b"\n", b"\r\n")),  # Windows newlines
    ("d.csv", csv_bytes(pairs()).replace(b"\n", b"\r\n") + b",\r\n\r\n"),  # Excel's empty rows
    ("d.csv", csv_bytes(pairs(), delimiter=";")),  # European Excel
    ("d.tsv", csv_bytes(pairs(), delimiter="\t")),
    ("d.json", jsonl_bytes(records(pairs()))),  # JSON Lines saved as .json
    ("d.jsonl", json.dumps(records(pairs()), indent=2).encode()),  # a JSON list saved as .jsonl
    ("upload", csv_bytes(pairs())),  # no extension: sniffed
    ("upload.txt", json_bytes(records(pairs()))),
    ("upload.dat", jsonl_bytes(records(pairs()))),
])
def test_encodings_layouts_and_sniffing(name: str, data: bytes) -> None:
    assert read_bytes(data, name) == examples(3)


def test_csv_keeps_quoted_commas_quotes_and_newlines() -> None:
    rows = [("a, b", 'say "hi"'), ("line 1\nline 2", "  spaced  "), ("ünïcødé ✓", "日本語")]
    assert read_bytes(csv_bytes(rows), "d.csv") == [Example(*r) for r in rows]


def test_parsed_list_remembers_rows_and_pickles() -> None:
    data = csv_bytes(pairs(2)).replace(b"\n", b"\n\n", 1)  # a blank row after the header
    got = read_bytes(data, "d.csv")
    assert got.labels == ["row 3", "row 4"] and got.source == "d.csv"  # type: ignore[attr-defined]
    again = pickle.loads(pickle.dumps(got))
    assert again == got and again.labels == got.labels
    assert isinstance(got, list) and got[:1] == examples(1)


# ---------------------------------------------------------------------------------------------
# parse errors: formats × errors

BIG = b"x" * (MAX_FILE_BYTES + 1)
HEADER_MISSING = ("question", "answer")

PARSE_ERRORS: list[tuple[str, str, bytes, dict, list[Expected]]] = [
    ("csv-missing-columns", "d.csv", csv_bytes(pairs(), header=HEADER_MISSING), {}, [
        ("d.csv, row 1", "text_input", "the columns are: 'question', 'answer'; expected one "
         "named text_input, textInput, input, prompt"),
        ("d.csv, row 1", "output", "choose the output column (outputColumn when uploading, "
         "--output-column in the CLI)"),
    ]),
    ("csv-chosen-column-missing", "d.csv", csv_bytes(pairs()), {"input_column": "question"}, [
        ("d.csv, row 1", "text_input", "no column named 'question' (the input column you "
         "chose); the columns are: 'text_input', 'output'"),
    ]),
    ("csv-several-input-columns", "d.csv",
     csv_bytes([(i, i, o) for i, o in pairs()], header=("input", "prompt", "output")), {}, [
         ("d.csv, row 1", "text_input", "several input columns ('input', 'prompt')"),
     ]),
    ("csv-repeated-column", "d.csv",
     csv_bytes([(i, o, o) for i, o in pairs()], header=("input", "output", "output")), {}, [
         ("d.csv, row 1", "output", "several output columns ('output', 'output')"),
     ]),
    ("csv-wrong-field-count", "d.csv", b"input,output\na,b\nc,d,e\nf,g\nh\n", {}, [
        ("d.csv, row 3", "", "has 3 fields but the header (row 1) has 2; put values that "
         "contain ',' in double quotes"),
        ("d.csv, row 5", "", "has 1 field but"),
    ]),
    ("csv-row-number-counts-quoted-newlines-as-one-row", "d.csv",
     b'input,output\n"a\nb",c\nd,e,f\n', {}, [("d.csv, row 3", "", "has 3 fields")]),
    ("json-invalid", "d.json", b'[\n  {"input": "a", "output": "b"},\n]\n', {}, [
        ("d.json, line 3, column 1", "", "invalid JSON: Expecting value. Fix the syntax there "
         "(common causes: a trailing comma"),
    ]),
    ("json-not-a-list", "d.json", b'"hello"', {}, [
        ("d.json", "", "the file holds a string; expected a list of examples"),
    ]),
    ("json-single-object", "d.json", b'{"input": "a", "output": "b"}', {}, [
        ("d.json", "", "the file holds a single object; put the examples in a list"),
    ]),
    ("json-columns-lengths", "d.json", b'{"input": ["a", "b"], "output": ["c"]}', {}, [
        ("d.json", "", "different lengths: 2 input(s) and 1 output(s)"),
    ]),
    ("json-columns-missing", "d.json", b'{"question": ["a"], "output": ["c"]}', {}, [
        ("d.json", "text_input", "no input column; the columns are: 'question', 'output'"),
    ]),
    ("json-record-errors", "d.json", json_bytes([
        {"input": "a", "output": "b"},
        {"input": "a"},
        {"output": "b", "id": 3},
        {"input": "a", "prompt": "b", "completion": "c"},
        {"input": None, "output": True},
        {"input": "a", "output": {"label": 1}},
        ["a", "b", "c"],
        "just text",
    ]), {}, [
        ("d.json, example 2", "output", "no output field; expected one of output, completion "
         "(the fields found: input)"),
        ("d.json, example 3", "text_input", "no input field; expected one of text_input, "
         "textInput, input, prompt (the fields found: output, id)"),
        ("d.json, example 4", "text_input", "several input fields ('input', 'prompt'); keep "
         "only one"),
        ("d.json, example 5", "text_input", "the input is null; give a string"),
        ("d.json, example 5", "output", "the output is the boolean true; give a string"),
        ("d.json, example 6", "output", "the output is an object; serialize it to a string"),
        ("d.json, example 7", "", "is a list of 3 items; expected an object like"),
        ("d.json, example 8", "", "is a string; expected an object like"),
    ]),
    ("jsonl-invalid-lines-and-bad-records", "d.jsonl",
     b'{"input": "a", "output": "b"}\n\n{"input": "a", "output": "b",}\n{"input": "c"}\n'
     b"{'input': 'd'}\n", {}, [
         ("d.jsonl, line 3", "", "invalid JSON at column 30: Expecting property name"),
         ("d.jsonl, line 4", "output", "no output field"),
         ("d.jsonl, line 5", "", "each line must hold one complete example"),
     ]),
    ("non-utf8", "d.csv", b"input,output\nna\xefve,b\nok,ok\nx,caf\xe9\n", {}, [
        ("d.csv, line 2", "", "byte 0xEF at byte offset 15 (byte 3 of the line) is not valid "
         "UTF-8. Re-save the file as UTF-8"),
        ("d.csv, line 4", "", "byte 0xE9 at byte offset 32 (byte 6 of the line)"),
    ]),
    ("non-utf8-many-lines", "d.jsonl", b"\xff\n" * 12, {},
     [(f"d.jsonl, line {n}", "", "byte 0xFF at byte offset") for n in range(1, 11)]
     + [("d.jsonl", "", "and 2 more lines with bytes that are not valid UTF-8")]),
    ("utf16", "d.csv", "input,output\n".encode("utf-16"), {}, [
        ("d.csv", "", "the file is UTF-16 encoded; re-save it as UTF-8"),
    ]),
    # a workbook, a PDF, a compressed or binary file: said so, not read as text (its bytes
    # used to be shown as a column's name)
    ("xlsx", "d.xlsx", b"PK\x03\x04" + b"\x00" * 300, {}, [
        ("d.xlsx", "", "the file is a ZIP archive: an Excel workbook (.xlsx) or another Office "
         "document, not text. Save or export the examples as CSV UTF-8 (in Excel: Save As → "
         "'CSV UTF-8'), JSON or JSONL"),
    ]),
    ("xls", "d.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, {}, [
        ("d.csv", "", "the file is an old Excel workbook (.xls) or another Office document"),
    ]),
    ("pdf", "d.json", b"%PDF-1.7\n...", {}, [("d.json", "", "the file is a PDF document")]),
    ("gzip", "d.jsonl", b"\x1f\x8b\x08\x00" + b"\x00" * 20, {}, [
        ("d.jsonl", "", "the file is compressed with gzip, not text"),
    ]),
    ("nul-bytes", "d.csv", b"input,output\na,b\x00c\n", {}, [
        ("d.csv", "", "the file holds binary data (a NUL byte at byte offset 16), not text"),
    ]),
    ("empty", "d.csv", b" \n\n", {}, [("d.csv", "", "the file is empty")]),
    ("nested-too-deeply", "d.json", b"[" * 100_000, {}, [("d.json", "", "nested too deeply")]),
    ("too-big", "d.jsonl", BIG, {}, [
        ("d.jsonl", "", "the file is 4.0 MB (4,194,305 bytes); the limit is 4 MB "
         "(4,194,304 bytes). Remove examples"),
    ]),
]


@pytest.mark.parametrize(("name", "data", "kwargs", "expected"),
                         [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS])
def test_parse_errors(name: str, data: bytes, kwargs: dict, expected: list[Expected]) -> None:
    err = problems_of(lambda: read_bytes(data, name, **kwargs))
    assert isinstance(err, InvalidArgument) and err.status == "INVALID_ARGUMENT"
    assert_problems(err.problems, expected)
    assert err.message.startswith(f"The training data has {len(expected)} problem")


def test_problem_rows_are_example_numbers() -> None:
    err = problems_of(lambda: read_bytes(b"input,output\na,b\nc,d,e\n", "d.csv"))
    assert err.problems[0].row == 2  # file row 3 = example 2
    err = problems_of(lambda: read_bytes(b'{"input":"a","output":"b"}\n\n{"input":"c"}\n',
                                         "d.jsonl"))
    assert err.problems[0].row == 2  # line 3 = example 2 (blank lines are not examples)


INLINE_ERRORS: list[tuple[str, object, list[Expected]]] = [
    ("missing-output", [{"text_input": "a", "output": "b"}] * 6 + [{"text_input": "a"}], [
        ("training data, example 7", "output", "no output field; expected one of output, "
         "completion"),
    ]),
    ("every-bad-record-at-once", [{"input": "a"}, {"output": "b"}, ("a",)], [
        ("training data, example 1", "output", "no output field"),
        ("training data, example 2", "text_input", "no input field"),
        ("training data, example 3", "", "is a list of 1 item"),
    ]),
    ("not-a-list", {"text_input": "a", "output": "b"}, [
        ("training data", "", "expected a list of examples, got an object"),
    ]),
]


@pytest.mark.parametrize(("recs", "expected"), [c[1:] for c in INLINE_ERRORS],
                         ids=[c[0] for c in INLINE_ERRORS])
def test_inline_errors(recs: list, expected: list[Expected]) -> None:
    assert_problems(problems_of(lambda: from_records(recs)).problems, expected)


def test_inline_location_is_configurable() -> None:
    err = problems_of(lambda: from_records([{"input": "a"}], location="trainingData"))
    assert str(err.problems[0]).startswith("trainingData, example 1, field 'output': ")


# ---------------------------------------------------------------------------------------------
# read_file


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(csv_bytes(pairs(), header=("q", "a")))
    assert read_file(path, input_column="q", output_column="a") == examples(3)
    err = problems_of(lambda: read_file(str(path)))
    assert err.problems[0].location == "data.csv, row 1"  # located by the file's name


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda p: p / "nope.csv", "file not found; check the path"),
    (lambda p: p, "is a folder, not a file"),
    (lambda p: _sparse(p / "big.jsonl", MAX_FILE_BYTES + 10), "the limit is 4 MB"),
])
def test_read_file_errors(tmp_path: Path, make: Callable[[Path], Path], fragment: str) -> None:
    err = problems_of(lambda: read_file(make(tmp_path)))
    assert len(err.problems) == 1 and fragment in err.problems[0].message


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ---------------------------------------------------------------------------------------------
# validate: errors


def with_(n: int = MIN_EXAMPLES, **changes: Example) -> list[Example]:
    """``n`` good examples with some replaced: ``with_(ex3=Example(...))`` (1-based)."""
    exs = examples(n)
    for key, ex in changes.items():
        exs[int(key[2:]) - 1] = ex
    return exs


def n_tokens(ex: Example) -> int:
    return len(ex.text_input) + len(ex.output)


VALIDATE_ERRORS: list[tuple[str, list[Example], dict, list[tuple[str, str, int | None, str]]]] = [
    ("fewer-than-20", examples(3), {}, [
        ("training data", "", None, "only 3 examples were given; at least 20 are needed, and "
         "100-500 are recommended"),
    ]),
    ("none", [], {}, [("training data", "", None, "no examples were given")]),
    ("custom-minimum", examples(3), {"min_examples": 5, "location": "upload"}, [
        ("upload", "", None, "at least 5 are needed"),
    ]),
    ("empty-input", with_(ex4=Example("", "x")), {}, [
        ("training data, example 4", "text_input", 4, "the input is empty; write the text the "
         "model receives, or remove the example"),
    ]),
    ("whitespace-output", with_(ex20=Example("q", " \n\t")), {}, [
        ("training data, example 20", "output", 20, "the output is only whitespace; write the "
         "answer"),
    ]),
    ("input-too-long", with_(ex2=Example("x" * (MAX_INPUT_CHARS + 1), "y")), {}, [
        ("training data, example 2", "text_input", 2, "the input is 40,001 characters; the "
         "limit is 40,000. Shorten it"),
    ]),
    ("output-too-long", with_(ex5=Example("q", "y" * (MAX_OUTPUT_CHARS + 1))), {}, [
        ("training data, example 5", "output", 5, "the output is 5,001 characters; the limit "
         "is 5,000"),
    ]),
    ("over-context", with_(ex9=Example("q" * 30, "a" * 20)),
     {"count_tokens": n_tokens, "context_length": 40}, [
         ("training data, example 9", "", 9, "the example is 50 tokens (input and output "
          "together); the base model's context length is 40. Shorten"),
     ]),
    ("all-at-once", with_(5, ex1=Example("", ""), ex2=Example("q" * 50, "a")),
     {"count_tokens": n_tokens, "context_length": 40}, [
         ("training data", "", None, "only 5 examples"),
         ("training data, example 1", "text_input", 1, "the input is empty"),
         ("training data, example 1", "output", 1, "the output is empty"),
         ("training data, example 2", "", 2, "the example is 51 tokens"),
     ]),
]


@pytest.mark.parametrize(("exs", "kwargs", "expected"), [c[1:] for c in VALIDATE_ERRORS],
                         ids=[c[0] for c in VALIDATE_ERRORS])
def test_validate_errors(exs: list[Example], kwargs: dict,
                         expected: list[tuple[str, str, int | None, str]]) -> None:
    err = problems_of(lambda: validate(exs, **kwargs))
    assert_problems(err.problems, [(loc, field, frag) for loc, field, _, frag in expected])
    assert [p.row for p in err.problems] == [row for _, _, row, _ in expected]


def test_validate_passes_and_ignores_tokens_without_a_context_length() -> None:
    assert validate(examples()) == []
    assert validate(examples(), count_tokens=n_tokens) == []
    assert validate(examples(), count_tokens=n_tokens, context_length=100) == []


def test_validate_names_file_rows_and_keeps_warnings_on_error() -> None:
    rows = pairs(MIN_EXAMPLES)
    rows[3] = (rows[3][0], "")
    rows[7] = rows[6]
    parsed = read_bytes(csv_bytes(rows), "d.csv")
    err = problems_of(lambda: validate(parsed))
    assert [str(p) for p in err.problems] == [
        "d.csv, row 5, field 'output': the output is empty; write the answer the model should "
        "give, or remove the example"]
    assert [p.location for p in err.warnings] == ["d.csv, row 9"]  # the duplicate of row 8
    assert "rows 8 and 9 are identical" in err.warnings[0].message
    jsonl = read_bytes(jsonl_bytes(records(rows)).replace(b"\n", b"\n\n", 1), "d.jsonl")
    assert problems_of(lambda: validate(jsonl)).problems[0].location == "d.jsonl, line 5"


# ---------------------------------------------------------------------------------------------
# validate: warnings


def qa(inputs: list[str], outputs: list[str] | None = None) -> list[Example]:
    outputs = outputs or [f"answer {i}" for i in range(len(inputs))]
    return [Example(i, o) for i, o in zip(inputs, outputs, strict=True)]


QS = [f"what is {i} squared?" for i in range(1, 21)]
_QS_LABELLED = [f"question: {q}" for q in QS]

VALIDATE_WARNINGS: list[tuple[str, list[Example], list[Expected]]] = [
    ("duplicates", with_(ex7=Example("what is 3 + 3?", "6"), ex12=Example("what is 3 + 3?", "6")),
     [("training data, example 7", "", "examples 3, 7 and 12 are identical (the same input and "
       "output); a repeated example counts more in training. Remove the copies")]),
    ("same-input-different-outputs", with_(ex9=Example("what is 2 + 2?", "four")), [
        ("training data, example 2", "text_input", "examples 2 and 9 have the same input but "
         "different outputs; the model cannot learn which one to give"),
    ]),
    ("some-inputs-without-label", qa(_QS_LABELLED[:17] + QS[17:]), [
        ("training data", "text_input", "the inputs start in different ways: 17 with the label "
         "'question:', 3 with no label (examples 18, 19 and 20). The model learns the format "
         "of the examples, so prompts in production must match the training format"),
    ]),
    ("mixed-input-labels", qa(_QS_LABELLED[:18] + [f"Q: {q}" for q in QS[18:]]), [
        ("training data", "text_input", "18 with the label 'question:', 2 with the label 'Q:' "
         "(examples 19 and 20)"),
    ]),
    ("multi-word-and-markdown-labels",
     qa([f"### Input: {q}" for q in QS[:19]] + [f"Translate to French: {QS[19]}"]), [
         ("training data", "text_input", "19 with the label 'Input:', 1 with the label "
          "'Translate to French:' (example 20)"),
     ]),
    ("outputs-labelled-or-not", qa(QS, [f"Answer: {i}" for i in range(18)] + ["18", "19"]), [
        ("training data", "output", "the outputs start in different ways: 18 with the label "
         "'Answer:', 2 with no label (examples 19 and 20). The model learns the format of the "
         "examples and will answer in a mix of these formats"),
    ]),
    ("outputs-json-or-not", qa(QS, [f'{{"answer": {i}}}' for i in range(19)] + ["19"]), [
        ("training data", "output", "the outputs are written in different forms: 19 as a JSON "
         "object in braces, 1 as plain text (example 20)"),
    ]),
    ("outputs-code-block-or-not", qa(QS, ["```\nx\n```"] * 2 + [f"y{i}" for i in range(18)]), [
        ("training data", "output", "18 as plain text, 2 as a ``` code block (examples 1 and "
         "2)"),
    ]),
    ("several-at-once",
     qa(_QS_LABELLED[:19] + [_QS_LABELLED[0]], ["[1]"] * 18 + ["1", "[1]"]), [
         ("training data, example 20", "", "examples 1 and 20 are identical"),
         ("training data", "output", "19 as a JSON array in brackets, 1 as plain text "
          "(example 19)"),
     ]),
]


@pytest.mark.parametrize(("exs", "expected"), [c[1:] for c in VALIDATE_WARNINGS],
                         ids=[c[0] for c in VALIDATE_WARNINGS])
def test_validate_warnings(exs: list[Example], expected: list[Expected]) -> None:
    assert_problems(validate(exs), expected)


@pytest.mark.parametrize("inputs", [
    QS,  # no labels
    _QS_LABELLED,  # one label everywhere
    [f"Translate to French: {q}" for q in QS],
    [f"{c}: describe it" for c in "Paris Rome Oslo Bern Kyiv Riga Baku Doha Lima Quito Sofia "
     "Minsk Dakar Accra Suva Male Apia Lome Rabat Tunis".split()],  # content, not labels
    [f"see https://example.com/{i} at 10:{i:02d}" for i in range(20)],  # URLs, times
    # free phrasings, a few of which open with "<city> order:" (a city twice or three times)
    [f"Please ship {i} mugs to {c}." for i, c in enumerate("Lima Pune Riga Bern Cork Oslo "
                                                         "Accra Quito Porto Osaka".split())]
    + [f"{c} order: {i} red mugs" for i, c in enumerate("Oslo Oslo Oslo Cork Cork Bern Lima "
                                                       "Pune Riga Quito".split())],
])
def test_consistent_formats_give_no_warning(inputs: list[str]) -> None:
    assert validate(qa(inputs)) == []


def test_many_rows_are_summarised() -> None:
    exs = qa(_QS_LABELLED[:5] + QS[5:])
    (w,) = validate(exs)
    assert "15 with no label, 5 with the label 'question:' (examples 1, 2, 3, 4 and 5)" in (
        w.message)
    exs = qa([f"q{i}" for i in range(25)] * 2)  # 25 inputs with two different outputs each
    warnings = validate(exs)
    assert len(warnings) == 21 and "examples 20 and 45 have the same input" in warnings[19].message
    assert warnings[20].message == "and 5 more groups of same inputs with different outputs"
    bad = [Example("q", f"a{i}") for i in range(25)]
    assert "examples 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 15 more" in validate(bad)[0].message


# ---------------------------------------------------------------------------------------------
# docs/datasets.md: every example in it runs (style point 9)


def _doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOCS.read_text(), flags=re.S)


@pytest.mark.parametrize("lang", ["csv", "json", "jsonl"])
def test_doc_format_examples_parse(lang: str) -> None:
    blocks = _doc_blocks(lang)
    assert blocks
    for block in blocks:
        got = read_bytes(block.encode(), f"examples.{lang}")
        assert len(got) >= 2 and all(ex.text_input and ex.output for ex in got)


def test_doc_python_example_runs() -> None:
    (block,) = _doc_blocks("python")
    exec(compile(block, str(DOCS), "exec"), {})


# ---------------------------------------------------------------------------------------------
# chat-format records (OpenAI "messages", Gemini / Vertex AI "contents")


def _openai(i: int, system: str | None = "You add numbers.") -> dict:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": [*msgs, {"role": "user", "content": f"{i}+{i}"},
                         {"role": "assistant", "content": str(2 * i)}]}


def _gemini(i: int) -> dict:
    return {"systemInstruction": {"role": "system", "parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": f"{i}+{i}"}]},
                         {"role": "model", "parts": [{"text": "="}, {"text": str(2 * i)}]}]}


@pytest.mark.parametrize(("make", "system", "output_of_3"), [
    (_openai, "You add numbers.", "6"),
    (lambda i: _openai(i, None), None, "6"),
    (_gemini, "Be brief.", "=6"),
])
def test_chat_records_in_jsonl_json_and_inline(make, system, output_of_3) -> None:
    recs = [make(i) for i in range(1, 21)]
    jsonl = "\n".join(json.dumps(r) for r in recs).encode()
    for exs in (read_bytes(jsonl, "chat.jsonl"), read_bytes(json.dumps(recs).encode(), "c.json"),
                from_records(recs)):
        assert len(exs) == 20
        assert exs[2] == Example("3+3", output_of_3, system)
    assert validate(read_bytes(jsonl, "chat.jsonl")) == []


def test_openai_content_parts_and_developer_role() -> None:
    rec = {"messages": [{"role": "developer", "content": "Rules."},
                        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                        {"role": "assistant", "content": "hello"}]}
    assert from_records([rec]) == [Example("hi", "hello", "Rules.")]


@pytest.mark.parametrize(("rec", "fragment"), [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
     "the conversation is user → assistant → user → assistant; tunelab tunes single-turn"),
    ({"messages": [{"role": "user", "content": "a"}]}, "the conversation is user;"),
    ({"messages": []}, "there are no messages;"),
    ({"messages": "hi"}, "'messages' is a string; expected a list of messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                   {"role": "assistant", "content": "b"}]},
     "message 1 has no text; each message needs a role and text content"),
    ({"contents": [{"role": "user", "parts": [{"text": "a"}]},
                   {"role": "model", "parts": [{"text": "b"}]}], "systemInstruction": 3},
     "the systemInstruction has no text parts"),
])
def test_chat_record_errors_are_located(rec: dict, fragment: str) -> None:
    data = "\n".join(json.dumps(r) for r in [_openai(1), rec]).encode()
    with pytest.raises(DatasetError) as e:
        read_bytes(data, "chat.jsonl")
    [p] = e.value.problems
    assert p.location == "chat.jsonl, line 2" and fragment in p.message, p.message


def test_some_examples_without_the_system_prompt_is_a_warning() -> None:
    recs = [_openai(i, None if i in (4, 9) else "You add numbers.") for i in range(1, 21)]
    data = "\n".join(json.dumps(r) for r in recs).encode()
    [w] = validate(read_bytes(data, "chat.jsonl"))
    assert w.location == "chat.jsonl" and w.field == "system"
    assert w.message.startswith("lines 4 and 9 have no system prompt while the other examples")


# ---------------------------------------------------------------------------------------------
# format and content problems of every row in one pass


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("d.csv", b"input,output\n" + b"".join(f"w{i},W{i}\n".encode() for i in range(1, 4))
     + b"a,b,c\nw5,W5\nw6,\n", [
         ("d.csv, row 5", "", "has 3 fields but the header (row 1) has 2"),
         ("d.csv, row 7", "output", "the output is empty"),  # example 6, after the bad row
     ]),
    ("d.jsonl", b'{"input": "a", "output": "b"}\n{"input": "c",}\n{"input": " ", "output": "d"}\n'
     b'{"input": "e"}\n{"input": "f", "output": ""}\n', [
         ("d.jsonl, line 2", "", "invalid JSON"),
         ("d.jsonl, line 3", "text_input", "the input is only whitespace"),
         ("d.jsonl, line 4", "output", "no output field"),
         ("d.jsonl, line 5", "output", "the output is empty"),
     ]),
    ("d.json", json_bytes([{"input": "a", "output": ""}, {"input": "b"},
                           {"input": "c", "output": "x" * 5001}]), [
         ("d.json, example 1", "output", "the output is empty"),
         ("d.json, example 2", "output", "no output field"),
         ("d.json, example 3", "output", "the output is 5,001 characters; the limit is 5,000"),
     ]),
])
def test_format_and_content_problems_of_every_row_in_one_pass(
        name: str, data: bytes, expected: list[Expected]) -> None:
    err = problems_of(lambda: read_bytes(data, name))
    assert_problems(err.problems, expected)
    # Problem.row stays the example number of the file, counting the unreadable rows too
    assert [p.row for p in err.problems] == [int(e[0].rsplit(" ", 1)[1]) - (name == "d.csv")
                                             for e in expected]


def test_column_and_field_names_are_shown_printable_and_short() -> None:
    """A header of control characters or a huge name is shown escaped and cut, never raw."""
    header = "\x1b[31mred\x07," + "x" * 500 + "," + ",".join(f"c{i}" for i in range(30))
    err = problems_of(lambda: read_bytes((header + "\n" + "a," * 31 + "b\n").encode(), "d.csv"))
    shown = " ".join(p.message for p in err.problems)
    assert "\x1b" not in shown and "\x07" not in shown
    assert "'\\x1b[31mred\\x07'" in shown
    assert "'" + "x" * 40 + "…'" in shown and "x" * 41 not in shown
    assert "and 12 more" in shown  # 32 columns, 20 named
    record = {"\x00in": "a", "out": "b"}
    err = problems_of(lambda: read_bytes(
        ("\n".join([json.dumps(record)] * 3) + "\n").encode(), "d.jsonl"))
    shown = " ".join(p.message for p in err.problems)
    assert "\\x00in" in shown and "\x00" not in shown
