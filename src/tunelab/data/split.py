"""The validation split: which examples score the tuned model instead of training it.

A user may give validation examples; otherwise, from ``HOLD_OUT_MIN_TOTAL`` examples on,
tunelab holds out 10% of them (at least ``HOLD_OUT_MIN``, at most ``HOLD_OUT_MAX``), chosen
with a fixed seed so the same data always gives the same split. Below that nothing is held
out: 32 examples minus 8 would leave too little to learn from, so the model is judged by its
training loss alone and every surface says so.

Arithmetic: 40 examples → 10% is 4, raised to 8 (32 train); 250 → 25 (225 train);
5,000 → 500, capped at 100 (4,900 train).

When a refit follows (``for_refit``: the trainer's choice, ``training/refit.py``), the held-out
examples only choose how long to train and give the scores, and the served model trains on all
of them: a third is held out then (100 → 33), so the scores rest on more examples and the
first run is shorter. When the first run's last epoch is served (the usual case), the served
model is the same whatever was held out: the refit trains on every example for the plan's
epochs; the share held out sets only the first run's length and what its scores rest on. A
quarter held out made a 100-example job 1.91× the steps of Gemini's fixed defaults (95 + 125
against 115), a third makes it 1.83× (85 + 125), keeping the job's time under twice theirs
with a margin for the scoring (``training/refit.py``).

An input given more than once is held out with all its copies or not at all (``_held_apart``):
a copy on each side would score memory, not how the model answers new inputs. And where the
outputs are a set of labels, no label is held out whole (``_labels_kept``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tunelab.data.examples import Example
from tunelab.errors import Problem

HOLD_OUT_MIN_TOTAL = 40
HOLD_OUT_FRACTION = 0.10
REFIT_HOLD_OUT_FRACTION = 1 / 3
HOLD_OUT_MIN = 8
HOLD_OUT_MAX = 100
# The held-out examples depend only on the data, never on the training seed: re-tuning with
# another seed is scored on the same examples, so the scores can be compared.
SPLIT_SEED = 20240
# Evaluation runs at every epoch on a CPU: a given validation set is cut to this many examples.
MAX_VALIDATION = 100

HELD_OUT, GIVEN, NONE = "HELD_OUT", "GIVEN", "NONE"


@dataclass
class Split:
    """Training and validation examples, and a record of how they were chosen."""

    train: list[Example]
    validation: list[Example]
    source: str  # HELD_OUT | GIVEN | NONE
    held_out: list[int] = field(default_factory=list)  # 1-based numbers in the given data
    warnings: list[Problem] = field(default_factory=list)
    for_refit: bool = False  # held out only to choose the epoch: a refit trains on all

    @property
    def message(self) -> str:
        """One sentence for every surface (CLI, API, Studio) on where the scores come from."""
        n = len(self.validation)
        if self.source == HELD_OUT and self.for_refit:
            total = n + len(self.train)
            return (
                f"{n} of the {total} examples were held out for validation (a third, fixed "
                "seed): each epoch is scored on them to choose how long to train; then a refit "
                f"on all {total} examples is served.")
        if self.source == HELD_OUT:
            return (
                f"{n} of the {n + len(self.train)} examples were held out for validation "
                "(10%, fixed seed) and are not trained on; each epoch is scored on them."
            )
        if self.source == GIVEN:
            return f"Each epoch is scored on the {n} validation examples given."
        return (
            f"No validation examples: {len(self.train)} examples are fewer than "
            f"{HOLD_OUT_MIN_TOTAL}, so none were held out and the epochs are judged by the "
            "training loss alone. Give validation examples to get scores."
        )

    @property
    def examples(self) -> list[Example]:
        """Every example given for training, in the given order (a refit trains on them)."""
        return rejoin(self.train, self.validation, self.held_out)

    def record(self) -> dict:
        """What the model's record keeps: JSON, without the examples themselves."""
        return {
            "source": self.source,
            "example_count": len(self.validation),
            "held_out": self.held_out,
            "message": self.message,
            "warnings": [str(w) for w in self.warnings],
        }


def hold_out_count(n: int, for_refit: bool = False) -> int:
    """How many of ``n`` examples are held out when no validation examples are given."""
    if n < HOLD_OUT_MIN_TOTAL:
        return 0
    fraction = REFIT_HOLD_OUT_FRACTION if for_refit else HOLD_OUT_FRACTION
    return max(HOLD_OUT_MIN, min(HOLD_OUT_MAX, round(n * fraction)))


def split_validation(examples: list[Example], given: list[Example] | None = None, *,
                     for_refit: bool = False) -> Split:
    """Split ``examples`` into training and validation examples.

    With ``given`` validation examples, every example trains and ``given`` (at most
    ``MAX_VALIDATION`` of them) validates. Otherwise ``hold_out_count`` examples are held out,
    chosen by a fixed seed; the training examples keep their order. ``for_refit``: a refit on
    every example follows (``Hyperparameters.plans_refit``), so a third is held out.
    """
    if given:
        validation = list(given[:MAX_VALIDATION])
        warnings = duplicate_warnings(examples, validation)
        if len(given) > MAX_VALIDATION:
            warnings.append(Problem(
                f"{len(given)} validation examples were given; the first {MAX_VALIDATION} are "
                "used, so that scoring every epoch stays quick", "validation data"))
        return Split(list(examples), validation, GIVEN, [], warnings)
    k = hold_out_count(len(examples), for_refit)
    if k == 0:
        return Split(list(examples), [], NONE)
    groups = _input_groups(examples)
    chosen = _labels_kept(examples, groups, _held_apart(
        examples, groups, random.Random(SPLIT_SEED).sample(range(len(examples)), k)))
    picked = set(chosen)
    train = [ex for i, ex in enumerate(examples) if i not in picked]
    validation = [examples[i] for i in chosen]
    return Split(train, validation, HELD_OUT, [i + 1 for i in chosen],
                 duplicate_warnings(train, validation), for_refit)


