"""Epoch advice: where the loss curve plateaus.

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


@dataclass(frozen=True)
class EpochAdvice:
    epoch: int  # 1-based
    plateaued: bool
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def advise_epoch(epoch_losses: list[float]) -> EpochAdvice | None:
    if not epoch_losses:
        return None
    n = len(epoch_losses)
    if n == 1:
        return EpochAdvice(
            1, False, "Only one epoch ran (epoch 1); there is no curve to judge yet."
        )
    first, best = epoch_losses[0], min(epoch_losses)
    drop = first - best
    if drop <= 0:
        return EpochAdvice(
            1,
            False,
            "The loss did not fall after epoch 1: the extra epochs did not help. "
            "Check that outputs are consistent, or try a lower learning rate.",
        )
    threshold = PLATEAU_FRACTION * drop
    for e in range(n - 1):
        if epoch_losses[e] - epoch_losses[e + 1] < threshold:
            epoch = e + 1
            return EpochAdvice(
                epoch,
                True,
                f"The loss plateaus after epoch {epoch} (mean loss {epoch_losses[e]:.4f}); "
                f"later epochs lower it by less than {PLATEAU_FRACTION:.0%} of the total drop "
                f"and add risk of over-fitting. Epoch {epoch} is the suggested checkpoint.",
            )
    return EpochAdvice(
        n,
        False,
        f"The loss was still falling at the last epoch, epoch {n} ({epoch_losses[-1]:.4f}); "
        "more epochs may help.",
    )
