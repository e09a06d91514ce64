"""Automatic settings for the hyperparameters a user leaves unset; given values used exactly."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import arithmetic_examples
from safetensors.torch import load_file

from tunelab.data import Example
from tunelab.training import Hyperparameters, train
from tunelab.training.auto import learning_rate_at


def _resolve(n: int, **given):
    return Hyperparameters(**given).resolve(0.001, [Example("x" * 20, "y")] * n)


@pytest.mark.parametrize(("n", "epochs", "batch", "warmup", "rank"), [
    (20, 20, 4, 6, 8),  # 5 steps an epoch: 20 epochs = 100 steps
    (39, 10, 4, 6, 8),
    (50, 8, 4, 6, 8),  # 13 steps an epoch: 8 epochs = 104 steps
    (100, 5, 4, 8, 8),  # from 100: Gemini's 5 epochs, never longer than the fixed defaults
    (150, 5, 4, 10, 8),  # 190 steps: 6% would be 11, the warmup stops at 10 steps
    (1200, 5, 8, 10, 16),
    (6000, 5, 16, 10, 16),
])
def test_unset_values_are_chosen_from_the_data(n, epochs, batch, warmup, rank):
    hp = _resolve(n)
    assert (hp.epoch_count, hp.batch_size, hp.learning_rate) == (epochs, batch, 0.001)
    assert (hp.warmup_steps, hp.decay, hp.lora_rank, hp.lora_alpha) == (
        warmup, "cosine", rank, 2 * rank)
    assert set(hp.automatic) == {"epoch_count", "batch_size", "learning_rate"}
    assert len(hp.reasons) == 5  # batch, epochs, rate, LoRA shape, the served epoch
    assert hp.reasons[-1].startswith("Served epoch: the last (no examples held out")
    held_out = Hyperparameters().resolve(0.001, [Example("x" * 20, "y")] * n,
                                         validation=[Example("x" * 20, "y")])
    assert held_out.reasons[-1].startswith("Served epoch: the last, unless an earlier one scores")


def test_given_values_are_used_exactly():
    hp = _resolve(20, epoch_count=3, batch_size=2, learning_rate=0.05)
    assert (hp.epoch_count, hp.batch_size, hp.learning_rate) == (3, 2, 0.05)
    assert hp.schedule() is None and hp.automatic == ()  # Gemini's constant rate
    assert [hp.lr_at(s, 30) for s in (1, 15, 30)] == [0.05, 0.05, 0.05]
    assert hp.reasons[:3] == ("batchSize 2: as given.", "epochCount 3: as given.",
                              "learningRate 0.05: as given, constant.")
    # a multiplier gives the rate too (constant)
    multiplied = _resolve(20, learning_rate_multiplier=2.0)
    assert multiplied.learning_rate == 0.002 and multiplied.schedule() is None
    assert multiplied.epoch_count == 20 and "epoch_count" in multiplied.automatic
    # without the data (no examples known), Gemini's fixed defaults
    assert Hyperparameters().resolve(0.001).to_dict() == {
        "epoch_count": 5, "batch_size": 4, "learning_rate": 0.001}


def _tickets(n: int) -> list[Example]:
    """A classifier's data: every output one of three labels, none written in its input."""
    teams = ("billing", "shipping", "accounts")
    return [Example(f"message number {i} from a customer", teams[i % 3]) for i in range(n)]


