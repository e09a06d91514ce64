"""The executor protocol: run a job's training, report snapshots, stop when asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tunelab.training import Snapshot


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run a job, as stored in the queue (paths relative to the
    artifacts directory, hyperparameters already resolved)."""

    model_id: str
    base_model: str
    dataset: str
    output_dir: str
    epoch_count: int
    batch_size: int
    learning_rate: float
    seed: int
    total_steps: int
    validation_dataset: str | None = None  # examples scored after each epoch (data/split.py)
    validation: dict | None = None  # how they were chosen, kept with the scores
    # every setting the run uses and why (training/auto.py); None: queued by an older version
    plan: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> JobSpec:
        """Jobs queued by an older version lack the fields that have defaults."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class ExecutionResult:
    status: str  # "completed" | "cancelled"
    adapter_dir: Path | None  # None when no parameters were learned
    completed_steps: int
    where: str = "this worker process"  # where the training ran, for the worker's log
    # what the model keeps when the cancel came during a refit (training/refit.py)
    note: str | None = None


class Executor(Protocol):
    def run(
        self,
        spec: JobSpec,
        on_snapshot: Callable[[Snapshot], None],
        should_cancel: Callable[[], bool],
    ) -> ExecutionResult:
        """Train (resuming from checkpoints in the output directory); raise TunelabError
        for a user-fixable failure, anything else for an internal one."""
        ...
