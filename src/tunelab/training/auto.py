"""Automatic settings: what tunelab chooses for the hyperparameters a user leaves unset.

Gemini's fixed defaults (5 epochs, batch 4, a constant learning rate) give a 20-example
dataset 25 optimizer steps, and its loss is still falling when training stops (a 6-way
classifier tuned so is right less than half the time). The Gemini API itself chose batch size
and rate by dataset size, and OpenAI's ``"auto"`` chooses the epochs. tunelab chooses from the
number of training examples ``n`` and their mean length; a value the user gives is used exactly.

The arithmetic (``b`` the batch size, ``spe = ceil(n / b)`` steps per epoch):

- **batch size**: 4 below 1,000 examples, 8 below 5,000, 16 from 5,000 (Gemini's "4 or 16 by
  size", with a step between); halved (at least 2) when examples average 2,000 characters
  (~500 tokens) or more, since each step then carries that many tokens already.
- **epochs**: below 100 examples, enough epochs for ``TARGET_STEPS`` (100) steps, at least 5 and
  at most 20 -- 20 examples: spe 5, 20 epochs = 100 steps; 50: spe 13, 8 epochs = 104 steps.
  From 100 examples (spe ≥ 25, 125+ steps with 5 epochs) Gemini's 5, so a dataset of 100 or
  more never trains longer than with the fixed defaults.
- **learning rate**: the base model's recommended rate as the peak, reached after a linear
  warmup over 6% of the steps (at least 1, at most ``MAX_WARMUP_STEPS``, 10) and decayed on a
  cosine to 10% of the peak at the last step -- 100 steps: 6 warmup steps, 0.001 → 0.0001;
  565 steps (500 examples): 10 warmup steps. The warmup is there to let AdamW's moment
  estimates settle before the full rate; that takes a number of steps, not a share of the
  run: 34 warmup steps at 500 examples (6%) cost the quality benchmark's ``orders`` a tenth of
  its answers (0.91 against 1.00 with 10 on one seed, docs/quality.md), and 10 steps scored
  ``entities`` higher too (0.84 against 0.78; no warmup at all: 0.48). The rate of a step is
  a function of the step number alone (``lr_at``), so a run resumed from a checkpoint takes
  the same steps.
  **A classifier's schedule is constant**: where the training outputs are a closed set of
  labels (``catalog/labels.py``, the rule that makes a tuned classifier answer with its labels),
  the peak rate from the first step to the last, no warmup and no decay. A label is one short
  answer learnt from a few words of each input, and measured on three classifiers (the quality
  benchmark's ``intent`` and ``reviews``, and a 5-team ``routing`` task from outside the suite;
  three seeds a cell, docs/quality.md) the warmup and the decay left them undertrained: at 20
  examples ``reviews`` 0.81 → 0.89 and ``routing`` 0.57 → 0.71 (``intent`` 0.73 → 0.71), at 50
  ``intent`` 0.82 → 0.86, at 80–100 ``reviews`` 0.94 → 0.99 and ``routing`` 0.71 → 0.95
  (``intent`` 0.897 → 0.893): +0.07 on the mean of eight cells. Below ``CONSTANT_BELOW``
  (250) examples only: at 500 (565 steps, no refit) ``reviews`` scored 0.89 with a constant
  rate against 1.00 with the warmup and the cosine (``intent`` 0.90 against 0.88; one seed
  each), so a long run keeps its decay. The tasks that copy or rewrite their input
  (``entities``: 0.78 → 0.71 at 100) keep the warmup and the decay, and so do labels the user
  says are free text (``answer_labels`` off: an open set the rule took for labels).
  A learning rate the user gives (or a multiplier) is used as given, constant, as Gemini does.
- **LoRA shape**: rank 8 (alpha 16) on every linear layer below 1,000 examples, rank 16
  (alpha 32) from 1,000: more examples can fill more directions.
- **stopping point**: the epochs above, the last epoch served, unless validation examples are
  held out (from 40 examples, ``data/split.py``): then the last unless an earlier one scored
  better on them by more than one example's worth (``advice.py``). Below
  40 nothing is held out. An earlier version ran a first run that held out a fifth of the
  examples (at least 4) to choose the epoch, then trained on all of them; measured on the quality
  benchmark's 12-way ``intent`` task at 20 examples it scored the 4 held-out examples equally from
  epoch 5 to 20 (four examples cannot tell epochs apart), served epoch 5 (0.54 on 100 unseen
  inputs) where the last epoch scores 0.56, and doubled the training time (docs/quality.md).
- **refit** (``refit.py``): from 40 examples to below ``REFIT_BELOW`` (250), when the epochs
  are automatic (``Hyperparameters.plans_refit``), the held-out run only chooses the stopping
  epoch; a second run then trains on every example for that many epochs, on the plan's
  schedule, and is served. Holding 10 of 100 examples out cost the quality benchmark's
  ``intent`` 0.07 and ``qa`` 0.04 (three seeds each, docs/quality.md). As the first run only
  chooses, it holds a third out (``data/split.py``: 33 of 100, the scores on more examples)
  and the epochs are counted on every example (the served run's): at 100 examples 5 epochs of 67
  then at most 5 of 100, 210 steps against Gemini's fixed defaults' 115 (5 epochs of the 90
  they train on), 1.83×; at most 1.90× up to 249 (holding a tenth out took 2.09×, a quarter
  1.91–1.96×, which the epochs' scoring took over 2× in time on one task).
  From 250 examples the held-out tenth is 25 or more examples the model can spare, and the
  time is not doubled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.catalog.labels import answer_labels
from tunelab.data.examples import Example

TARGET_STEPS = 100
MIN_AUTO_EPOCHS = 5
MAX_AUTO_EPOCHS = 20
SMALL_DATASET = 100  # below: epochs chosen for TARGET_STEPS
LONG_EXAMPLE_CHARS = 2_000
WARMUP_FRACTION = 0.06
MAX_WARMUP_STEPS = 10
MIN_LR_RATIO = 0.1
LARGE_DATASET = 1_000  # from here: batch 8 and LoRA rank 16
HUGE_DATASET = 5_000  # from here: batch 16
REFIT_BELOW = 250  # a refit on every example below this many (with some held out)
CONSTANT_BELOW = 250  # a classifier's rate is constant below this many examples


@dataclass(frozen=True)
class DataShape:
    """What the automatic choices depend on: how many training examples, how long, and the
    labels their outputs are (none: not a classifier's, ``catalog/labels.py``)."""

    example_count: int
    mean_chars: float
    labels: tuple[str, ...] = ()  # the classifier's labels, () where the outputs are not labels

    @classmethod
    def of(cls, examples: Sequence[Example], validation: Sequence[Example] = ()) -> DataShape:
        """``validation``: the examples that score the epochs; their outputs take part in the
        label rule (``catalog/labels.py``), as they do for the trainer, which reads the labels
        from the plan: one decision for the schedule and the answers."""
        n = len(examples)
        chars = sum(len(ex.text_input) + len(ex.output) + len(ex.system or "") for ex in examples)
        labels = answer_labels([ex.text_input for ex in examples], [ex.output for ex in examples],
                               [ex.output for ex in validation])
        return cls(n, chars / n if n else 0.0, tuple(labels or ()))


def auto_batch_size(shape: DataShape) -> tuple[int, str]:
    n = shape.example_count
    batch, why = (4, "fewer than 1,000 examples") if n < LARGE_DATASET else (
        (8, "1,000 to 5,000 examples") if n < HUGE_DATASET else (16, "5,000 or more examples"))
    if shape.mean_chars >= LONG_EXAMPLE_CHARS and batch > 2:
        batch //= 2
        why += f", halved for long examples (~{shape.mean_chars:,.0f} characters on average)"
    return batch, why


def auto_epoch_count(n: int, batch_size: int) -> tuple[int, str]:
    spe = math.ceil(n / batch_size)
    if n >= SMALL_DATASET:
        return MIN_AUTO_EPOCHS, (f"{n} examples make {spe} steps an epoch; 5 epochs "
                                 f"({5 * spe} steps) as Gemini's default")
    epochs = min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, math.ceil(TARGET_STEPS / spe)))
    return epochs, (f"{n} examples make {spe} steps an epoch at batch size {batch_size}; "
                    f"{epochs} epochs give {epochs * spe} steps (a small dataset needs about "
                    f"{TARGET_STEPS}; Gemini's fixed 5 epochs would give {5 * spe})")


