"""Epoch advice: the best epoch from validation scores, else where the training loss plateaus.

With validation examples (``data/split.py``), the advice is evidence: the last epoch, unless an
earlier one beats its validation score by more than one validation example's worth, and then
the best of those (ties: the later); and by how much it beats the last epoch and the base model
(``advise_from_scores``). The tuned model serves that epoch.

Why not simply the highest score: a few validation examples cannot tell close epochs apart, and
the earliest of near-equal epochs is the wrong guess. On the quality benchmark's ``dates`` task
at 100 examples (10 held out, automatic settings: warmup and cosine decay over 5 epochs) epoch 2
scored 0.98 token F1 on validation against 0.96 for epochs 3 to 5 -- a fraction of one example
-- and served 0.86 exact match on 100 unseen inputs where epochs 4 and 5 score 0.95; on ``intent``
at 20 examples four held-out examples scored epochs 5 to 20 alike and the earliest served 0.54
where the last scores 0.56 (docs/quality.md). A later epoch has trained longer at a decaying
rate; an earlier one is served when the validation examples say clearly that it is better.

Without validation examples the advice falls back on the training loss, and says so:

The Gemini tuning guide advises stopping at the lowest point just before the loss plateaus.
Rule used here: an epoch is still "paying off" while the next epoch lowers the mean loss by
more than ``PLATEAU_FRACTION`` of the whole drop seen so far (first epoch to best epoch).
The advised epoch is the first one after which the curve stops paying off.

Example: epoch losses 3.0, 1.5, 0.8, 0.75, 0.74 → total drop 2.26, threshold 0.226;
the drops are 1.5, 0.7, 0.05, 0.01 → the curve flattens after epoch 3 → advise epoch 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PLATEAU_FRACTION = 0.10


VALIDATION, TRAINING_LOSS = "validation", "training_loss"


@dataclass(frozen=True)
class EpochAdvice:
    epoch: int  # 1-based
    plateaued: bool
    message: str
    basis: str = TRAINING_LOSS  # what the advice rests on: VALIDATION or TRAINING_LOSS
    score: float | None = None  # the advised epoch's validation score
    over_last: float | None = None  # score minus the last epoch's score
    over_base: float | None = None  # score minus the base model's score

    def to_dict(self) -> dict:
        return asdict(self)


def advise_epoch(epoch_losses: list[float]) -> EpochAdvice | None:
    """The training-loss plateau advice, used when there are no validation scores."""
    if not epoch_losses:
        return None
    n = len(epoch_losses)
    if n == 1:
        return EpochAdvice(
            1, False, "From the training loss: only one epoch ran (epoch 1); there is no curve "
            "to judge yet. Validation examples would give scores instead.",
        )
    first, best = epoch_losses[0], min(epoch_losses)
    drop = first - best
    if drop <= 0:
        return EpochAdvice(
            1,
            False,
            "From the training loss: it did not fall after epoch 1, so the extra epochs did "
            "not help. "
            "Check that outputs are consistent, or try a lower learning rate.",
        )
    threshold = PLATEAU_FRACTION * drop
    for e in range(n - 1):
        if epoch_losses[e] - epoch_losses[e + 1] < threshold:
            epoch = e + 1
            return EpochAdvice(
                epoch,
                True,
                f"From the training loss: it plateaus after epoch {epoch} (mean loss "
                f"{epoch_losses[e]:.4f}); "
                f"later epochs lower it by less than {PLATEAU_FRACTION:.0%} of the total drop "
                f"and add risk of over-fitting. Epoch {epoch} is the suggested checkpoint.",
            )
    return EpochAdvice(
        n,
        False,
        f"From the training loss: it was still falling at the last epoch, epoch {n} "
        f"({epoch_losses[-1]:.4f}); "
        "more epochs may help.",
    )


def advise_from_scores(
    scores: list[float], base_score: float | None, metric: str, count: int
) -> EpochAdvice | None:
    """The epoch to serve from validation scores (1-based): the last, unless an earlier epoch
    beats it by more than one example's worth (``1 / count``), then the best of those (ties:
    the later).

    Examples, 8 validation examples (one is worth 0.125), the base at 0.25: accuracies 0.50,
    0.875, 0.75, 0.625 → epoch 2, +0.25 over the last epoch, +0.625 over the base model;
    0.50, 0.75, 0.75, 0.625 → epoch 4, the last (epochs 2 and 3 beat it by one example only).
    """
    if not scores:
        return None
    last = len(scores) - 1
    worth = 1 / count if count else 0.0
    clearly = [i for i in range(last) if scores[i] - scores[last] > worth + 1e-9]
    best = max(clearly, key=lambda i: (scores[i], i)) if clearly else last
    epoch = best + 1
    from tunelab.training.evaluate import metric_words

    name = metric_words(metric)
    over_last = scores[best] - scores[last]
    over_base = scores[best] - base_score if base_score is not None else None
    top = max(range(len(scores)), key=lambda i: (scores[i], i))
    lead = f"Epoch {epoch} has the best validation {name}: {scores[best]:.3f} on {count} examples"
    if max(scores) <= 0 and not base_score:  # nothing to rank: say what it means
        base = "" if base_score is None else ", and for the base model"  # only what was scored
        return EpochAdvice(
            epoch, False, f"No epoch got any of the {count} validation examples right "
            f"({name} 0.000 at every epoch{base}): the last epoch is served, but the model has "
            "not learnt this task from these examples: more examples, or a larger base model, "
            "may.", VALIDATION, scores[best], over_last, over_base)
    if best != last:
        parts = [lead, f"{over_last:+.3f} over the last epoch ({last + 1}, {scores[last]:.3f}), "
                       f"more than one example's worth ({worth:.3f})"]
    elif top == last:
        parts = [lead, "it is the last epoch"]
    else:
        parts = [f"Epoch {epoch}, the last, is served: validation {name} {scores[best]:.3f} on "
                 f"{count} examples",
                 f"epoch {top + 1}'s {scores[top]:.3f} is higher by no more than one example's "
                 f"worth ({worth:.3f}), too little to prefer an earlier epoch"]
    if base_score is not None:
        parts.append(f"{over_base:+.3f} over the base model ({base_score:.3f})")
    return EpochAdvice(epoch, False, "; ".join(parts) + ".", VALIDATION, scores[best],
                       over_last, over_base)
