"""The worker: claim a job from the queue, train it, record the outcome.

Leases: a claimed job belongs to its worker while the lease is fresh; a heartbeat thread
renews it every ``lease_seconds / 3``. If the worker dies (``kill -9``) the lease lapses and
any worker claims the job again; training resumes from the last epoch checkpoint and reports
the remaining steps again (snapshots are upserted by step, so nothing is duplicated).

Stopping: SIGTERM/SIGINT ask the worker to stop; the running job stops within a step and goes
back to the queue (keeping its place), to resume from its checkpoint.

Storage faults: when the disk is full or read-only (a checkpoint, the adapter or the base
model cache cannot be written), the job is not failed: it goes back to the queue with the
reason as its model's state message, and is tried again after a backoff (doubling while the
fault lasts); it resumes from its newest intact checkpoint once space returns.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.fsutil import StorageUnavailable, storage_fault
from tunelab.jobs.executors import Executor, JobSpec, make_executor
from tunelab.jobs.service import CANCEL_MESSAGE
from tunelab.store import JobRow, Store
from tunelab.store.queue import CANCELLED, INTERNAL, INVALID_ARGUMENT

log = logging.getLogger("tunelab.worker")

# How often a running job looks at the database for a cancel request (at most; it looks
# before each step). Cheap: one primary-key read.
CANCEL_POLL_SECONDS = 0.2

# A job claimed this many times (worker crashes, restarts) is failed instead of retried
# forever: something about it kills its workers (out of memory, for example).
MAX_ATTEMPTS = 10

# Backoff of a job waiting for storage: settings.storage_retry_seconds, doubling per fault in a
# row, at most this long (a fault that lasts is checked every 10 minutes).
MAX_STORAGE_RETRY_SECONDS = 600.0

STORAGE_WAIT = {
    "full": "the server ran out of storage space while saving this model's training state",
    "read-only": "the server's storage became read-only while saving this model's training "
    "state",
}
STORAGE_ASK = {
    "full": "free space in tunelab's data directory",
    "read-only": "make tunelab's data directory writable",
}

CANCELLED_ACTIVE = (
    "Tuning was cancelled by the user after step {step} of {total}. The model keeps the "
    "parameters learned so far and can be called, but its quality is unpredictable."
)
CANCELLED_EMPTY = (
    "Tuning was cancelled by the user before the first step; the model has no tuned "
    "parameters."
)


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        executor: Executor | None = None,
        worker_id: str | None = None,
        poll_seconds: float = 0.5,
    ):
        self.settings = settings
        self.store = store or Store.open(settings)
        self.executor = executor or make_executor(settings)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_seconds = poll_seconds
        self.stop = threading.Event()
        self._storage_faults: dict[str, int] = {}  # model id → storage faults in a row

    def install_signal_handlers(self) -> None:
        def _stop(*_):
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self, once: bool = False) -> None:
        """Work until stopped (or, with ``once``, until the queue is empty)."""
        log.info("worker %s started", self.worker_id)
        self._remove_interrupted_writes()
        waits = 0
        while not self.stop.is_set():
            try:
                job = self.store.claim_job(self.worker_id, self.settings.lease_seconds)
            except Exception as e:
                fault = storage_fault(e)
                if fault is None:
                    raise
                waits += 1  # the database's disk is full or read-only: wait, do not crash
                log.warning("cannot claim a job: %s", fault.message)
                self.stop.wait(self._backoff(waits))
                continue
            waits = 0
            if job is None:
                if once:
                    return
                self.stop.wait(self.poll_seconds)
                continue
            self.run_job(job)
        log.info("worker %s stopped", self.worker_id)

    def run_job(self, job: JobRow) -> None:
        spec = JobSpec.from_dict(job.spec)
        lost = threading.Event()
        done = threading.Event()
        lease = self.settings.lease_seconds
        log.info("job %s (%s) claimed by %s", job.seq, spec.model_id, self.worker_id)

        def heartbeat() -> None:
            while not done.wait(lease / 3):
                try:
                    if not self.store.heartbeat(job.seq, self.worker_id, lease):
                        lost.set()
                        return
                except Exception:  # noqa: BLE001 - a database hiccup: try again next beat
                    log.exception("heartbeat failed")

        beat = threading.Thread(target=heartbeat, name=f"heartbeat-{job.seq}", daemon=True)
        beat.start()

        user_cancel = threading.Event()
        last_poll = [0.0]

        def should_cancel() -> bool:
            if self.stop.is_set() or lost.is_set() or user_cancel.is_set():
                return True
            now = time.monotonic()
            if now - last_poll[0] >= CANCEL_POLL_SECONDS:
                last_poll[0] = now
                state, cancel, owner = self.store.job_status(job.seq)
                if owner != self.worker_id or state != "running":
                    lost.set()
                    return True
                if cancel:
                    user_cancel.set()
                    return True
            return False

        def on_snapshot(s) -> None:
            self.store.put_snapshot(
                job.seq, spec.model_id, s.step, s.epoch, float(s.mean_loss), s.compute_time,
                total_steps=s.total_steps or None,  # a refit's length, once it is known
            )

        try:
            if not self.store.model_exists(spec.model_id):
                self._finish_deleted(job, spec)
                return
            if job.attempts > MAX_ATTEMPTS:
                self._fail(job, spec, INTERNAL, (
                    f"The tuning job was interrupted {job.attempts - 1} times (worker crashes "
                    "or restarts) and was given up. If workers run out of memory, lower "
                    "batchSize or use shorter examples, then create the model again."))
                return
            self.store.mark_started(spec.model_id, spec.total_steps)
            try:
                result = self.executor.run(spec, on_snapshot, should_cancel)
            except Exception as e:  # noqa: BLE001
                fault = storage_fault(e)
                if fault is not None:
                    self._defer(job, spec, fault)
                elif isinstance(e, TunelabError):
                    self._fail(job, spec, INVALID_ARGUMENT, e.message)
                else:
                    log.exception("job %s failed", job.seq)
                    self._fail(job, spec, INTERNAL, (
                        f"Tuning failed on the server ({type(e).__name__}); the server's log "
                        "has the details. Create the model again; if it fails the same way, "
                        "report it to the server's operator."))
                return
            self._storage_faults.pop(spec.model_id, None)
            if lost.is_set():
                log.warning("job %s: lease lost; leaving it to its new worker", job.seq)
                return
            if result.status == "completed":
                self.store.finish_job(job.seq, self.worker_id, model_state="ACTIVE")
                log.info("job %s completed (trained in %s)", job.seq, result.where)
                return
            if not user_cancel.is_set():  # we are shutting down: hand the job back
                self.store.release_job(job.seq, self.worker_id)
                log.info("job %s released for another worker", job.seq)
                return
            if not self.store.model_exists(spec.model_id):
                self._finish_deleted(job, spec)
                return
            if result.note:  # cancelled during a refit: the first run's model remains
                msg, state = result.note, "ACTIVE"
            elif result.adapter_dir is not None:
                msg = CANCELLED_ACTIVE.format(step=result.completed_steps, total=spec.total_steps)
                state = "ACTIVE"
            else:
                msg, state = CANCELLED_EMPTY, "FAILED"
            self.store.finish_job(
                job.seq,
                self.worker_id,
                model_state=state,
                cancelled=True,
                state_message=msg,
                error_code=CANCELLED,
                error_message=CANCEL_MESSAGE + " " + (result.note or msg.split(". ", 1)[-1])
                if state == "ACTIVE"
                else CANCEL_MESSAGE,
            )
            log.info("job %s cancelled", job.seq)
        finally:
            done.set()
            beat.join(timeout=5)

    def _backoff(self, faults: int) -> float:
        base = self.settings.storage_retry_seconds
        return min(base * 2 ** min(faults - 1, 20), max(base, MAX_STORAGE_RETRY_SECONDS))

    def _defer(self, job: JobRow, spec: JobSpec, fault: StorageUnavailable) -> None:
        """Hand the job back to the queue until the storage can take writes again."""
        faults = self._storage_faults.get(spec.model_id, 0) + 1
        self._storage_faults[spec.model_id] = faults
        delay = self._backoff(faults)
        reason = (
            f"Waiting for storage: {STORAGE_WAIT[fault.kind]}. The job is back in the queue "
            f"and is tried again automatically (next in about {delay:.0f} s); it resumes from "
            "its last saved checkpoint, so nothing saved is lost. If it keeps waiting, ask the "
            f"server's operator to {STORAGE_ASK[fault.kind]}."
        )
        log.warning("job %s: storage is %s; back in the queue for %.0f s", job.seq,
                    fault.kind, delay)
        try:
            self.store.defer_job(job.seq, self.worker_id, delay, reason)
        except Exception as e:  # noqa: BLE001 - the database is on the faulty storage too
            if storage_fault(e) is None:
                raise
            log.warning("job %s: cannot record the wait (%s); its lease will lapse", job.seq,
                        fault.kind)

    def _remove_interrupted_writes(self) -> None:
        """Remove the temporary folders that crashed writes (a ``kill -9`` mid-checkpoint)
        left in the output directories of jobs no worker is running now (a running job's
        worker does the same for its own directory when it resumes)."""
        from tunelab.training.checkpoint import remove_partial_writes

        root = self.settings.artifacts_dir / "tuned"
        if not root.is_dir():
            return
        try:
            running = {j.tuned_model_id for j in self.store.list_jobs() if j.state == "running"}
            for folder in root.iterdir():
                if folder.is_dir() and folder.name not in running:
                    remove_partial_writes(folder)
        except OSError as e:  # cleaning up is an optimisation: never a reason not to start
            log.warning("could not remove interrupted writes: %s", e.strerror)

    def _fail(self, job: JobRow, spec: JobSpec, code: int, message: str) -> None:
        if not self.store.model_exists(spec.model_id):
            self._finish_deleted(job, spec)
            return
        self.store.finish_job(
            job.seq, self.worker_id, model_state="FAILED", state_message=message,
            error_code=code, error_message=message,
        )

    def _finish_deleted(self, job: JobRow, spec: JobSpec) -> None:
        self.store.finish_job(job.seq, self.worker_id, model_state="FAILED",
                              error_message="deleted")
        shutil.rmtree(self.settings.artifacts_dir / spec.output_dir, ignore_errors=True)


def run_worker(settings: Settings, once: bool = False) -> None:
    """Entry point of ``tunelab worker`` and of the workers ``tunelab serve`` starts."""
    from tunelab.quiet import end_quickly, quiet_libraries

    quiet_libraries()
    worker = Worker(settings)
    worker.install_signal_handlers()
    supervisor = os.environ.get("TUNELAB_SUPERVISOR_PID")
    if supervisor:
        _watch_supervisor(int(supervisor), worker.stop)
    try:
        worker.run(once=once)
    finally:
        end_quickly()


def _watch_supervisor(pid: int, stop: threading.Event) -> None:
    """Stop (handing the running job back to the queue) once the process that started us is
    gone, so a killed `tunelab serve` leaves no orphan workers behind."""

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != pid:
                log.warning("the supervising process %s is gone; stopping", pid)
                stop.set()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
