"""tunelab's rows as OpenAI objects, and OpenAI's names as tunelab's.

One tuned model is one fine-tuning job and, once tuned, one fine-tuned model:

    tunedModels/{id}                  ftjob-{id}                 (the job)
    tunedModels/{id}, ACTIVE          ft:{base}:{suffix}:{id}    (the model)
    its epoch N checkpoint            ft:{base}:{suffix}:{id}:ckpt-step-{last step of N}
    files/{id}                        file-{id}

``{suffix}`` is the display name as a slug (the job's ``suffix`` when created here); only
the last ``:``-part (the id) is read back, so a renamed model keeps answering to its old name.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from tunelab.api.openai import schemas as s
from tunelab.errors import NotFound
from tunelab.store import FileRow, JobRow, SnapshotRow, TunedModelRow

JOB_PREFIX = "ftjob-"
FILE_PREFIX = "file-"
CHECKPOINT_PREFIX = "ckpt-step-"


def unix(t: datetime | None) -> int | None:
    return int(t.timestamp()) if t is not None else None


def slug(text: str) -> str:
    """A display name as a model-name part: lowercase letters, digits, ``-``, ``.``, ``_``."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-")


def base_id(row: TunedModelRow) -> str:
    return row.base_model.removeprefix("models/")


def model_name(row: TunedModelRow) -> str:
    return f"ft:{base_id(row)}:{slug(row.display_name)}:{row.id}"


def checkpoint_name(row: TunedModelRow, step: int) -> str:
    return f"{model_name(row)}:{CHECKPOINT_PREFIX}{step}"


def job_id(model_id: str) -> str:
    return JOB_PREFIX + model_id


def model_id_of_job(job: str) -> str:
    """``ftjob-{id}`` → ``{id}`` (404 for anything else)."""
    if not job.startswith(JOB_PREFIX) or len(job) == len(JOB_PREFIX):
        raise NotFound(f"No fine-tuning job '{job}'; job ids look like 'ftjob-…' (list them "
                       "with GET /v1/fine_tuning/jobs).")
    return job[len(JOB_PREFIX):]


def file_id(upload_id: str) -> str:
    return FILE_PREFIX + upload_id


def upload_id_of(file: str) -> str:
    """``file-{id}`` (OpenAI), ``files/{id}`` (Gemini) or a bare id → ``{id}``."""
    return file.removeprefix(FILE_PREFIX).removeprefix("files/")


def parse_model(name: str) -> tuple[str, int | None] | None:
    """``ft:…:{id}`` → (id, None); ``ft:…:{id}:ckpt-step-N`` → (id, N); ``tunedModels/{id}``
    → (id, None); a base model's name → None."""
    if name.startswith("tunedModels/"):
        return name.removeprefix("tunedModels/"), None
    if not name.startswith("ft:"):
        return None
    parts = name.split(":")
    step = None
    if parts[-1].startswith(CHECKPOINT_PREFIX) and parts[-1][len(CHECKPOINT_PREFIX):].isdigit():
        step = int(parts[-1][len(CHECKPOINT_PREFIX):])
        parts = parts[:-1]
    return (parts[-1], step) if len(parts) >= 2 and parts[-1] else None


# ------------------------------------------------------------------------------- files
def file_out(row: FileRow) -> s.FileObject:
    warnings = (row.info or {}).get("warnings") or []  # each a dict (jobs/service.py) or words
    return s.FileObject(id=file_id(row.id), bytes=row.size_bytes,
                        created_at=unix(row.create_time) or 0, filename=row.display_name,
                        status_details="; ".join(w if isinstance(w, str) else w["message"]
                                                 for w in warnings) or None)


def original_of(artifacts: Path, row: FileRow) -> Path | None:
    """The bytes the user uploaded (kept beside the parsed examples as ``original.*``)."""
    folder = artifacts / Path(row.path).parent
    found = sorted(folder.glob("original*")) if folder.is_dir() else []
    return found[0] if found else None


# -------------------------------------------------------------------------------- jobs
def status_of(row: TunedModelRow, job: JobRow | None) -> str:
    if row.state == "CREATING":
        return "running" if job is not None and job.state == "running" else "queued"
    if row.cancelled:
        return "cancelled"
    return "succeeded" if row.state == "ACTIVE" else "failed"


def hyperparameters(row: TunedModelRow, recommended_lr: float) -> s.Hyperparameters:
    """The resolved values ("auto" answered with what it chose, as OpenAI does)."""
    multiplier = row.learning_rate_multiplier
    if multiplier is None:
        multiplier = row.learning_rate / recommended_lr if recommended_lr else 1.0
    return s.Hyperparameters(n_epochs=row.epoch_count, batch_size=row.batch_size,
                             learning_rate_multiplier=round(multiplier, 10))


