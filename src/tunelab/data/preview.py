"""A dataset as the server reads it, problems and all, for a client to show before it uploads
(the Studio's table: ``POST /studio/datasets:preview``).

It is the upload's own path (``parse.parse_bytes`` then ``validate.validate``), not a second
parser: the rows, their numbering and every finding are what ``POST /v1beta/files`` and a
create request would report for the same bytes. What an upload answers with a 400, a preview
returns beside the rows: every record (the unreadable ones too, as far as they could be read),
so that each problem can be shown on its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.data.parse import (
    INPUT_KEYS,
    OUTPUT_KEYS,
    SourceRecord,
    content_findings,
    find_key,
    parse_bytes,
)
from tunelab.data.prompt_format import PromptFormat, detect_task, profile_of
from tunelab.data.validate import validate
from tunelab.errors import DatasetError, Problem


@dataclass
class Preview:
    """``records[n - 1]`` is example number n of every ``Problem.row`` and ``Problem.rows``."""

    kind: str  # "csv", "json", "jsonl"; "" when the file could not be read at all
    records: list[SourceRecord]
    example_count: int  # the examples that parsed (what would be tuned on, once none is bad)
    problems: list[Problem]
    warnings: list[Problem]
    header: list[str] | None = None  # a CSV's columns
    columns: tuple[str | None, str | None] = (None, None)  # the input and output columns used
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    task: str | None = None  # the task type the outputs suggest (data/prompt_format.py)


def preview(data: bytes, filename: str, input_column: str | None = None,
            output_column: str | None = None) -> Preview:
    """Parse and check ``data`` as an upload named ``filename`` is parsed and checked; never
    raises for what the data holds."""
    examples, problems = parse_bytes(data, filename, input_column=input_column,
                                     output_column=output_column)
    if problems:  # as read_bytes reports them: the content problems of the readable rows too
        found, warnings = content_findings(examples, problems)
        problems = sorted(problems + found, key=lambda p: p.row or 0)
    else:
        try:
            warnings = validate(examples, location=filename or "upload")
        except DatasetError as e:
            problems, warnings = e.problems, e.warnings
    inputs = [ex.text_input for ex in examples]
    return Preview(
        kind=examples.kind,
        records=examples.records,
        example_count=len(examples),
        problems=problems,
        warnings=warnings,
        header=examples.header,
        columns=_columns(examples.header, input_column, output_column),
        prompt_format=profile_of(inputs),
        task=detect_task(inputs, [ex.output for ex in examples]),
    )


def _columns(header: list[str] | None, input_column: str | None, output_column: str | None,
             ) -> tuple[str | None, str | None]:
    """The header's input and output columns as the parser chose them (given, or found by
    name); None for one it could not choose."""
    if header is None:
        return None, None
    chosen = []
    for wanted, accepted in ((input_column, INPUT_KEYS), (output_column, OUTPUT_KEYS)):
        found = find_key(header, wanted, accepted)
        chosen.append(found[0] if len(found) == 1 else None)
    return chosen[0], chosen[1]
