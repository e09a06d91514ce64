"""The LoRA trainer: loop, loss, snapshots, checkpoints, cancel, resume, epoch advice.

Knows nothing about HTTP or SQL: it takes examples, a loaded base model and hyperparameters,
and reports progress through callbacks.
"""

from tunelab.training.advice import EpochAdvice, advise_epoch
from tunelab.training.checkpoint import (
    adapter_path,
    list_checkpoints,
    read_manifest,
)
from tunelab.training.hyperparameters import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCH_COUNT,
    DEFAULT_LEARNING_RATE,
    Hyperparameters,
    LoraSettings,
    ResolvedHyperparameters,
    total_steps,
)
from tunelab.training.loop import Snapshot, TrainResult, plan_batches, train
from tunelab.training.refit import select_epoch, select_refit

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCH_COUNT",
    "DEFAULT_LEARNING_RATE",
    "EpochAdvice",
    "Hyperparameters",
    "LoraSettings",
    "ResolvedHyperparameters",
    "Snapshot",
    "TrainResult",
    "adapter_path",
    "advise_epoch",
    "list_checkpoints",
    "plan_batches",
    "read_manifest",
    "select_epoch",
    "select_refit",
    "total_steps",
    "train",
]