@pytest.mark.parametrize("n", [20, 50, 100, 249])
def test_a_classifier_learns_at_a_constant_rate(n):
    hp = Hyperparameters().resolve(0.001, _tickets(n))
    assert (hp.warmup_steps, hp.decay) == (0, "constant") and hp.schedule() is None
    total = hp.steps_per_epoch(n) * hp.epoch_count
    assert {hp.lr_at(s, total) for s in (1, total // 2, total)} == {0.001}
    assert "learning_rate" in hp.automatic
    assert "constant over all" in hp.reasons[2] and "the outputs are 3 labels" in hp.reasons[2]
    # the epochs, batch and LoRA shape are the same as for any data of that size
    other = _resolve(n)
    assert (hp.epoch_count, hp.batch_size, hp.lora_rank) == (
        other.epoch_count, other.batch_size, other.lora_rank)
    assert other.decay == "cosine" and other.warmup_steps > 0
    # labels the user says are free text, or outputs that are not labels: warmup and decay
    free = Hyperparameters(answer_labels=False).resolve(0.001, _tickets(n))
    assert free.decay == "cosine" and free.warmup_steps == other.warmup_steps
    copied = [Example(f"{ex.output}: message {i}", ex.output) for i, ex in enumerate(_tickets(n))]
    assert Hyperparameters().resolve(0.001, copied).decay == "cosine"
    # a rate the user gives stays as given
    given = Hyperparameters(learning_rate=0.0002).resolve(0.001, _tickets(n))
    assert given.reasons[2] == "learningRate 0.0002: as given, constant."


def test_a_large_classifier_keeps_the_warmup_and_decay():
    # from 250 examples (a long run, no refit) the cosine did better (docs/quality.md)
    hp = Hyperparameters().resolve(0.001, _tickets(250))
    assert (hp.warmup_steps, hp.decay) == (10, "cosine")
    # counted on every example: 200 trained on and 50 held out is 250
    held = Hyperparameters().resolve(0.001, _tickets(200), validation=_tickets(50),
                                     held_out=50)
    assert held.decay == "cosine"


def test_the_schedule_and_the_answers_are_one_decision(tiny_base, tmp_path):
    """Whether the outputs are labels is decided once, with the plan, on the training and the
    validation outputs: the schedule and the trainer's label answers cannot disagree."""
    train_exs, validation = _tickets(30), _tickets(6)
    hp = Hyperparameters(epoch_count=1).resolve(0.001, train_exs, validation=validation)
    assert hp.labels == ("accounts", "billing", "shipping") and hp.decay == "constant"
    # a validation output outside the labels: not a classifier, for the schedule too
    odd = [*validation[:5], Example("message from a customer", "a free-text answer")]
    other = Hyperparameters(epoch_count=1).resolve(0.001, train_exs, validation=odd)
    assert other.labels == () and other.decay == "cosine" and other.warmup_steps > 0
    # kept with a queued job's plan, and what the trainer answers with
    from tunelab.training.hyperparameters import ResolvedHyperparameters
    kept = ResolvedHyperparameters.from_plan(json.loads(json.dumps(other.plan())))
    assert kept == other
    run = train(tiny_base, train_exs, kept, tmp_path / "odd", validation=odd)
    assert run.manifest["answer_labels"] is None
    run = train(tiny_base, train_exs, hp, tmp_path / "labels", validation=validation)
    assert run.manifest["answer_labels"] == ["accounts", "billing", "shipping"]
    # a plan made without the data (Gemini's fixed values) leaves the decision to the trainer
    assert Hyperparameters().resolve(0.001).labels is None


def test_long_examples_halve_the_batch():
    hp = Hyperparameters().resolve(0.001, [Example("w " * 1500, "y")] * 1200)
    assert hp.batch_size == 4 and "halved for long examples" in hp.reasons[0]


def test_the_schedule_is_a_function_of_the_step():
    rates = [learning_rate_at(s, 100, 0.001, 6, "cosine") for s in range(1, 101)]
    assert rates[:6] == pytest.approx([0.001 * s / 6 for s in range(1, 7)])
    assert max(rates) == pytest.approx(0.001) and rates[-1] == pytest.approx(0.0001)
    assert all(a >= b for a, b in zip(rates[5:], rates[6:], strict=False))


def _adapter(path):
    return load_file(path / "adapter" / "adapter_model.safetensors")


def test_a_small_dataset_trains_on_every_example_serves_the_last_epoch_and_resumes(
        tiny_base, tmp_path):
    exs = arithmetic_examples(20)
    hp = Hyperparameters(batch_size=8)  # 3 steps an epoch: 20 epochs, 60 steps
    full = train(tiny_base, exs, hp, tmp_path / "full", seed=1)
    m = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert m["plan"]["epoch_count"] == 20 and m["plan"]["decay"] == "cosine"
    assert len(full.snapshots) == 60 and m["example_count"] == 20  # every example trained on
    assert m["selected_epoch"] == 20 and m["evaluation"] is None

    out = tmp_path / "resumed"
    calls = {"n": 0}

    def crash():
        calls["n"] += 1
        return calls["n"] > 31  # killed in epoch 11, mid-schedule

    assert train(tiny_base, exs, hp, out, seed=1, should_cancel=crash).status == "cancelled"
    resumed = train(tiny_base, exs, hp, out, seed=1)
    assert [(s.step, s.mean_loss) for s in resumed.snapshots] == [
        (s.step, s.mean_loss) for s in full.snapshots]
    a, b = _adapter(tmp_path / "full"), _adapter(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_schedule_changes_what_is_learned(tiny_base, tmp_path):
    exs = arithmetic_examples(48)
    auto = train(tiny_base, exs, Hyperparameters(epoch_count=2, batch_size=4), tmp_path / "a")
    const = train(tiny_base, exs, Hyperparameters(epoch_count=2, batch_size=4,
                                                  learning_rate=0.01), tmp_path / "c")
    # tiny-random's recommended rate is 0.01: the same peak, but warmed up and decayed
    assert auto.manifest["hyperparameters"] == const.manifest["hyperparameters"]
    assert auto.snapshots[0].mean_loss == const.snapshots[0].mean_loss
    assert [s.mean_loss for s in auto.snapshots[1:]] != [s.mean_loss for s in const.snapshots[1:]]
