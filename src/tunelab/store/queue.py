"""The job queue: a table of jobs, one per create request. The API side reads a model's job
and its place in the line and asks a job to stop; the worker side claims jobs under a lease
it renews (heartbeat), records progress (snapshots) and outcomes, and puts a job back when
it shuts down or its storage needs time."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from tunelab.errors import NotFound
from tunelab.store.base import StoreBase
from tunelab.store.tables import JobRow, OperationRow, SnapshotRow, TunedModelRow, utcnow

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


class QueueQueries(StoreBase):
    """The job queue, both sides."""

    # -- API side ---------------------------------------------------------------------------
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
                    _settle(s, job, now, "FAILED", True, before_start, CANCELLED, message)
                else:
                    job.cancel_requested = True

    # -- worker side ------------------------------------------------------------------------
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
                if model.start_time is None:  # a resumed job keeps a total a refit corrected
                    model.start_time = utcnow()
                    model.total_steps = total_steps
                if model.state == "CREATING":  # a wait for storage (defer_job) is over
                    model.state_message = ""
                model.update_time = utcnow()

    def put_snapshot(
        self, seq: int, model_id: str, step: int, epoch: int, mean_loss: float, at: datetime,
        total_steps: int | None = None,
    ) -> None:
        """Record a step (again, after a resume: the same step is updated); ``total_steps``
        corrects the run's length when it changed since it was planned (a refit)."""
        with self.session() as s:
            row = s.get(SnapshotRow, (model_id, step))
            if total_steps:
                s.execute(update(TunedModelRow).where(
                    TunedModelRow.id == model_id, TunedModelRow.total_steps != total_steps)
                    .values(total_steps=total_steps))
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
            _settle(s, job, now, model_state, cancelled, state_message, error_code,
                    error_message)
            return True

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


def _settle(s: Session, job: JobRow, now: datetime, model_state: str, cancelled: bool,
            state_message: str, error_code: int | None, error_message: str | None) -> None:
    """End a finished job's tuned model and operation (one place for a job that ends in the
    queue, cancelled, and one a worker finishes)."""
    model = s.get(TunedModelRow, job.tuned_model_id)
    if model is not None:
        model.state = model_state
        model.cancelled = cancelled
        model.state_message = state_message
        model.complete_time = model.update_time = now
    op = s.get(OperationRow, job.operation)
    if op is not None:
        op.done, op.error_code, op.error_message = True, error_code, error_message
