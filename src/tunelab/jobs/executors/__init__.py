"""Executors run one tuning job somewhere: ``local`` (in the worker process) or ``ray_cluster``
(a Ray task on a cluster, when ``TUNELAB_RAY_ADDRESS`` is set).

Every executor has the same shape (``base.Executor``); the worker picks one from settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunelab.jobs.executors.base import ExecutionResult, Executor, JobSpec

if TYPE_CHECKING:
    from tunelab.config import Settings


def make_executor(settings: Settings) -> Executor:
    if settings.ray_address:
        from tunelab.jobs.executors.ray_cluster import RayExecutor

        return RayExecutor(settings)
    from tunelab.jobs.executors.local import LocalExecutor

    return LocalExecutor(settings)


__all__ = ["ExecutionResult", "Executor", "JobSpec", "make_executor"]
