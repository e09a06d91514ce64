"""What one contender reports, and the measurements every contender takes the same way."""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    """One contender's run, written by its process as JSON and read by the driver.

    ``tokens`` are the real (unpadded) prompt + output tokens of every example processed, summed
    over all steps; ``train_seconds`` is the training loop only (model loading and tokenizing
    excluded); ``fingerprint`` is ``data.fingerprint`` of the rows the contender trained on;
    ``heldout_loss`` is filled in by the driver from the held-out evaluation (``heldout.py``)."""

    contender: str
    precision: str  # what the frozen weights and matmuls ran in, in words
    settings: dict[str, Any]  # optimizer, gradient checkpointing, learning-rate schedule, ...
    tokens: int
    examples: int
    steps: int
    steps_per_epoch: int
    train_seconds: float
    step_losses: list[float]
    fingerprint: str
    threads: int
    peak_rss_bytes: int = 0
    heldout_loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def last_epoch_train_loss(self) -> float:
        """The plain mean of the last epoch's step losses. Not comparable between contenders
        that batch differently (a step of short examples weighs as much as one of long ones):
        the held-out loss is."""
        last = self.step_losses[-self.steps_per_epoch:]
        return sum(last) / len(last) if last else math.nan

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.train_seconds if self.train_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(last_epoch_train_loss=self.last_epoch_train_loss,
                 tokens_per_second=self.tokens_per_second,
                 examples_per_second=self.examples_per_second)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far. On Linux the high-water mark of its own
    memory (``VmHWM``): ``ru_maxrss`` also counts the process it was started from, whose
    memory the new process shared until it ran its program (a driver that had converted a
    base model, 3.4 GB, gave every contender that floor). Elsewhere ``ru_maxrss`` (macOS
    reports bytes, others KiB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def warm_up(model: Any, device: str) -> None:
    """One untimed forward + backward of 16 tokens through the contender's own model, so the
    timed loop does not pay the process's one-off costs (thread pool start, first kernels).

    The gradient is taken for detached input embeddings alone, so this works whether or not
    any weight is trainable, and no weight gets a gradient: ``backward()`` would give every
    weight of a model whose weights all require one (tunelab's base before its adapter is
    made) a gradient as large as the model, a peak in RSS (+510 MB) no training step has."""
    import torch

    ids = torch.arange(16, device=device).unsqueeze(0) + 10
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    with torch.enable_grad():
        torch.autograd.grad(model(inputs_embeds=embeds, labels=ids).loss, [embeds])


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)
