"""Tuned models ⇄ Vertex AI tuning jobs. No HTTP here.

A tuning job is a tuned model seen through Vertex's eyes: its id is the model's id, its
state comes from the model's state and its job in the queue, and its ``tunedModel`` names
the same model as ``projects/{p}/locations/{l}/endpoints/{id}``. Nothing is stored for
Vertex alone, so a job created here is a ``tunedModels/{id}`` on the Gemini routes, and a
model tuned there is a job here.
"""

from __future__ import annotations

import re

from tunelab.api.gemini.convert import ts
from tunelab.api.vertex import schemas as v
from tunelab.data.uris import bucket_scheme
from tunelab.errors import InvalidArgument
from tunelab.store import JobRow, OperationRow, TunedModelRow
from tunelab.training.hyperparameters import LoraSettings

# LoRA rank ⇄ Vertex's adapter sizes (every size Vertex has): the rank a job tunes with, and
# the size a job reports (the rank it was given, or the one chosen from its data).
ADAPTER_SIZES = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR",
                 8: "ADAPTER_SIZE_EIGHT", 16: "ADAPTER_SIZE_SIXTEEN",
                 32: "ADAPTER_SIZE_THIRTY_TWO"}
RANKS = {name: rank for rank, name in ADAPTER_SIZES.items()}
# proto3 JSON lets a client send an enum as its number
_ADAPTER_NUMBERS = {0: "ADAPTER_SIZE_UNSPECIFIED", 1: "ADAPTER_SIZE_ONE",
                    2: "ADAPTER_SIZE_FOUR", 3: "ADAPTER_SIZE_EIGHT", 4: "ADAPTER_SIZE_SIXTEEN",
                    5: "ADAPTER_SIZE_THIRTY_TWO", 6: "ADAPTER_SIZE_TWO"}
CANCELLED = 1
INTERNAL = 13
_BASE_RE = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/[^/]+/)?models/"
                      r"(?P<id>[^/@]+)(?:@[^/]*)?$")


def parent(project: str, location: str) -> str:
    return f"projects/{project}/locations/{location}"


def job_state(row: TunedModelRow, job: JobRow | None) -> str:
    """CREATING is PENDING while the job waits in the queue, RUNNING once a worker has it
    (CANCELLING once a cancel is asked for); a cancelled model is CANCELLED whether or not
    it kept the parameters learned so far."""
    if row.state == "CREATING":
        if job is not None and job.cancel_requested:
            return "JOB_STATE_CANCELLING"
        if job is None or job.state == "queued":
            return "JOB_STATE_PENDING"
        return "JOB_STATE_RUNNING"
    if row.cancelled:
        return "JOB_STATE_CANCELLED"
    return "JOB_STATE_SUCCEEDED" if row.state == "ACTIVE" else "JOB_STATE_FAILED"


def tuning_job_out(row: TunedModelRow, job: JobRow | None, op: OperationRow | None,
                   project: str, location: str) -> v.TuningJob:
    where = parent(project, location)
    state = job_state(row, job)
    error = None
    if state == "JOB_STATE_CANCELLED":
        error = v.Status(code=CANCELLED, message=row.state_message
                         or (op.error_message if op else None) or "Tuning was cancelled.")
    elif state == "JOB_STATE_FAILED":
        error = v.Status(code=(op.error_code if op and op.error_code else INTERNAL),
                         message=row.state_message or (op.error_message if op else None)
                         or "Tuning failed.")
    spec = (job.spec if job is not None else None) or {}
    rank = (spec.get("plan") or {}).get("lora_rank") or LoraSettings().rank
    return v.TuningJob(
        name=f"{where}/tuningJobs/{row.id}",
        tuned_model_display_name=row.display_name or None,
        description=row.description or None,
        base_model=row.base_model,
        state=state,
        create_time=ts(row.create_time),
        start_time=ts(row.start_time),
        end_time=ts(row.complete_time),
        update_time=ts(row.update_time),
        error=error,
        supervised_tuning_spec=v.SupervisedTuningSpec(
            training_dataset_uri=spec.get("training_file"),
            validation_dataset_uri=spec.get("validation_file"),
            hyper_parameters=v.SupervisedHyperParameters(
                epoch_count=str(row.epoch_count),
                learning_rate_multiplier=row.learning_rate_multiplier,
                adapter_size=ADAPTER_SIZES.get(rank, f"rank {rank}"),
                batch_size=str(row.batch_size),
                learning_rate=row.learning_rate,
            ),
        ),
        # a cancelled model that kept its parameters is ACTIVE, and can be called
        tuned_model=v.TunedModelRef(model=f"{where}/models/{row.id}",
                                    endpoint=f"{where}/endpoints/{row.id}")
        if row.state == "ACTIVE" else None,
        tuning_data_stats=v.TuningDataStats(supervised_tuning_data_stats=v.SupervisedTuningDataStats(
            # the training dataset's examples: those trained on first and any held out of it
            # to choose the epoch, which a refit trains on too (training/refit.py)
            tuning_dataset_example_count=str(row.example_count + len(
                (spec.get("validation") or {}).get("held_out") or [])),
            tuning_step_count=str(row.total_steps),
        )),
    )


def base_model_name(text: str | None) -> str | None:
    """Vertex names a base model 'gemini-x', 'publishers/google/models/gemini-x' or with its
    project and location; tunelab's service takes 'models/{id}'."""
    if not text:
        return None
    m = _BASE_RE.match(text)
    if m:
        return f"models/{m['id']}"
    if "/" not in text:
        return f"models/{text}"
    raise InvalidArgument(
        f"baseModel '{text}' is not a base model name: give its id ('tiny-random'), "
        "'models/ID' or 'publishers/google/models/ID' (GET /v1beta/models lists them)."
    )


def dataset_file(uri: str | None, field: str) -> str | None:
    """A dataset URI → what the tuning service reads: the name of an uploaded file
    ('files/ID'), or a gs:// or s3:// URI, read through the artifact store where the
    operator configured one (data/uris.py says what to do where not)."""
    if uri is None:
        return None
    uri = uri.strip()
    if re.fullmatch(r"files/[A-Za-z0-9_-]+", uri) or bucket_scheme(uri):
        return uri
    raise InvalidArgument(
        f"{field} '{uri}' is not a dataset this server can read: give a gs:// or s3:// URI "
        "(where the server's operator enabled the artifact store), or upload the JSONL file "
        "to tunelab (POST /v1beta/files, multipart field 'file'; Vertex's format with "
        "'contents' and 'systemInstruction' is read as is) and pass the name it answers, "
        "'files/ID' (docs/sdks.md).")


def adapter_rank(value: str | int | None) -> int | None:
    """Vertex's adapterSize (its name, or its number as proto3 JSON allows) → the LoRA rank to
    tune with; None when unset (tunelab chooses the rank from the data). Another value is
    refused naming the sizes there are, never replaced by another."""
    name = _ADAPTER_NUMBERS.get(value) if isinstance(value, int) else value
    if name in (None, "", "ADAPTER_SIZE_UNSPECIFIED"):
        return None
    if name in RANKS:
        return RANKS[name]
    raise InvalidArgument(
        f"Invalid tuning job: adapterSize {value!r} is not an adapter size; give one of "
        f"{', '.join(RANKS)} (LoRA rank {', '.join(str(r) for r in ADAPTER_SIZES)}), or "
        "leave it out to let tunelab choose the rank from the data.")