def job_out(row: TunedModelRow, job: JobRow | None, recommended_lr: float,
            default_seed: int, trained_tokens: int | None = None) -> s.Job:
    """``trained_tokens``: what the run trained on (``TunedModels.trained_tokens``), shown
    once the job has ended."""
    spec = (job.spec if job is not None else None) or {}
    status = status_of(row, job)
    hp = hyperparameters(row, recommended_lr)
    error = None
    if status == "failed":
        error = s.JobError(code="training_failed",
                           message=row.state_message or "The tuning failed; see the server log.")
    training = spec.get("training_file")
    validation = spec.get("validation_file")
    return s.Job(
        id=job_id(row.id),
        created_at=unix(row.create_time) or 0,
        finished_at=unix(row.complete_time) if status not in ("queued", "running") else None,
        error=error,
        fine_tuned_model=model_name(row) if row.state == "ACTIVE" else None,
        hyperparameters=hp,
        method=s.Method(supervised=s.Supervised(hyperparameters=hp)),
        model=base_id(row),
        organization_id=row.owner,
        seed=spec.get("seed", default_seed),
        status=status,  # type: ignore[arg-type]
        trained_tokens=trained_tokens if status not in ("queued", "running") else None,
        training_file=file_id(upload_id_of(training)) if training else "",
        validation_file=file_id(upload_id_of(validation)) if validation else None,
    )


def events_of(row: TunedModelRow, job: JobRow | None, snapshots: list[SnapshotRow],
              checkpoint_epochs: set[int]) -> list[s.Event]:
    """A job's life as OpenAI's events, oldest first: created, started, one ``metrics``
    event per step with its loss, one per epoch checkpoint, and how it ended."""
    jid = job_id(row.id)
    events = [s.Event(id=f"ftevent-{row.id}-created", created_at=unix(row.create_time) or 0,
                      message=f"Created fine-tuning job: {jid}")]
    if row.start_time is not None:
        events.append(s.Event(id=f"ftevent-{row.id}-started",
                              created_at=unix(row.start_time) or 0,
                              message="Fine-tuning job started"))
    epoch_end = {snap.epoch: snap.step for snap in snapshots}  # steps come in order
    for snap in snapshots:
        events.append(s.Event(
            id=f"ftevent-{row.id}-step-{snap.step}", created_at=unix(snap.compute_time) or 0,
            type="metrics",
            message=f"Step {snap.step}/{row.total_steps}: training loss={snap.mean_loss:.4f}",
            data={"step": snap.step, "total_steps": row.total_steps, "epoch": snap.epoch,
                  "train_loss": snap.mean_loss},
        ))
        if snap.epoch in checkpoint_epochs and snap.step == epoch_end[snap.epoch]:
            events.append(s.Event(
                id=f"ftevent-{row.id}-checkpoint-{snap.epoch}",
                created_at=unix(snap.compute_time) or 0,
                message=f"Checkpoint created at step {snap.step} (epoch {snap.epoch})",
                data={"step": snap.step, "epoch": snap.epoch,
                      "fine_tuned_model_checkpoint": checkpoint_name(row, snap.step)},
            ))
    status = status_of(row, job)
    end = unix(row.complete_time) or 0
    if status == "succeeded":
        events.append(s.Event(id=f"ftevent-{row.id}-model", created_at=end,
                              message=f"New fine-tuned model created: {model_name(row)}"))
        events.append(s.Event(id=f"ftevent-{row.id}-done", created_at=end,
                              message="The job has successfully completed"))
    elif status == "cancelled":
        events.append(s.Event(id=f"ftevent-{row.id}-done", created_at=end, level="warn",
                              message="Fine-tuning job cancelled. " + row.state_message))
    elif status == "failed":
        events.append(s.Event(id=f"ftevent-{row.id}-done", created_at=end, level="error",
                              message="Fine-tuning job failed: " + row.state_message))
    return events


def checkpoints_of(row: TunedModelRow, snapshots: list[SnapshotRow], epochs: set[int],
                   evaluation: dict | None) -> list[s.Checkpoint]:
    """One checkpoint per finished epoch, oldest first, with the loss of its last step and
    (with validation examples) the epoch's validation loss."""
    scored = {e.get("epoch"): e for e in (evaluation or {}).get("epochs") or []}
    last: dict[int, SnapshotRow] = {}
    for snap in snapshots:
        last[snap.epoch] = snap
    out = []
    for epoch in sorted(epochs & set(last)):
        snap = last[epoch]
        valid = scored.get(epoch, {}).get("validation_loss")
        out.append(s.Checkpoint(
            id=f"ftckpt-{row.id}-{epoch}", created_at=unix(snap.compute_time) or 0,
            fine_tuned_model_checkpoint=checkpoint_name(row, snap.step),
            fine_tuning_job_id=job_id(row.id), step_number=snap.step,
            metrics=s.Metrics(step=snap.step, train_loss=snap.mean_loss, valid_loss=valid,
                              full_valid_loss=valid),
        ))
    return out


def page(items: list, after: str | None, limit: int) -> s.ListOf:
    """Cursor paging: the ``limit`` items after the one whose id is ``after``."""
    start = 0
    if after:
        ids = [x.id for x in items]
        if after not in ids:
            from tunelab.api.openai.errors import OpenAIInvalid

            raise OpenAIInvalid(f"after='{after}' is not an id in this list; pass the id of "
                                "the last item of the previous page.", "after")
        start = ids.index(after) + 1
    chunk = items[start:start + limit]
    return s.ListOf(data=chunk, has_more=start + limit < len(items),
                    first_id=chunk[0].id if chunk else None,
                    last_id=chunk[-1].id if chunk else None)
