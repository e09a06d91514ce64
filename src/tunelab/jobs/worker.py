"""The worker: claim a job from the queue, train it, record the outcome.

Leases: a claimed job belongs to its worker while the lease is fresh; a heartbeat thread
renews it every ``lease_seconds / 3``. If the worker dies (``kill -9``) the lease lapses and
any worker claims the job again; training resumes from the last epoch checkpoint and reports
the remaining steps again (snapshots are upserted by step, so nothing is duplicated).

Stopping: SIGTERM/SIGINT ask the worker to stop; the running job stops within a step and goes
back to the queue (keeping its place), to resume from its checkpoint.
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
from tunelab.jobs.executors import Executor, JobSpec, make_executor
from tunelab.jobs.service import CANCEL_MESSAGE
from tunelab.store import JobRow, Store
from tunelab.store.repo import CANCELLED, INTERNAL, INVALID_ARGUMENT

log = logging.getLogger("tunelab.worker")

# How often a running job looks at the database for a cancel request (at most; it looks
# before each step). Cheap: one primary-key read.
CANCEL_POLL_SECONDS = 0.2

# A job claimed this many times (worker crashes, restarts) is failed instead of retried
# forever: something about it kills its workers (out of memory, for example).
MAX_ATTEMPTS = 10

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

    def install_signal_handlers(self) -> None:
        def _stop(*_):
            self.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self, once: bool = False) -> None:
        """Work until stopped (or, with ``once``, until the queue is empty)."""
        log.info("worker %s started", self.worker_id)
        while not self.stop.is_set():
            job = self.store.claim_job(self.worker_id, self.settings.lease_seconds)
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
                job.seq, spec.model_id, s.step, s.epoch, float(s.mean_loss), s.compute_time
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
            except TunelabError as e:
                self._fail(job, spec, INVALID_ARGUMENT, e.message)
                return
            except Exception as e:  # noqa: BLE001
                log.exception("job %s failed", job.seq)
                self._fail(job, spec, INTERNAL, f"Tuning failed: {type(e).__name__}: {e}")
                return
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
            if result.adapter_dir is not None:
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
                error_message=CANCEL_MESSAGE + " " + msg.split(". ", 1)[-1]
                if state == "ACTIVE"
                else CANCEL_MESSAGE,
            )
            log.info("job %s cancelled", job.seq)
        finally:
            done.set()
            beat.join(timeout=5)

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
    from tunelab.quiet import quiet_libraries

    quiet_libraries()
    worker = Worker(settings)
    worker.install_signal_handlers()
    supervisor = os.environ.get("TUNELAB_SUPERVISOR_PID")
    if supervisor:
        _watch_supervisor(int(supervisor), worker.stop)
    worker.run(once=once)


def _watch_supervisor(pid: int, stop: threading.Event) -> None:
    """Stop (handing the running job back to the queue) once the process that started us is
    gone, so a killed `tunelab serve` leaves no orphan workers behind."""

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != pid:
                log.warning("the supervising process %s is gone; stopping", pid)
                stop.set()

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
