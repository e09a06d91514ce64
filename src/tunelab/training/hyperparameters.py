"""Hyperparameters with Gemini's names and defaults, and the LoRA shape.

A field left unset is chosen from the data when the examples are known
(``Hyperparameters.resolve(..., examples)``, see ``training/auto.py``); Gemini's fixed defaults
below apply otherwise. A value the user gives is always used exactly.

Steps arithmetic: one optimizer step consumes ``batch_size`` examples (the last batch of an
epoch may be smaller), so ``total_steps = ceil(n_examples / batch_size) * epoch_count``.
With the defaults and 100 examples: ceil(100 / 4) * 5 = 125 steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tunelab.data.examples import Example
from tunelab.data.split import HOLD_OUT_MIN_TOTAL
from tunelab.errors import HyperparameterError, Problem
from tunelab.parameters import HyperparameterSettings, problems
from tunelab.training.auto import (
    MIN_LR_RATIO,
    REFIT_BELOW,
    DataShape,
    auto_batch_size,
    auto_epoch_count,
    auto_schedule,
    learning_rate_at,
    lora_shape,
    refits,
)

DEFAULT_EPOCH_COUNT = 5
DEFAULT_BATCH_SIZE = 4
DEFAULT_LEARNING_RATE = 0.001


@dataclass(frozen=True)
class Hyperparameters:
    """What a user may choose. Unset fields are chosen automatically; give ``learning_rate`` *or*
    ``learning_rate_multiplier`` (× the base model's recommended rate), not both."""

    epoch_count: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None
    # the LoRA rank a protocol asks for (Vertex's adapterSize); unset: chosen from the data
    lora_rank: int | None = None
    # False: the tuned model answers in free text even where its training outputs are labels
    # (catalog/labels.py); unset or True: a classifier answers with one of its labels
    answer_labels: bool | None = None

    def problems(self) -> list[Problem]:
        """Every problem at once, each naming its field; the limits are
        ``HyperparameterSettings``' (``tunelab/parameters.py``), the one source of them."""
        out = []
        if self.learning_rate is not None and self.learning_rate_multiplier is not None:
            out.append(
                Problem(
                    "give either learningRate or learningRateMultiplier, not both "
                    f"(got {self.learning_rate} and {self.learning_rate_multiplier})",
                    field="learningRateMultiplier",
                )
            )
        if self.lora_rank is not None and self.lora_rank < 1:
            out.append(Problem(f"must be a whole number of at least 1, got {self.lora_rank}",
                               field="loraRank"))
        values = {k: v for k, v in asdict(self).items()
                  if k not in ("lora_rank", "answer_labels")}
        return out + problems(HyperparameterSettings, values)

    def plans_refit(self, n_examples: int, validation_given: bool) -> bool:
        """Whether tuning on ``n_examples`` (none given for validation) will hold some out
        only to choose the epoch, then refit on all (``training/refit.py``): the split holds a
        third out then (``split_validation(..., for_refit=True)``)."""
        return (self.epoch_count is None and not validation_given
                and HOLD_OUT_MIN_TOTAL <= n_examples < REFIT_BELOW)

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise HyperparameterError(
                "Invalid hyperparameters: " + "; ".join(str(p) for p in problems) + "."
            )

    def resolve(
        self,
        recommended_learning_rate: float | None = None,
        examples: Sequence[Example] | None = None,
        *,
        validation: Sequence[Example] = (),
        held_out: int = 0,
    ) -> ResolvedHyperparameters:
        """The values to train with. Without ``examples``, unset fields take Gemini's fixed
        defaults; with them, tunelab chooses the unset fields from the data
        (``training/auto.py``: epochs, batch size, a warmup + cosine learning-rate schedule,
        the LoRA shape; which epoch is served depends on whether there are ``validation``
        examples, and whether a refit on every example follows on ``held_out``, the number of
        the user's examples held out for validation).
        Whether the outputs are a classifier's labels is decided here, once, on the examples
        and the ``validation`` ones, and kept in the plan for the schedule and the trainer.
        Given values are always used exactly."""
        self.validate()
        recommended = recommended_learning_rate or DEFAULT_LEARNING_RATE
        if self.learning_rate is not None:
            lr = self.learning_rate
        elif self.learning_rate_multiplier is not None:
            lr = self.learning_rate_multiplier * recommended
        else:
            lr = recommended
        if examples is None:
            rank = self.lora_rank or LoraSettings().rank
            return ResolvedHyperparameters(
                epoch_count=self.epoch_count or DEFAULT_EPOCH_COUNT,
                batch_size=self.batch_size or DEFAULT_BATCH_SIZE,
                learning_rate=lr,
                lora_rank=rank,
                lora_alpha=2 * rank,
                answer_labels=self.answer_labels is not False,
            )
        return self._auto(lr, DataShape.of(examples, validation), bool(validation), held_out)

    def _auto(self, lr: float, shape: DataShape, has_validation: bool,
              held_out: int) -> ResolvedHyperparameters:
        n = shape.example_count
        reasons, chosen = [], []
        batch = self.batch_size
        if batch is None:
            batch, why = auto_batch_size(shape)
            chosen.append("batch_size")
            reasons.append(f"batchSize {batch} (automatic): {why}.")
        else:
            reasons.append(f"batchSize {batch}: as given.")
        epochs = self.epoch_count
        refit = epochs is None and refits(n, held_out)
        if epochs is None:  # with a refit, for the served run: on every example
            epochs, why = auto_epoch_count(n + held_out if refit else n, batch)
            if refit:
                why += " -- counted on every example, which the served refit trains on"
            chosen.append("epoch_count")
            reasons.append(f"epochCount {epochs} (automatic): {why}.")
        else:
            reasons.append(f"epochCount {epochs}: as given.")
        total = total_steps(n, batch, epochs)
        # a classifier's labels, unless the user says its answers are free text
        labels = shape.labels if self.answer_labels is not False else ()
        warmup, decay = 0, "constant"
        if self.learning_rate is None and self.learning_rate_multiplier is None:
            warmup, decay = auto_schedule(len(labels), n + held_out, total)
            chosen.append("learning_rate")
            reasons.append(
                f"learningRate {lr:g} (automatic): the base model's recommended rate, constant "
                f"over all {total} steps, no warmup: the outputs are {len(labels)} labels, "
                "and a classifier learns its labels best at the full rate." if decay == "constant"
                else f"learningRate {lr:g} (automatic): the base model's recommended rate, "
                f"reached after {warmup} warmup step{'s' if warmup > 1 else ''} and decayed on "
                f"a cosine to {lr * MIN_LR_RATIO:g} at the last of {total} steps.")
        else:
            reasons.append(f"learningRate {lr:g}: as given, constant.")
        if self.lora_rank is not None:
            rank, alpha = self.lora_rank, 2 * self.lora_rank
            reasons.append(f"LoRA rank {rank}, alpha {alpha} on every linear layer: as given.")
        else:
            rank, alpha = lora_shape(n)
            reasons.append(f"LoRA rank {rank}, alpha {alpha} on every linear layer: "
                           f"{'1,000 or more' if rank > 8 else 'fewer than 1,000'} examples.")
        if refit:
            reasons.append(
                f"Served model: a refit (automatic). The epoch is chosen on the {held_out} "
                "held-out examples (the last, unless an earlier one scores better by more than "
                f"one example's worth); then a second run trains on all {n + held_out} "
                f"examples for as many epochs, and that run is served: below {REFIT_BELOW} "
                "examples, the held-out examples are too many to leave out of the served model.")
            chosen.append("refit")
        else:
            reasons.append(
                "Served epoch: the last, unless an earlier one scores better on the validation "
                "examples by more than one example's worth." if has_validation
                else "Served epoch: the last (no examples held out to score epochs on: below 40 "
                "examples every one is trained on).")
        if self.answer_labels is False:
            reasons.append("Answers: free text, as asked: even where the training outputs are "
                           "labels, an answer that is none of them is kept as the model wrote it, "
                           "and none is held to a fixed shape of theirs.")
        return ResolvedHyperparameters(epochs, batch, lr, warmup, decay, rank, alpha,
                                       tuple(reasons), tuple(chosen), refit,
                                       self.answer_labels is not False, labels)


@dataclass(frozen=True)
class ResolvedHyperparameters:
    """The values a run trains with. ``epoch_count``, ``batch_size`` and ``learning_rate``
    (the peak rate) are what the Gemini API reports (``to_dict``); the rest is tunelab's
    schedule, LoRA shape and stopping point, with one line per choice in ``reasons``."""

    epoch_count: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 0
    decay: str = "constant"  # "constant" | "cosine" (training/auto.py)
    lora_rank: int = 8
    lora_alpha: int = 16
    reasons: tuple[str, ...] = ()
    automatic: tuple[str, ...] = ()  # the fields tunelab chose
    # after choosing the epoch on held-out examples, train again on every example for as many
    # steps and serve that (training/refit.py)
    refit: bool = False
    # whether a classifier's answers are its labels where the outputs are labels
    # (catalog/labels.py); False only where the user turned it off
    answer_labels: bool = True
    # the labels (catalog/labels.py), decided once from the data when the plan is made: () where
    # the outputs are not labels or answers are free; None where the plan was made without the
    # data (Gemini's fixed values, a plan kept before this field), and the trainer decides
    labels: tuple[str, ...] | None = None

    def steps_per_epoch(self, n_examples: int) -> int:
        return math.ceil(n_examples / self.batch_size)

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimizer step ``step`` (1-based) of ``total``."""
        return learning_rate_at(step, total, self.learning_rate, self.warmup_steps, self.decay)

    def to_dict(self) -> dict:
        """Gemini's hyperparameters (what ``tuningTask.hyperparameters`` reports)."""
        return {"epoch_count": self.epoch_count, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate}

    def schedule(self) -> dict | None:
        """The learning-rate schedule, None for Gemini's (a constant rate): part of a run's
        identity (its checkpoints' fingerprint)."""
        if self.decay == "constant" and not self.warmup_steps:
            return None
        return {"warmup_steps": self.warmup_steps, "decay": self.decay,
                "min_lr_ratio": MIN_LR_RATIO if self.decay != "constant" else 1.0}

    def plan(self) -> dict:
        """Everything, as JSON (kept with a queued job, so a change of tunelab's choices
        cannot change a job that waits)."""
        d = asdict(self)
        d["reasons"], d["automatic"] = list(self.reasons), list(self.automatic)
        return d

    @classmethod
    def from_plan(cls, d: dict) -> ResolvedHyperparameters:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("reasons", "automatic"):
            known[k] = tuple(known.get(k) or ())
        if known.get("labels") is not None:
            known["labels"] = tuple(known["labels"])
        return cls(**known)


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
