"""Hyperparameters with Gemini's names and defaults, and the LoRA shape.

Steps arithmetic: one optimizer step consumes ``batch_size`` examples (the last batch of an
epoch may be smaller), so ``total_steps = ceil(n_examples / batch_size) * epoch_count``.
With the defaults and 100 examples: ceil(100 / 4) * 5 = 125 steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tunelab.errors import HyperparameterError, Problem

DEFAULT_EPOCH_COUNT = 5
DEFAULT_BATCH_SIZE = 4
DEFAULT_LEARNING_RATE = 0.001
MAX_EPOCH_COUNT = 1000
MAX_BATCH_SIZE = 512


@dataclass(frozen=True)
class Hyperparameters:
    """What a user may choose. Unset fields take the defaults; give ``learning_rate`` *or*
    ``learning_rate_multiplier`` (× the base model's recommended rate), not both."""

    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None

    def problems(self) -> list[Problem]:
        """Every problem at once, each naming its field."""
        out = []
        if self.learning_rate is not None and self.learning_rate_multiplier is not None:
            out.append(
                Problem(
                    "give either learningRate or learningRateMultiplier, not both "
                    f"(got {self.learning_rate} and {self.learning_rate_multiplier})",
                    field="learningRateMultiplier",
                )
            )
        checks = [
            ("epochCount", self.epoch_count, 1, MAX_EPOCH_COUNT),
            ("batchSize", self.batch_size, 1, MAX_BATCH_SIZE),
        ]
        for name, value, lo, hi in checks:
            if value is not None and (not isinstance(value, int) or not lo <= value <= hi):
                out.append(
                    Problem(f"must be a whole number from {lo} to {hi}, got {value!r}", field=name)
                )
        for name, value in (
            ("learningRate", self.learning_rate),
            ("learningRateMultiplier", self.learning_rate_multiplier),
        ):
            if value is not None and (not math.isfinite(value) or value <= 0 or value > 1000):
                out.append(Problem(f"must be a positive number, got {value!r}", field=name))
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise HyperparameterError(
                "Invalid hyperparameters: " + "; ".join(str(p) for p in problems) + "."
            )

    def resolve(self, recommended_learning_rate: float | None = None) -> ResolvedHyperparameters:
        self.validate()
        if self.learning_rate is not None:
            lr = self.learning_rate
        elif self.learning_rate_multiplier is not None:
            lr = self.learning_rate_multiplier * (
                recommended_learning_rate or DEFAULT_LEARNING_RATE
            )
        else:
            lr = recommended_learning_rate or DEFAULT_LEARNING_RATE
        return ResolvedHyperparameters(
            epoch_count=self.epoch_count or DEFAULT_EPOCH_COUNT,
            batch_size=self.batch_size or DEFAULT_BATCH_SIZE,
            learning_rate=lr,
        )


@dataclass(frozen=True)
class ResolvedHyperparameters:
    epoch_count: int
    batch_size: int
    learning_rate: float

    def steps_per_epoch(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size)

    def to_dict(self) -> dict:
        return asdict(self)


def total_steps(n_examples: int, batch_size: int, epoch_count: int) -> int:
    return math.ceil(n_examples / batch_size) * epoch_count


@dataclass(frozen=True)
class LoraSettings:
    """LoRA shape. Rank 8 on every linear layer of the blocks: a 135M model gets ~2.4M
    trainable parameters (~9 MB of fp32 adapter), enough to learn a format from 100 examples."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0  # no dropout: runs are deterministic, so resume == uninterrupted
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d
