"""``POST /studio/datasets:preview``: the Studio's table, read by the server.

The Studio shows a dataset (a file picked or dropped, text pasted, the table after an edit)
as the server reads it, so that there is one parser (``data/parse.py``) and the rows, their
numbers and every problem on them are exactly what an upload (``POST /v1beta/files``) and a
create request report for the same bytes. Nothing is stored: the Studio uploads the data
when the model is created.

The request is an upload's (``multipart/form-data``: ``file``, optional ``inputColumn`` /
``outputColumn``) under the upload's limits (``api/bounds.py``: 413 over ``UPLOAD_LIMIT``
unread, 400 over 4 MB); credentials are checked before the body is read, with the rule
``preview_dataset`` of ``auth/rules.py``. What the data holds is never an error: the answer
lists every record (bad ones too, as far as they could be read), the problems as
``google.rpc.BadRequest`` field violations (``examples[17].output`` is ``rows[17]``), the
warnings with a ``code`` and the rows they concern, and the prompt format and task type the
create path computes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from tunelab.api.bounds import read_upload
from tunelab.api.deps import Principal, current_principal
from tunelab.api.errors import violation_field
from tunelab.api.gemini.convert import warning_out
from tunelab.api.gemini.schemas import DatasetWarning, _Out
from tunelab.api.lenient import LenientJSONRoute
from tunelab.data.preview import Preview, preview

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]


class PreviewRow(_Out):
    text_input: str = Field(description="The input, as the server reads it.")
    output: str = Field(description="The expected output, as the server reads it.")
    system_instruction: str | None = Field(
        None, description="The system prompt of a chat-format record; absent when none.")
    source: str = Field(description="Where the row is in the data: 'row 7' (CSV: the "
                        "spreadsheet row, the header is row 1), 'line 3' (JSONL), 'example 4' "
                        "(JSON).")
    readable: bool = Field(description="Whether the row made an example. One that did not "
                           "shows what could be read of it; its problem is a field violation.")


class FieldViolation(_Out):
    field: str = Field(description="'examples[17].output': rows[17]'s output; 'examples[17]' "
                       "the whole row; 'inputColumn' / 'outputColumn': a column to choose; "
                       "else the file.")
    description: str


class PromptFormatOut(_Out):
    preamble: str | None = Field(None, description="The opening every input starts with.")
    labels: list[str] = Field(description="The field labels (nearly) every input carries, in "
                              "order.")


class DatasetPreview(_Out):
    format: str | None = Field(None, description="csv, json or jsonl; absent when the file "
                               "could not be read at all.")
    example_count: int = Field(description="The rows that made an example.")
    rows: list[PreviewRow] = Field(description="Every record that holds data, in order.")
    columns: list[str] | None = Field(None, description="A CSV's columns (its header).")
    input_column: str | None = Field(None, description="The CSV column read as the input.")
    output_column: str | None = Field(None, description="The CSV column read as the output.")
    field_violations: list[FieldViolation] = Field(
        description="Every problem, as google.rpc.BadRequest field violations: the data can be "
        "tuned on when there is none.")
    warnings: list[DatasetWarning] = Field(description="Advice; the data can still be tuned.")
    prompt_format: PromptFormatOut = Field(description="The format the inputs share, which "
                                           "the tuned model's answers check prompts against.")
    task_type: str | None = Field(None, description="classification, summarisation or search, "
                                  "when the outputs suggest one (the size advice follows it).")


def _out(found: Preview) -> DatasetPreview:
    n = len(found.records)
    return DatasetPreview(
        format=found.kind or None,
        example_count=found.example_count,
        rows=[PreviewRow(text_input=r.example.text_input, output=r.example.output,
                         system_instruction=r.example.system, source=r.label,
                         readable=r.readable) for r in found.records],
        columns=found.header,
        input_column=found.columns[0],
        output_column=found.columns[1],
        field_violations=[FieldViolation(field=violation_field(p), description=p.message)
                          for p in found.problems],
        warnings=[warning_out(p, n) for p in found.warnings],
        prompt_format=PromptFormatOut(preamble=found.prompt_format.preamble,
                                      labels=list(found.prompt_format.labels)),
        task_type=found.task,
    )


@router.post("/studio/datasets:preview", response_model=DatasetPreview, tags=["studio"],
             name="preview_dataset", response_model_exclude_none=True)
async def preview_dataset(
    principal: Auth,  # checked before the body is read (auth/rules.py); nothing is stored
    file: Annotated[UploadFile, File(description="CSV, JSON or JSONL, at most 4 MB.")],
    input_column: Annotated[str | None, Form(alias="inputColumn")] = None,
    output_column: Annotated[str | None, Form(alias="outputColumn")] = None,
) -> DatasetPreview:
    """tunelab extension (the Studio's table): parse and check a dataset as an upload would,
    storing nothing; every row, its problems and the warnings come back."""
    data = await read_upload(file)
    found = await run_in_threadpool(preview, data, file.filename or "", input_column,
                                    output_column)
    return _out(found)
