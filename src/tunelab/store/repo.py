"""Queries: every read and write of the store goes through ``Store`` (tuned models,
operations, jobs, files) and its companions ``store/accounts.py`` (users, keys, tokens,
sign-in attempts) and ``store/permissions.py`` (shares of tuned models).

Rows come back detached (``expire_on_commit=False``) so callers can read them after the
session closes. Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunelab.errors import AlreadyExists, InvalidArgument, NotFound, QuotaExceeded
from tunelab.paging import Page, decode_token, encode_token
from tunelab.store.db import make_engine, session_factory, upgrade
from tunelab.store.tables import (
    FileRow,
    JobRow,
    OperationRow,
    SnapshotRow,
    TunedModelRow,
    UserRow,
    utcnow,
)

if TYPE_CHECKING:
    from tunelab.config import Settings

# gRPC codes used in Operation.error (google.rpc.Code).
CANCELLED = 1
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9
INTERNAL = 13


def _claimable(now):
    """A job a worker may take: queued (unless it waits out a storage fault: a queued job's
    ``lease_expires_at`` is when it may be tried again, see ``defer_job``), or running under a
    lease that has expired (its worker died; the job resumes from its last checkpoint)."""
    return or_(and_(JobRow.state == "queued",
                    or_(JobRow.lease_expires_at.is_(None), JobRow.lease_expires_at < now)),
               and_(JobRow.state == "running", JobRow.lease_expires_at < now))


# First key of the PostgreSQL advisory locks that serialize one user's counted writes (the
# second is the hash of the user's name); any fixed 32-bit number unlike MIGRATION_LOCK.
OWNER_LOCK = 0x746C_7131  # "tlq1"


@dataclass(frozen=True)
class Quota:
    """Per-user limits the store enforces in the same transaction as the write that would
    exceed them, so concurrent requests cannot all pass a check made before any of them wrote.
    0 means no limit; a user's own ``max_concurrent_jobs``/``max_tuned_models`` override the
    first two (``tunelab users limits``)."""

    max_concurrent_jobs: int = 0
    max_tuned_models: int = 0
    max_files: int = 0
    max_description_chars: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Quota:
        return cls(settings.max_concurrent_jobs, settings.max_tuned_models, settings.max_files,
                   settings.max_description_chars)

    def check_description(self, description: str | None) -> None:
        n = len(description or "")
        if self.max_description_chars and n > self.max_description_chars:
            raise InvalidArgument(
                f"description is {n:,} characters; the limit is {self.max_description_chars:,}. "
                "Shorten it (the administrator sets the limit: TUNELAB_MAX_DESCRIPTION_CHARS).")


def jobs_limit_exceeded(user: str, n: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        "max_concurrent_jobs",
        f"Quota exceeded for max_concurrent_jobs: user '{user}' has {n} tuning jobs queued or "
        f"running and the limit is {limit}. Wait for one to finish or cancel one, or ask the "
        "administrator to raise the limit (tunelab users limits, TUNELAB_MAX_CONCURRENT_JOBS).")


def models_limit_exceeded(user: str, n: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        "max_tuned_models",
        f"Quota exceeded for max_tuned_models: user '{user}' stores {n} tuned models and the "
        f"limit is {limit}. Delete a tuned model, or ask the administrator to raise the limit "
        "(tunelab users limits, TUNELAB_MAX_TUNED_MODELS).")


class Store:
    """The database behind the service (SQLite by default, any SQLAlchemy URL)."""

    def __init__(self, url: str, *, migrate: bool = True, lock_dir=None,
                 quota: Quota | None = None):
        self.url = url
        self.quota = quota or Quota()
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine, lock_dir)
        self._sessions = session_factory(self.engine)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        settings.ensure_dirs()
        return cls(settings.resolved_database_url(), lock_dir=settings.home,
                   quota=Quota.of(settings))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def lock_owner(self, s: Session, owner: str) -> None:
        """Make ``s`` the only transaction that counts and adds ``owner``'s rows until it ends.
        Must be the session's first statement. PostgreSQL: an advisory lock on the owner, held
        to the end of the transaction (other users are not held up). SQLite lets one writer in
        at a time, so a write as the first statement takes the database's write lock before
        anything is read (a read first could see counts another writer is about to change)."""
        if self.engine.dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:owner))"),
                      {"ns": OWNER_LOCK, "owner": owner})
        else:
            s.execute(update(UserRow).where(UserRow.name == owner).values(name=UserRow.name))

    def _user_limits(self, s: Session, owner: str) -> tuple[int, int]:
        row = s.get(UserRow, owner)
        jobs = row.max_concurrent_jobs if row and row.max_concurrent_jobs is not None else \
            self.quota.max_concurrent_jobs
        models = row.max_tuned_models if row and row.max_tuned_models is not None else \
            self.quota.max_tuned_models
        return jobs, models

    def _check_create_quota(self, s: Session, owner: str, queued: bool) -> None:
        max_jobs, max_models = self._user_limits(s, owner)
        if queued and max_jobs > 0:
            n = s.scalar(select(func.count()).select_from(JobRow)
                         .where(JobRow.owner == owner, JobRow.state != "done"))
            if n >= max_jobs:
                raise jobs_limit_exceeded(owner, n, max_jobs)
        if max_models > 0:
            n = s.scalar(select(func.count()).select_from(TunedModelRow)
                         .where(TunedModelRow.owner == owner))
            if n >= max_models:
                raise models_limit_exceeded(owner, n, max_models)

    # -- tuned models -------------------------------------------------------------------
    def create_tuned_model(
        self, model: TunedModelRow, op: OperationRow, job: JobRow, dataset: FileRow | None
    ) -> None:
        """The model, its operation and its queued job appear together or not at all, and only
        while the owner is under their limits (checked under the owner's lock: 16 concurrent
        creates against a limit of 4 queue exactly 4)."""
        self.quota.check_description(model.description)
        try:
            with self.session() as s:
                self.lock_owner(s, model.owner)
                self._check_create_quota(s, model.owner, job.state != "done")
                if s.get(TunedModelRow, model.id) is not None:
                    raise AlreadyExists(
                        f"Tuned model 'tunedModels/{model.id}' already exists; "
                        "choose another tunedModelId or delete the existing model."
                    )
                if dataset is not None:
                    s.add(dataset)
                s.add_all([model, op, job])
        except IntegrityError as e:
            raise AlreadyExists(
                f"Tuned model 'tunedModels/{model.id}' already exists; choose another id."
            ) from e

    def add_tuned_model(self, model: TunedModelRow, op: OperationRow) -> bool:
        """Add a model that needs no job (an imported adapter) with its operation; False when
        the id is taken. The row claims the id atomically, before any file is written."""
        try:
            with self.session() as s:
                if s.get(TunedModelRow, model.id) is not None:
                    return False
                s.add_all([model, op])
        except IntegrityError:
            return False
        return True

    def find_tuned_model(self, model_id: str) -> TunedModelRow | None:
        with self.session() as s:
            return s.get(TunedModelRow, model_id)

    def get_tuned_model(self, model_id: str, owner: str | None) -> TunedModelRow:
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            return row

    def list_tuned_models(
        self, owner: str | None, page_size: int, page_token: str | None, text: str | None
    ) -> Page:
        offset = decode_token(page_token)
        with self.session() as s:
            q = select(TunedModelRow)
            if owner is not None:
                q = q.where(TunedModelRow.owner == owner)
            if text:
                like = f"%{text.lower()}%"
                q = q.where(
                    or_(
                        func.lower(TunedModelRow.display_name).like(like),
                        func.lower(TunedModelRow.description).like(like),
                    )
                )
            q = q.order_by(TunedModelRow.create_time.desc(), TunedModelRow.id)
            rows = list(s.scalars(q.offset(offset).limit(page_size + 1)))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    def update_tuned_model(self, model_id: str, owner: str | None, fields: dict) -> TunedModelRow:
        if "description" in fields:
            self.quota.check_description(fields["description"])
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            for k, v in fields.items():
                setattr(row, k, v)
            row.update_time = utcnow()
            return row

    def delete_tuned_model(self, model_id: str, owner: str | None) -> bool:
        """Delete a model, its operations and snapshots. A running job is asked to stop (its
        worker removes the artifacts); returns True when the caller may remove them now."""
        with self.session() as s:
            row = s.get(TunedModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            running = False
            for job in s.scalars(select(JobRow).where(JobRow.tuned_model_id == model_id)):
                if job.state == "running":
                    job.cancel_requested = True
                    running = True
                elif job.state == "queued":
                    job.state = "done"
                    job.error = "deleted"
                    job.finish_time = utcnow()
            s.execute(delete(SnapshotRow).where(SnapshotRow.tuned_model_id == model_id))
            s.execute(delete(OperationRow).where(OperationRow.tuned_model_id == model_id))
            if row.dataset_file:
                ds = s.get(FileRow, row.dataset_file)
                if ds is not None and ds.kind == "dataset":
                    s.delete(ds)
            s.delete(row)
            return not running

    def dataset_path(self, file_id: str) -> str | None:
        with self.session() as s:
            row = s.get(FileRow, file_id)
            return row.path if row is not None else None

    def snapshots(self, model_id: str) -> list[SnapshotRow]:
        with self.session() as s:
            q = select(SnapshotRow).where(SnapshotRow.tuned_model_id == model_id)
            return list(s.scalars(q.order_by(SnapshotRow.step)))

    # -- operations ---------------------------------------------------------------------
    def get_operation(self, name: str, owner: str | None) -> OperationRow:
        with self.session() as s:
            row = s.get(OperationRow, name)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFound(f"Operation '{name}' was not found.")
            return row

    def list_operations(
        self, model_id: str, owner: str | None, page_size: int, page_token: str | None
    ) -> Page:
        offset = decode_token(page_token)
        self.get_tuned_model(model_id, owner)
        with self.session() as s:
            q = (
                select(OperationRow)
                .where(OperationRow.tuned_model_id == model_id)
                .order_by(OperationRow.create_time.desc())
            )
            rows = list(s.scalars(q.offset(offset).limit(page_size + 1)))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    # -- jobs (API side) ----------------------------------------------------------------
    def job_of(self, model_id: str) -> JobRow | None:
        with self.session() as s:
            q = select(JobRow).where(JobRow.tuned_model_id == model_id).order_by(JobRow.seq.desc())
            return s.scalars(q.limit(1)).first()

    def queue_position(self, job: JobRow) -> int:
        """1 for the next job to start, 0 when the job is not waiting."""
        if job.state != "queued":
            return 0
        with self.session() as s:
            ahead = s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.state == "queued", JobRow.seq < job.seq)
            )
        return int(ahead or 0) + 1

    def list_jobs(self, owner: str | None = None, include_done: bool = False) -> list[JobRow]:
        with self.session() as s:
            q = select(JobRow)
            if owner is not None:
                q = q.where(JobRow.owner == owner)
            if not include_done:
                q = q.where(JobRow.state != "done")
            return list(s.scalars(q.order_by(JobRow.seq)))

    def request_cancel(self, model_id: str, owner: str | None, message: str,
                       before_start: str) -> None:
        """Ask the job of a model to stop. A job still in the queue ends here and now: its
        operation ends with ``message``, its model FAILED with ``before_start`` as the state
        message (the words are the caller's: ``jobs/service.py``)."""
        with self.session() as s:
            model = s.get(TunedModelRow, model_id)
            if model is None or (owner is not None and model.owner != owner):
                raise NotFound(f"Tuned model 'tunedModels/{model_id}' was not found.")
            q = select(JobRow).where(JobRow.tuned_model_id == model_id, JobRow.state != "done")
            for job in s.scalars(q):
                if job.state == "queued":
                    now = utcnow()
                    job.state, job.finish_time, job.error = "done", now, "cancelled"
                    model.state = "FAILED"
                    model.cancelled = True
                    model.state_message = before_start
                    model.update_time = model.complete_time = now
                    op = s.get(OperationRow, job.operation)
                    if op is not None:
                        op.done, op.error_code, op.error_message = True, CANCELLED, message
                else:
                    job.cancel_requested = True

    # -- jobs (worker side) -------------------------------------------------------------
    def claim_job(self, worker_id: str, lease_seconds: float) -> JobRow | None:
        """Take the oldest queued job, or a running one whose worker stopped heartbeating.
        On PostgreSQL the row is locked with ``FOR UPDATE SKIP LOCKED``: racing workers each
        take a different job without waiting on one another. Elsewhere (SQLite serializes
        writers) a conditional UPDATE makes the claim safe, retried if another worker won."""
        if self.engine.dialect.name == "postgresql":
            return self._claim_job_skip_locked(worker_id, lease_seconds)
        while True:
            now = utcnow()
            with self.session() as s:
                q = select(JobRow.seq).where(_claimable(now)).order_by(JobRow.seq).limit(1)
                seq = s.scalar(q)
                if seq is None:
                    return None
                res = s.execute(
                    update(JobRow)
                    .where(JobRow.seq == seq, _claimable(now))
                    .values(
                        state="running",
                        worker_id=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        heartbeat_at=now,
                        attempts=JobRow.attempts + 1,
                    )
                )
                if res.rowcount == 1:
                    job = s.get(JobRow, seq)
                    s.refresh(job)
                    return job

    def _claim_job_skip_locked(self, worker_id: str, lease_seconds: float) -> JobRow | None:
        now = utcnow()
        with self.session() as s:
            q = (
                select(JobRow)
                .where(_claimable(now))
                .order_by(JobRow.seq)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job = s.scalars(q).first()
            if job is None:
                return None
            job.state, job.worker_id = "running", worker_id
            job.lease_expires_at = now + timedelta(seconds=lease_seconds)
            job.heartbeat_at = now
            job.attempts += 1
            return job

    def heartbeat(self, seq: int, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the job is no longer ours."""
        now = utcnow()
        with self.session() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.seq == seq, JobRow.worker_id == worker_id, JobRow.state == "running")
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
            )
            return res.rowcount == 1

    def job_status(self, seq: int) -> tuple[str, bool, str | None]:
        with self.session() as s:
            job = s.get(JobRow, seq)
            if job is None:
                return ("done", True, None)
            return (job.state, job.cancel_requested, job.worker_id)

    def model_exists(self, model_id: str) -> bool:
        with self.session() as s:
            return s.get(TunedModelRow, model_id) is not None

    def mark_started(self, model_id: str, total_steps: int) -> None:
        with self.session() as s:
            model = s.get(TunedModelRow, model_id)
            if model is not None:
                if model.start_time is None:
                    model.start_time = utcnow()
                if model.state == "CREATING":  # a wait for storage (defer_job) is over
                    model.state_message = ""
                model.total_steps = total_steps
                model.update_time = utcnow()

    def put_snapshot(
        self, seq: int, model_id: str, step: int, epoch: int, mean_loss: float, at: datetime
    ) -> None:
        with self.session() as s:
            row = s.get(SnapshotRow, (model_id, step))
            if row is None:
                if s.get(TunedModelRow, model_id) is None:
                    return
                s.add(SnapshotRow(tuned_model_id=model_id, step=step, epoch=epoch,
                                  mean_loss=mean_loss, compute_time=at))
            else:
                row.epoch, row.mean_loss, row.compute_time = epoch, mean_loss, at
            s.execute(update(JobRow).where(JobRow.seq == seq).values(completed_steps=step))

    def release_job(self, seq: int, worker_id: str) -> None:
        """Put a job back in the queue (worker shutting down); keeps its place (``seq``)."""
        with self.session() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.seq == seq, JobRow.worker_id == worker_id, JobRow.state == "running")
                .values(state="queued", worker_id=None, lease_expires_at=None)
            )

    def finish_job(
        self,
        seq: int,
        worker_id: str,
        *,
        model_state: str,
        cancelled: bool = False,
        state_message: str = "",
        error_code: int | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Record the outcome of a job in one transaction; False if the job was not ours."""
        now = utcnow()
        with self.session() as s:
            job = s.get(JobRow, seq)
            if job is None or job.worker_id != worker_id or job.state != "running":
                return False
            job.state, job.finish_time, job.lease_expires_at = "done", now, None
            job.error = error_message
            model = s.get(TunedModelRow, job.tuned_model_id)
            if model is not None:
                model.state = model_state
                model.cancelled = cancelled
                model.state_message = state_message
                model.complete_time = model.update_time = now
            op = s.get(OperationRow, job.operation)
            if op is not None:
                op.done, op.error_code, op.error_message = True, error_code, error_message
            return True

    # -- files --------------------------------------------------------------------------
    def add_file(self, row: FileRow) -> None:
        """Keep an upload's record, while its owner is under ``max_files`` (checked under the
        owner's lock, as jobs are)."""
        with self.session() as s:
            if row.kind == "upload" and self.quota.max_files > 0:
                self.lock_owner(s, row.owner)
                n = s.scalar(select(func.count()).select_from(FileRow)
                             .where(FileRow.owner == row.owner, FileRow.kind == "upload"))
                if n >= self.quota.max_files:
                    raise QuotaExceeded(
                        "max_files",
                        f"Quota exceeded for max_files: user '{row.owner}' stores {n} uploaded "
                        f"files and the limit is {self.quota.max_files}. Delete files you no "
                        "longer need (DELETE /v1beta/files/ID, or the Studio), or ask the "
                        "administrator to raise the limit (TUNELAB_MAX_FILES).")
            s.add(row)

    def get_file(self, file_id: str, owner: str | None) -> FileRow:
        with self.session() as s:
            row = s.get(FileRow, file_id)
            if row is None or row.kind != "upload" or (owner is not None and row.owner != owner):
                raise NotFound(f"File 'files/{file_id}' was not found.")
            return row

    def list_files(self, owner: str | None, page_size: int, page_token: str | None) -> Page:
        offset = decode_token(page_token)
        with self.session() as s:
            q = select(FileRow).where(FileRow.kind == "upload")
            if owner is not None:
                q = q.where(FileRow.owner == owner)
            q = q.order_by(FileRow.create_time.desc()).offset(offset).limit(page_size + 1)
            rows = list(s.scalars(q))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    def delete_file(self, file_id: str, owner: str | None) -> FileRow:
        row = self.get_file(file_id, owner)
        with self.session() as s:
            s.execute(delete(FileRow).where(FileRow.id == file_id))
        return row

    def defer_job(self, seq: int, worker_id: str, delay_seconds: float, reason: str) -> bool:
        """Put a job back in the queue, not to be claimed for ``delay_seconds`` (its storage
        is full or read-only: try again later), with ``reason`` as its model's state message.
        The claim is not counted as an attempt: waiting for storage is not a crash. False if
        the job was not ours."""
        now = utcnow()
        with self.session() as s:
            job = s.get(JobRow, seq)
            if job is None or job.worker_id != worker_id or job.state != "running":
                return False
            job.state, job.worker_id, job.heartbeat_at = "queued", None, None
            job.lease_expires_at = now + timedelta(seconds=delay_seconds)
            job.attempts = max(0, job.attempts - 1)
            model = s.get(TunedModelRow, job.tuned_model_id)
            if model is not None:
                model.state_message, model.update_time = reason, now
            return True