def lora_shape(n: int) -> tuple[int, int]:
    rank = 16 if n >= LARGE_DATASET else 8
    return rank, 2 * rank


def refits(n_train: int, held_out: int) -> bool:
    """Whether a run on ``n_train`` examples, ``held_out`` more held out for validation, is
    followed by a refit on all of them (when its epochs are automatic)."""
    return held_out > 0 and n_train + held_out < REFIT_BELOW


def auto_schedule(label_count: int, n: int, total: int) -> tuple[int, str]:
    """The warmup steps and the decay of an automatic learning rate over ``total`` steps for
    ``n`` examples whose outputs are ``label_count`` labels (0: not labels): a classifier's is
    constant below ``CONSTANT_BELOW`` examples (module docstring)."""
    if label_count and n < CONSTANT_BELOW:
        return 0, "constant"
    return warmup_steps(total), "cosine"


def warmup_steps(total: int) -> int:
    return max(1, min(MAX_WARMUP_STEPS, round(WARMUP_FRACTION * total)))


def learning_rate_at(step: int, total: int, peak: float, warmup: int, decay: str) -> float:
    """The rate of optimizer step ``step`` (1-based) of ``total``: a pure function of the step
    (resume takes exactly the steps an uninterrupted run takes)."""
    if decay == "constant" and warmup == 0:
        return peak
    if warmup and step <= warmup:
        return peak * step / warmup
    if decay != "cosine":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))
