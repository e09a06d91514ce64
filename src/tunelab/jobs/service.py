"""Submitting, cancelling and deleting tuning jobs, and storing uploaded data.

The API calls these; they validate everything a user sent up front (reporting every problem
at once), write the examples as an artifact, and create the model + operation + queued job
in one transaction. Nothing here trains: a worker picks the job up from the queue.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.catalog import BaseModelSpec
from tunelab.config import Settings
from tunelab.data import MIN_EXAMPLES, Example
from tunelab.data.split import split_validation
from tunelab.errors import (
    DataLoss,
    DatasetError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Problem,
)
from tunelab.fsutil import atomic_write
from tunelab.ids import random_id
from tunelab.jobs.base_models import served_base_model, unknown_base_model
from tunelab.parameters import TunedModelSettings, sentence
from tunelab.parameters import problems as problems_of
from tunelab.store import FileRow, JobRow, OperationRow, Store, TunedModelRow

ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")

# What google-genai 1.47+ users add so tunings.tune() sends its examples (docs/sdks.md).
EXTRA_BODY_SNIPPET = (
    'types.HttpOptions(extra_body={"tuningTask": {"trainingData": {"examples": {"examples": '
    '[{"textInput": "...", "output": "..."}]}}}})'
)
NO_TRAINING_DATA = (
    "No training examples received: tuningTask.trainingData is missing. google-genai 1.47 "
    "and later drop the examples of client.tunings.tune() on the Gemini API path (a bug in "
    "the SDK). Send them with the request yourself: pass config=types.CreateTuningJobConfig("
    f"..., http_options={EXTRA_BODY_SNIPPET}) to tune(), or put that extra_body into the "
    "client's HttpOptions; or use Vertex mode, genai.Client(vertexai=True, ...), with an "
    "uploaded dataset (docs/sdks.md). Over REST, send "
    '"tuningTask": {"trainingData": {"examples": {"examples": [{"textInput": "...", '
    '"output": "..."}]}}}, or upload a file (POST /v1beta/files) and pass '
    '"trainingData": {"file": "files/ID"}.'
)

CANCEL_MESSAGE = "Tuning was cancelled by the user."
CANCELLED_BEFORE_START = ("Tuning was cancelled by the user before it started; the model has "
                          "no tuned parameters.")


def derive_id(display_name: str | None) -> str:
    """``Sentence Translator`` → ``sentence-translator-u3b7m``; random when no usable name."""
    suffix = random_id(5)
    words = re.findall(r"[a-z0-9]+", (display_name or "").lower())
    stem = "-".join(words)[: 40 - len(suffix) - 1].strip("-")
    if not stem:  # no usable words: a random id that starts with a letter
        return secrets.choice(string.ascii_lowercase) + random_id(10)
    if not stem[0].isalpha():
        stem = f"m-{stem}"[: 40 - len(suffix) - 1].strip("-")
    return f"{stem}-{suffix}"


def write_examples(path: Path, examples: list[Example]) -> bytes:
    def record(e: Example) -> dict:
        out = {"text_input": e.text_input, "output": e.output}
        return out if e.system is None else {**out, "system": e.system}

    data = "".join(json.dumps(record(e), ensure_ascii=False) + "\n" for e in examples).encode()
    atomic_write(path, data)
    return data


def read_examples(path: Path) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                out.append(Example(d["text_input"], d["output"], d.get("system")))
    return out


@dataclass
class TuningRequest:
    """A create request, translated from the wire."""

    owner: str
    base_model: str | None
    source_tuned_model: str | None
    tuned_model_id: str | None
    display_name: str | None
    description: str | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    examples: list[Example] | None  # inline examples
    file: str | None  # or "files/{id}"
    epoch_count: int | None
    batch_size: int | None
    learning_rate: float | None
    learning_rate_multiplier: float | None
    # tunelab extension (tuningTask.validationData): examples to score each epoch on, inline
    # or an uploaded file; without them 10% are held out from 40 examples on (data/split.py)
    validation_examples: list[Example] | None = None
    validation_file: str | None = None
    seed: int | None = None  # the run's seed (OpenAI's ``seed``); else the server's
    lora_rank: int | None = None  # Vertex's adapterSize; else chosen from the data


@dataclass
class Submitted:
    model_id: str
    operation: str
    warnings: list[Problem]


@dataclass
class CreateRequestError(DatasetError):
    """Every problem with a create request in one answer: its fields' (``request_problems``,
    each naming its field) and its examples' (``problems``, by row). On the wire both are
    ``fieldViolations`` (``displayName``, ``examples[17].output``).

    With ``base_model_unknown`` the answer is NOT_FOUND (404), as the Gemini API answers a
    base model it does not have, and still names every other problem; the base model's comes
    first."""

    request_problems: list[Problem] = field(default_factory=list)
    base_model_unknown: bool = False

    def __post_init__(self) -> None:
        if self.base_model_unknown:
            self.status, self.http_code = NotFound.status, NotFound.http_code
        rows = self.problems
        parts = []
        if self.request_problems:
            parts.append("Invalid tuned model: "
                         + "; ".join(sentence(p) for p in self.request_problems) + ".")
            # a field's violation reads on its own, as Google's do ("displayName is 41
            # characters; …"), for a client that shows it away from the field
            self.request_problems = [Problem(sentence(p), field=p.field)
                                     for p in self.request_problems]
        if rows:
            n = len(rows)
            parts.append(f"The training data has {n} problem{'s' if n != 1 else ''}:\n"
                         + "\n".join(f"- {p}" for p in rows))
        self.problems = self.request_problems + rows
        InvalidArgument.__init__(self, "\n".join(parts))


class TuningService:
    """What the API (and the CLI) can ask of the tuning side."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    # -- paths --------------------------------------------------------------------------
    def model_dir(self, model_id: str) -> Path:
        return self.settings.artifacts_dir / "tuned" / model_id

    def adapter_dir(self, model_id: str) -> Path:
        return self.model_dir(model_id) / "adapter"

    # -- create -------------------------------------------------------------------------
    def request_problems(self, req: TuningRequest) -> list[Problem]:
        """Every problem with a create request's own fields (not its examples), each naming
        its field; the limits are ``tunelab/parameters.py``'s."""
        out = []
        if req.tuned_model_id is not None and not ID_RE.match(req.tuned_model_id):
            out.append(Problem(
                f"'{req.tuned_model_id}' is not valid: use 1-40 lowercase letters, digits and "
                "hyphens, starting with a letter and not ending with a hyphen",
                field="tunedModelId"))
        out += problems_of(TunedModelSettings, {
            "display_name": req.display_name, "temperature": req.temperature,
            "top_p": req.top_p, "top_k": req.top_k})
        if not req.base_model:
            out.append(Problem("is required, e.g. 'models/"
                               f"{self.settings.default_base_model}'", field="baseModel"))
        if req.examples is not None and req.file is not None:
            out.append(Problem("give examples or file, not both",
                               field="tuningTask.trainingData"))
        if req.validation_examples is not None and req.validation_file is not None:
            out.append(Problem("give examples or file, not both",
                               field="tuningTask.validationData"))
        return out

    def submit(
        self,
        req: TuningRequest,
        count_tokens_for: Callable[[BaseModelSpec], Callable[[Example], int]] | None = None,
    ) -> Submitted:
        from tunelab.data.validate import validate
        from tunelab.training import Hyperparameters, total_steps

        problems = self.request_problems(req)
        hp = Hyperparameters(
            req.epoch_count, req.batch_size, req.learning_rate, req.learning_rate_multiplier,
            req.lora_rank,
        )
        problems += hp.problems()
        if req.source_tuned_model:
            raise InvalidArgument(
                "Tuning on top of a tuned model (tunedModelSource) is not supported yet; "
                "give baseModel ('models/...') and include the earlier examples instead."
            )
        if req.examples is None and req.file is None:
            raise InvalidArgument(NO_TRAINING_DATA)
        spec = None
        unknown = None
        if req.base_model:
            spec = served_base_model(req.base_model, self.settings.extra_models)
            if spec is None:  # said with the other problems, first (CreateRequestError)
                unknown = self._unknown_base_model(req.base_model)
                problems.insert(0, unknown)
            if spec is not None and not req.base_model.startswith("models/"):
                problems.append(Problem(f"must look like 'models/{spec.id}', got "
                                        f"'{req.base_model}'", field="baseModel"))
                spec = None
        # The examples are checked even when the request's fields have problems, so that one
        # answer names them all (the fields', and the examples' by row).
        count = count_tokens_for(spec) if count_tokens_for and spec else None
        context = spec.context_length if count else None
        examples: list[Example] = []
        rows: list[Problem] = []
        warnings: list[Problem] = []
        if req.examples is None or req.file is None:
            examples = self.load_examples(req.examples, req.file, req.owner)
            try:
                warnings = validate(examples, count_tokens=count, context_length=context,
                                    location="trainingData" if req.file is None else req.file)
            except DatasetError as e:
                rows, warnings = e.problems, e.warnings
        given = None
        if (req.validation_examples is None) != (req.validation_file is None):
            given = self.load_examples(req.validation_examples, req.validation_file, req.owner)
            if not given:
                problems.append(Problem(
                    "holds no examples; give at least one, or leave validationData out to let "
                    "tunelab hold out 10% of 40 or more examples", field="validationData"))
            else:  # the validation data's problems are reported in the same answer
                rows += self._validation_problems(given, req, count, spec)
        if problems or rows:
            raise CreateRequestError(rows, warnings, request_problems=problems,
                                     base_model_unknown=unknown is not None)
        assert spec is not None  # a request without problems names a base model
        split = split_validation(examples, given)
        warnings += split.warnings
        train_examples = split.train
        # unset fields chosen from the training examples (training/auto.py)
        resolved = hp.resolve(spec.recommended_learning_rate, train_examples,
                              has_validation=bool(split.validation))
        steps = total_steps(len(train_examples), resolved.batch_size, resolved.epoch_count)

        model_id = req.tuned_model_id or derive_id(req.display_name)
        op_name = f"tunedModels/{model_id}/operations/{random_id(12)}"
        ds_id = f"ds-{model_id}-{random_id(6)}"
        ds_rel = Path("datasets") / f"{ds_id}.jsonl"
        if req.tuned_model_id is not None and self.store.model_exists(model_id):
            from tunelab.errors import AlreadyExists

            raise AlreadyExists(
                f"Tuned model 'tunedModels/{model_id}' already exists; choose another "
                "tunedModelId or delete the existing model."
            )
        data = write_examples(self.settings.artifacts_dir / ds_rel, train_examples)
        val_rel = None
        if split.validation:
            val_rel = Path("datasets") / f"{ds_id}-validation.jsonl"
            write_examples(self.settings.artifacts_dir / val_rel, split.validation)
        model = TunedModelRow(
            id=model_id,
            owner=req.owner,
            display_name=req.display_name or "",
            description=req.description or "",
            base_model=spec.name,
            state="CREATING",
            state_message="",
            cancelled=False,
            # The tuned model's sampling defaults start as the base model's.
            temperature=req.temperature if req.temperature is not None else spec.temperature,
            top_p=req.top_p if req.top_p is not None else spec.top_p,
            top_k=req.top_k if req.top_k is not None else spec.top_k,
            epoch_count=resolved.epoch_count,
            batch_size=resolved.batch_size,
            learning_rate=resolved.learning_rate,
            learning_rate_multiplier=req.learning_rate_multiplier,
            example_count=len(train_examples),
            total_steps=steps,
            dataset_file=ds_id,
        )
        dataset = FileRow(
            id=ds_id,
            owner=req.owner,
            kind="dataset",
            display_name=f"training data of tunedModels/{model_id}",
            mime_type="application/jsonl",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            path=str(ds_rel),
            example_count=len(train_examples),
            info={},
        )
        op = OperationRow(name=op_name, tuned_model_id=model_id, owner=req.owner, done=False)
        job = JobRow(
            tuned_model_id=model_id,
            operation=op_name,
            owner=req.owner,
            state="queued",
            cancel_requested=False,
            attempts=0,
            completed_steps=0,
            spec={
                "model_id": model_id,
                "base_model": spec.id,
                "dataset": str(ds_rel),
                "output_dir": str(Path("tuned") / model_id),
                # Resolved already, so a change of defaults cannot change a queued job.
                "epoch_count": resolved.epoch_count,
                "batch_size": resolved.batch_size,
                "learning_rate": resolved.learning_rate,
                "seed": req.seed if req.seed is not None else self.settings.seed,
                # the uploads it was created from, as the OpenAI API shows a job's files
                "training_file": req.file,
                "validation_file": req.validation_file,
                "total_steps": steps,
                # which examples score each epoch (the record the API shows; see split.py)
                "validation_dataset": str(val_rel) if val_rel else None,
                "validation": split.record(),
                "plan": resolved.plan(),
            },
        )
        try:
            self.store.create_tuned_model(model, op, job, dataset)
        except Exception:
            (self.settings.artifacts_dir / ds_rel).unlink(missing_ok=True)
            if val_rel:
                (self.settings.artifacts_dir / val_rel).unlink(missing_ok=True)
            raise
        return Submitted(model_id, op_name, warnings)

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

    def _unknown_base_model(self, name: str) -> Problem:
        """A base model this server does not have, with the ones it has (a create request
        names a catalog model: the local folders the CLI may tune are not offered here)."""
        return Problem(unknown_base_model(name, self.settings.extra_models), field="baseModel")

    @staticmethod
    def _validation_problems(given: list[Example], req: TuningRequest, count, spec) -> list:
        """The validation examples' own problems (empty or over-long fields, too many
        tokens), located as 'validationData, example N' (or the file's name)."""
        from tunelab.data.validate import validate

        try:
            validate(given, count_tokens=count, context_length=spec.context_length if count
                     else None, min_examples=1,
                     location=req.validation_file or "validationData")
        except DatasetError as e:
            return e.problems
        return []

    def evaluation(self, model_id: str) -> dict | None:
        """A model's validation record and per-epoch scores: the trainer's evaluation.json,
        or, before the first score, the split recorded when the job was queued."""
        from tunelab.training.loop import read_evaluation

        found = read_evaluation(self.model_dir(model_id))
        job = self.store.job_of(model_id)
        spec = (job.spec or {}) if job is not None else {}
        # one line on each hyperparameter choice, shown with the hyperparameters
        choices = (spec.get("plan") or {}).get("reasons")
        extra = {"hyperparameter_choices": choices} if choices else {}
        if found is not None:
            return {**found, **extra}
        record = spec.get("validation")
        return ({"validation": record} if record else {}) | extra or None

    # -- cancel / delete ----------------------------------------------------------------
    def cancel(self, model_id: str, owner: str | None) -> None:
        """Stop the model's job within one step (or at once if it has not started)."""
        self.store.request_cancel(model_id, owner, CANCEL_MESSAGE, CANCELLED_BEFORE_START)

    def delete(self, model_id: str, owner: str | None) -> None:
        row = self.store.get_tuned_model(model_id, owner)
        ds = self.store.dataset_path(row.dataset_file) if row.dataset_file else None
        may_remove = self.store.delete_tuned_model(model_id, owner)
        if ds:  # a running worker holds the examples in memory already
            (self.settings.artifacts_dir / ds).unlink(missing_ok=True)
            validation = Path(ds).with_name(Path(ds).stem + "-validation.jsonl")
            (self.settings.artifacts_dir / validation).unlink(missing_ok=True)
        if may_remove:
            shutil.rmtree(self.model_dir(model_id), ignore_errors=True)
        # else: a worker is training it; it stops within a step and removes the artifacts.

    def usable_adapter(self, row: TunedModelRow) -> Path:
        """The adapter to serve for a model, or a FAILED_PRECONDITION saying why there is none
        (DATA_LOSS when its files are not the ones written: checked once per version)."""
        from tunelab.training.checkpoint import adapter_damage

        name = f"tunedModels/{row.id}"
        if row.state == "CREATING":
            raise FailedPrecondition(
                f"{name} is still being tuned (state CREATING); poll its operation and call "
                "it when the state is ACTIVE."
            )
        if row.state != "ACTIVE":
            why = f" {row.state_message}" if row.state_message else ""
            raise FailedPrecondition(f"{name} cannot be called: its tuning failed.{why}")
        path = self.adapter_dir(row.id)
        if not (path / "adapter_model.safetensors").exists():
            raise FailedPrecondition(f"{name} has no adapter weights on this server.")
        why = adapter_damage(path)
        if why:
            raise DataLoss(
                f"{name} cannot be called: its adapter weights on the server are damaged "
                f"({why}). Serve them again from a checkpoint (POST {name}:selectEpoch with "
                '{"epoch": N}; GET ' + name + "/epochs lists them), or delete the model and "
                "tune it again.")
        return path

    # -- uploads ------------------------------------------------------------------------
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
