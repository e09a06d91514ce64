"""The overhead benchmark's reading of a training run's clock marks (``bench.throughput.overhead``),
on a timeline as ``train``'s callbacks make it."""

from __future__ import annotations

from bench.throughput.overhead import CHECKPOINTS, SCORING, SETUP, split_scoring, split_train


def test_the_run_is_split_into_steps_set_up_scoring_and_writes():
    events = [("scoring", 2.0), ("scoring", 3.0), ("scoring", 7.0), ("scored", 7.5),  # base
              ("step", 8.0), ("stepped", 10.0), ("step", 10.0), ("stepped", 12.0),
              ("scoring", 12.0), ("scoring", 13.5), ("scored", 13.5),  # epoch 1: all known
              ("step", 14.0), ("stepped", 16.0),
              ("scoring", 16.0), ("scoring", 17.0), ("scoring", 18.0), ("scored", 18.0)]
    training, kinds = split_train({"checked": 0.0, "trained": 19.0}, events)
    assert training == 6.0
    assert kinds[SETUP] == 2.0  # until the base model's scoring begins
    assert kinds[SCORING] == 5.5 + 1.5 + 2.0
    assert kinds[CHECKPOINTS] == 0.5 + 0.5 + 1.0  # after each scoring (the last: to the end)
    parts = split_scoring(events)
    assert parts == {"loss passes": 1.0 + 1.5 + 1.0, "the base model's answers": 4.5,
                     "the epochs' answers": 0.0 + 1.0}