def _input_key(ex: Example) -> tuple:
    """What makes two examples the same input (``duplicate_warnings`` compares them so)."""
    return (ex.system, ex.text_input.strip())


def _input_groups(examples: list[Example]) -> dict[tuple, list[int]]:
    """Each input (``_input_key``) and the indices of the examples that give it."""
    groups: dict[tuple, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(_input_key(ex), []).append(i)
    return groups


def _refill(groups: dict[tuple, list[int]], held: set[int], count: int, seed: int,
            admit: Callable[[list[int]], bool] = lambda members: True) -> None:
    """Hold out more inputs, each with all its copies, in an order drawn from ``seed``, where
    they fit in ``count`` and ``admit`` lets them (which, letting them, records them taken)."""
    rest = [members for members in groups.values() if not held.intersection(members)]
    random.Random(seed).shuffle(rest)
    for members in rest:
        if len(held) + len(members) <= count and admit(members):
            held.update(members)


def _held_apart(examples: list[Example], groups: dict[tuple, list[int]],
                drawn: list[int]) -> list[int]:
    """The examples to hold out (their indices, in order): ``drawn``, with no input on both
    sides (``groups``: ``_input_groups``). Data often repeats an input (a copied line, the same
    question with two phrasings of one answer); held out on one side and trained on the other,
    it scores what the model memorised and pulls the epoch chosen later. So an input is held
    out with all its copies or not at all: a drawn example whose input is also among the
    trained ones goes back to training with its copies, and inputs not drawn, in an order drawn
    from the same seed, take its place, each with all its copies, where they fit in the count.
    Data without repeated inputs keeps the split ``drawn`` gives, as before."""
    held = set(drawn)
    for key in {_input_key(examples[i]) for i in drawn}:
        members = groups[key]
        if any(i not in held for i in members):
            held.difference_update(members)
    if len(held) < len(drawn):
        _refill(groups, held, len(drawn), SPLIT_SEED + 1)
    # every input repeated across the whole data (no group fits): the draw, and its warning
    return sorted(held) or sorted(drawn)


def _labels_kept(examples: list[Example], groups: dict[tuple, list[int]],
                 held: list[int]) -> list[int]:
    """The examples to hold out (their indices, in order): ``held``, with every output of a
    set of labels still trained on. Where the outputs are a classifier's labels (the rule of
    ``catalog/labels.py`` on every example), a draw can hold out every example of a rare
    label; the first run could then never learn it, its held-out examples would score that
    alone, and a held-out output no training example has makes the data no classifier's
    (``catalog/labels.py``: the labels are the training outputs). So one example of such an
    output goes back to training, and other examples take its place, in an order drawn from
    the same seed, where they fit in the count without leaving an output (or an input,
    ``_held_apart``) on one side only. Data whose outputs are not labels (an extraction's
    values may well be new at validation: that is what it is scored on), or whose draw holds
    out no label whole, keeps the split ``held`` gives."""
    from tunelab.catalog.labels import answer_labels

    outputs = [ex.output.strip() for ex in examples]
    if answer_labels([ex.text_input for ex in examples], outputs) is None:
        return held
    kept = set(held)
    trained = Counter(o for i, o in enumerate(outputs) if i not in kept)
    for i in sorted(held):
        if i in kept and trained[outputs[i]] == 0:  # every example of it held out
            members = [j for j in groups[_input_key(examples[i])] if j in kept]
            kept.difference_update(members)  # back to training, with its input's copies
            trained.update(outputs[j] for j in members)
    if len(kept) == len(held):
        return held

    def leaves_each_label_trained(members: list[int]) -> bool:
        leaving = Counter(outputs[i] for i in members)
        if any(trained[o] <= n for o, n in leaving.items()):
            return False
        trained.subtract(leaving)
        return True

    _refill(groups, kept, len(held), SPLIT_SEED + 2, leaves_each_label_trained)
    return sorted(kept)


def rejoin(train: list[Example], validation: list[Example], held_out: list[int]) -> list[Example]:
    """The examples as given: ``train`` with the held-out ``validation`` examples back at their
    numbers (``held_out``, 1-based, as ``Split.held_out``); ``train`` alone when none were
    held out (given validation examples are not the user's training examples)."""
    out = list(train)
    if not held_out:
        return out
    for number, ex in sorted(zip(held_out, validation, strict=True), key=lambda p: p[0]):
        out.insert(number - 1, ex)
    return out


def duplicate_warnings(train: list[Example], validation: list[Example]) -> list[Problem]:
    """Validation inputs that are also training inputs score memory, not generalisation."""
    seen = {_input_key(ex) for ex in train}
    dups = [i + 1 for i, ex in enumerate(validation) if _input_key(ex) in seen]
    if not dups:
        return []
    shown = ", ".join(map(str, dups[:10])) + (f" and {len(dups) - 10} more" if len(dups) > 10
                                              else "")
    return [Problem(
        f"{len(dups)} of {len(validation)} validation inputs also appear in the training data "
        f"(validation examples {shown}); their scores show what the model memorised, not how it "
        "answers new inputs. Remove them from one of the two sets", "validation data")]
