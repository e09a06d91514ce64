"""Run training as a Ray task on a cluster (``TUNELAB_RAY_ADDRESS``).

The worker process stays what it always is: it claims a job from the database with a lease,
heartbeats it, writes each snapshot to the store and watches for a cancel request. Only the
training itself moves: it runs as one Ray task (on a GPU node when ``TUNELAB_RAY_NUM_GPUS`` asks
for one) through the same ``LocalExecutor`` code. The task and the worker talk through a small
actor: the task posts snapshots to it and asks it, before every step, whether to stop.

Ray ties a task's life to its owner: if the worker dies (``kill -9``), Ray ends the task, the
lease lapses, and another worker resumes the job from its last epoch checkpoint, exactly as with
local workers.

The task reads the dataset and writes checkpoints and the adapter under ``TUNELAB_HOME``'s
artifacts directory, so every Ray node must see that directory at the same path (a shared
filesystem), as remote ``tunelab worker`` processes must.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.fsutil import storage_fault
from tunelab.jobs.executors.base import ExecutionResult, JobSpec
from tunelab.training import Snapshot

POLL_SECONDS = 0.2
_remote: dict[str, Any] = {}  # the Ray task and actor classes, made once per process


def _ray_parts() -> tuple[Any, Any]:
    """(train task, channel actor class); Ray is imported only when an executor is used."""
    if _remote:
        return _remote["train"], _remote["channel"]
    import ray

    @ray.remote
    class Channel:
        def __init__(self) -> None:
            self.snapshots: list[dict] = []
            self.cancelled = False

        def post(self, snapshot: dict) -> None:
            self.snapshots.append(snapshot)

        def take(self) -> list[dict]:
            out, self.snapshots = self.snapshots, []
            return out

        def cancel(self) -> None:
            self.cancelled = True

        def should_stop(self) -> bool:
            return self.cancelled

    @ray.remote(max_retries=0)
    def train_task(settings: dict, spec: dict, channel: Any) -> ExecutionResult:
        from tunelab.jobs.executors.local import LocalExecutor

        executor = LocalExecutor(Settings(**settings))
        result = executor.run(
            JobSpec.from_dict(spec),
            on_snapshot=lambda s: ray.get(channel.post.remote(s.to_dict())),
            should_cancel=lambda: ray.get(channel.should_stop.remote()),
        )
        result.where = f"Ray node {ray.get_runtime_context().get_node_id()[:12]}"
        return result

    _remote.update(train=train_task, channel=Channel)
    return train_task, Channel


class RayExecutor:
    def __init__(self, settings: Settings):
        self.settings = settings

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise TunelabError(
                "TUNELAB_RAY_ADDRESS is set but Ray is not installed; install it with "
                "`pip install 'tunelab[ray]'`, or unset TUNELAB_RAY_ADDRESS to train in the "
                "worker processes.") from None
        if not ray.is_initialized():
            self._probe()
            try:
                ray.init(address=self.settings.ray_address, namespace="tunelab",
                         log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as e:
                raise _unreachable(self.settings.ray_address, e) from None
        return ray

    def _probe(self) -> None:
        """A plain TCP connect first: ray.init waits a long time for an address where nothing
        listens; a job should fail fast, saying what to fix."""
        import socket

        address = self.settings.ray_address or ""
        host, sep, port = address.removeprefix("ray://").rpartition(":")
        if not sep or not port.isdigit():
            return  # "auto" and the like: Ray finds the cluster itself
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise _unreachable(address, e.strerror or e) from None

    def run(
        self,
        spec: JobSpec,
        on_snapshot: Callable[[Snapshot], None],
        should_cancel: Callable[[], bool],
    ) -> ExecutionResult:
        ray = self._connect()
        train_task, channel_cls = _ray_parts()
        channel = channel_cls.remote()
        # The task builds its own Settings: the same data directory and database, and the
        # node's own device choice ("auto" picks the node's GPU).
        settings = self.settings.model_dump(exclude={"ray_address"})
        task = train_task.options(
            num_cpus=self.settings.ray_num_cpus, num_gpus=self.settings.ray_num_gpus,
        ).remote(settings, dataclasses.asdict(spec), channel)
        cancel_sent = False
        try:
            while True:
                done, _ = ray.wait([task], timeout=POLL_SECONDS)
                for snap in ray.get(channel.take.remote()):
                    on_snapshot(Snapshot.from_dict(snap))
                if done:
                    break
                if not cancel_sent and should_cancel():
                    channel.cancel.remote()
                    cancel_sent = True
            return _result(ray, task)
        finally:
            ray.kill(channel)


def _unreachable(address: str | None, why: object) -> TunelabError:
    return TunelabError(f"Cannot reach the Ray cluster at {address}: {why}. Start it "
                        "(`ray start --head`) or fix TUNELAB_RAY_ADDRESS.")


def _result(ray: Any, task: Any) -> ExecutionResult:
    """The task's result; a TunelabError raised in the task (bad data, a missing base model)
    comes back as itself, so the job fails with its message, and a full or read-only disk on
    the node as a storage fault, so the job waits in the queue instead of failing."""
    try:
        return ray.get(task)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        fault = storage_fault(cause) if isinstance(cause, BaseException) else None
        if fault is not None:
            raise fault from None
        if isinstance(cause, TunelabError):
            raise cause from None
        raise RuntimeError(f"the Ray training task failed: {cause or e}") from None
