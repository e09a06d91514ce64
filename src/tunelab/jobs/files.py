"""The data files of the tuning side: uploads (parsed and checked when they arrive, kept as
JSONL beside the original bytes, counted against the owner's ``max_files``), the examples a
create request names (inline, an upload or an object in a bucket), and the JSONL format the
examples of uploads and of queued jobs are kept in (``write_examples``/``read_examples``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tunelab.config import Settings
from tunelab.data import MIN_EXAMPLES, Example
from tunelab.errors import DatasetError, NotFound, Problem
from tunelab.fsutil import atomic_write
from tunelab.ids import random_id
from tunelab.store import FileRow, Store


def write_examples(path: Path, examples: list[Example]) -> bytes:
    """Keep ``examples`` as JSONL at ``path`` (atomically: a worker never reads half a file);
    the bytes written (their size and hash are recorded with the dataset)."""

    def record(e: Example) -> dict:
        out = {"text_input": e.text_input, "output": e.output}
        return out if e.system is None else {**out, "system": e.system}

    data = "".join(json.dumps(record(e), ensure_ascii=False) + "\n" for e in examples).encode()
    atomic_write(path, data)
    return data


def read_examples(path: Path) -> list[Example]:
    """The examples ``write_examples`` kept (trusted: the server wrote them)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                out.append(Example(d["text_input"], d["output"], d.get("system")))
    return out


class DataFiles:
    """Uploads and the examples of a request; ``TuningService`` is one (it has ``settings``
    and ``store``)."""

    settings: Settings
    store: Store

    def load_examples(self, inline: list[Example] | None, file: str | None,
                      owner: str) -> list[Example]:
        """Inline examples, those of the caller's uploaded file ('files/ID'), or those of an
        object in a bucket (gs://, s3://) read through the configured artifact store."""
        from tunelab.data.uris import ArtifactStore, bucket_scheme

        if file is not None and bucket_scheme(file):
            return ArtifactStore(self.settings.artifact_store).examples(file)
        if file is not None:
            frow = self.get_upload(file.removeprefix("files/"), owner)
            return read_examples(self.settings.artifacts_dir / frow.path)
        return inline or []

    def get_upload(self, file_id: str, owner: str | None) -> FileRow:
        """The caller's upload, or NOT_FOUND saying how to upload one."""
        try:
            return self.store.get_file(file_id, owner)
        except NotFound:
            raise NotFound(f"File 'files/{file_id}' was not found; upload it with POST "
                           "/v1beta/files.") from None

    def store_upload(
        self,
        owner: str,
        data: bytes,
        filename: str,
        mime_type: str,
        display_name: str | None,
        input_column: str | None,
        output_column: str | None,
        min_examples: int = MIN_EXAMPLES,
    ) -> FileRow:
        """Parse an uploaded CSV/JSON/JSONL file (every problem reported at once) and keep
        its examples; the original bytes are kept beside them. A protocol whose uploads may
        be validation data asks for fewer than the training minimum (``min_examples``); a
        training set's minimum is checked again when a job is created on it."""
        from tunelab.data.parse import read_bytes

        if not data:
            raise DatasetError([Problem("the file is empty", filename or "upload")])
        from tunelab.data.validate import validate

        examples = read_bytes(
            data, filename or "upload", input_column=input_column, output_column=output_column
        )
        # Everything that does not depend on the base model is checked now (the token
        # lengths are checked when a tuning job names its base model).
        warnings = validate(examples, location=filename or "upload", min_examples=min_examples)
        file_id = random_id(12)
        folder = Path("files") / file_id
        ext = Path(filename or "").suffix or ".dat"
        atomic_write(self.settings.artifacts_dir / folder / f"original{ext}", data)
        write_examples(self.settings.artifacts_dir / folder / "examples.jsonl", examples)
        row = FileRow(
            id=file_id,
            owner=owner,
            kind="upload",
            # the columns hold 255 characters (PostgreSQL enforces it; SQLite does not)
            display_name=(display_name or filename or file_id)[:255],
            mime_type=(mime_type or "application/octet-stream")[:255],
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            path=str(folder / "examples.jsonl"),
            example_count=len(examples),
            info={
                "input_column": input_column,
                "output_column": output_column,
                "preview": [
                    {"textInput": e.text_input, "output": e.output}
                    | ({"systemInstruction": e.system} if e.system is not None else {})
                    for e in examples[:5]
                ],
                # what api/gemini/convert.py's warning_out gives a client
                "warnings": [{"code": w.code, "message": w.message, "field": w.field,
                              "rows": list(w.rows)} for w in warnings],
            },
        )
        try:
            self.store.add_file(row)
        except Exception:  # e.g. the user is at max_files: keep nothing of the upload
            shutil.rmtree(self.settings.artifacts_dir / folder, ignore_errors=True)
            raise
        return row

    def delete_upload(self, file_id: str, owner: str | None) -> None:
        self.get_upload(file_id, owner)
        row = self.store.delete_file(file_id, owner)
        shutil.rmtree(self.settings.artifacts_dir / Path(row.path).parent, ignore_errors=True)
