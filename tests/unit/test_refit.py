"""The refit (training/refit.py): the stopping step chosen on held-out examples, then a run on
every example for that many steps, served; on the tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from tunelab.data import Example
from tunelab.data.split import split_validation
from tunelab.errors import FailedPrecondition
from tunelab.export.card import model_card
from tunelab.training import (
    Hyperparameters,
    read_manifest,
    select_epoch,
    select_refit,
    train,
)
from tunelab.training.loop import read_evaluation
from tunelab.training.refit import refit_dir


def labelled(n: int) -> list[Example]:
    return [Example(f"q{i}", "yes" if i % 2 else "no") for i in range(n)]


def adapter(folder) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- when a refit is planned ------------------------------------------------------------------


def test_split_examples_are_the_examples_as_given():
    exs = [Example(f"in {i}", f"out {i}") for i in range(90)]
    split = split_validation(exs)
    assert len(split.validation) == 9 and split.examples == exs
    assert split_validation(exs[:30]).examples == exs[:30]  # nothing held out
    given = split_validation(exs[:50], exs[50:60])  # validation given: not training examples
    assert given.examples == exs[:50]


@pytest.mark.parametrize("n, given, refit", [
    (48, Hyperparameters(), True),  # 40 train, 8 held out, epochs automatic
    (100, Hyperparameters(batch_size=8, learning_rate=0.01), True),  # only epochs matter
    (100, Hyperparameters(epoch_count=5), False),  # epochs given: honoured exactly
    (249, Hyperparameters(), True),
    (250, Hyperparameters(), False),  # 25 held out of 250: not worth the doubled time
    (30, Hyperparameters(), False),  # nothing held out below 40
])
def test_refit_is_planned_for_small_datasets_with_automatic_epochs(n, given, refit):
    split = split_validation(labelled(n))
    plan = given.resolve(0.001, split.train, validation=split.validation,
                         held_out=len(split.held_out))
    assert plan.refit is refit
    lines = [r for r in plan.reasons if r.startswith("Served model: a refit")]
    assert bool(lines) is refit and ("refit" in plan.automatic) is refit
    if refit:
        assert f"on the {len(split.validation)} held-out examples" in lines[0]
        assert f"all {n} examples" in lines[0]


@pytest.mark.parametrize("n, held, epochs", [(40, 13, 10), (48, 16, 9), (100, 33, 5),
                                             (249, 83, 5)])
def test_a_refit_holds_a_third_out_and_counts_epochs_on_every_example(n, held, epochs):
    """With a refit the held-out examples only choose the epoch: a third is held out (more to
    score on, a shorter first run), and the epochs are chosen for the served run on all n."""
    hp = Hyperparameters()
    assert hp.plans_refit(n, validation_given=False)
    split = split_validation(labelled(n), for_refit=True)
    assert len(split.validation) == held and split.examples == labelled(n)
    assert split.message.startswith(f"{held} of the {n} examples were held out for validation "
                                    "(a third, fixed seed)")
    assert f"a refit on all {n} examples is served" in split.message
    plan = hp.resolve(0.001, split.train, validation=split.validation, held_out=held)
    assert plan.refit and plan.epoch_count == epochs
    assert "counted on every example" in plan.reasons[1]
    # not when the epochs are given, validation is given, or from 250 examples
    assert not Hyperparameters(epoch_count=5).plans_refit(n, False)
    assert not hp.plans_refit(n, validation_given=True)
    assert not hp.plans_refit(250, False) and not hp.plans_refit(39, False)


def test_given_validation_examples_never_refit():
    split = split_validation(labelled(60), given=labelled(10))
    plan = Hyperparameters().resolve(0.001, split.train, validation=split.validation,
                                     held_out=len(split.held_out))
    assert not plan.refit and split.held_out == []


# ---- the two runs -----------------------------------------------------------------------------

# a constant rate, so that the refit's steps are those of a plain run on every example
GIVEN = Hyperparameters(epoch_count=3, batch_size=4, learning_rate=0.05)


def refit_plan(train_examples):
    return dataclasses.replace(GIVEN.resolve(None, train_examples), refit=True)


def test_the_refit_trains_every_example_for_the_chosen_steps_and_is_served(tiny_base,
                                                                           tmp_path):
    exs = labelled(48)
    split = split_validation(exs)
    plan = refit_plan(split.train)
    out = tmp_path / "run"
    seen = []
    r = train(tiny_base, split.train, plan, out, seed=3, validation=split.validation,
              validation_record=split.record(), refit_examples=split.examples,
              on_snapshot=seen.append)
    first_total = 3 * 10  # 40 training examples, batch 4
    refit = r.refit
    chosen = r.advice.epoch
    assert r.status == "completed" and refit["status"] == "completed" and refit["served"]
    assert refit["from_epoch"] == chosen and refit["steps"] == chosen * 12  # 48 at batch 4
    assert refit["examples"] == 48 and refit["held_out"] == 8
    steps = refit["steps"]
    # the job's steps: the first run's, then the refit's after them, with the new total
    assert [s.step for s in seen] == list(range(1, first_total + steps + 1))
    assert {s.total_steps for s in seen[first_total:]} == {first_total + steps}
    assert seen[first_total].epoch == 4  # the refit's epochs follow the first run's
    assert [s.step for s in r.snapshots] == [s.step for s in seen]
    # the refit is a run on all 48 examples for `chosen` epochs (12 steps each), nothing else
    inner = read_manifest(refit_dir(out))
    assert inner["example_count"] == 48 and inner["completed_steps"] == steps
    assert inner["epochs_run"] == chosen
    plain = train(tiny_base, exs, dataclasses.replace(plan, epoch_count=chosen, refit=False),
                  tmp_path / "plain", seed=3)
    assert [s.mean_loss for s in plain.snapshots] == [s.mean_loss for s in seen[first_total:]]
    # it is served; the first run's epochs stay as they were
    assert same(adapter(out / "adapter"), adapter(plain.adapter_dir))
    assert not same(adapter(out / "adapter"), adapter(out / "checkpoints" / f"epoch-{chosen}"))
    m = read_manifest(out)
    assert m["selected_epoch"] is None and m["refit"] == refit
    assert m["evaluation"]["epochs"] and len(m["epoch_losses"]) == 3
    ev = read_evaluation(out)
    assert ev["refit"]["served"] and "The scores are that run's" in ev["refit"]["message"]
    assert f"all 48 examples for {chosen} epoch" in refit["message"]
    assert f"({steps} steps), as many epochs as the run that held 8 of them out" in (
        refit["message"])
    # an export's model card names what its weights are
    card = model_card({**m, "display_name": "run"}, "peft", None)
    assert f"a refit on all 48 examples for {steps} steps (as many as epoch {chosen})" in card


def test_choosing_an_epoch_then_the_refit_again(tiny_base, tmp_path):
    split = split_validation(labelled(48))
    out = tmp_path / "run"
    r = train(tiny_base, split.train, refit_plan(split.train), out, seed=1,
              validation=split.validation, refit_examples=split.examples)
    served = adapter(out / "adapter")
    m = select_epoch(out, 2)
    assert m["selected_epoch"] == 2 and not m["refit"]["served"]
    assert same(adapter(out / "adapter"), adapter(out / "checkpoints" / "epoch-2"))
    assert "Epoch 2 of the run that held 8 examples out is served" in (
        read_evaluation(out)["refit"]["message"])
    m = select_refit(out)
    assert m["selected_epoch"] is None and m["refit"]["served"]
    assert same(adapter(out / "adapter"), served)
    assert read_evaluation(out)["refit"]["message"] == r.refit["message"]


def test_select_refit_without_one_says_so(tiny_base, tmp_path):
    split = split_validation(labelled(48))
    out = tmp_path / "run"
    train(tiny_base, split.train, GIVEN, out, validation=split.validation)
    with pytest.raises(FailedPrecondition, match="no completed refit"):
        select_refit(out)


def test_cancelled_in_the_refit_keeps_the_first_run_and_resumes_identically(tiny_base,
                                                                          tmp_path):
    split = split_validation(labelled(48))
    plan = refit_plan(split.train)
    whole = train(tiny_base, split.train, plan, tmp_path / "whole", seed=2,
                  validation=split.validation, refit_examples=split.examples)
    out = tmp_path / "cut"
    calls = {"n": 0}

    def stop_in_the_refit():
        calls["n"] += 1
        return calls["n"] > 30 + 5  # the first run's 30 steps, then 5 of the refit's

    cut = train(tiny_base, split.train, plan, out, seed=2, validation=split.validation,
                refit_examples=split.examples, should_cancel=stop_in_the_refit)
    chosen = cut.advice.epoch
    assert cut.status == "cancelled" and cut.refit["status"] == "cancelled"
    assert cut.refit["completed_steps"] == 5 and not cut.refit["served"]
    assert f"serves epoch {chosen} of the run that held 8 of them out" in cut.refit["message"]
    # the model keeps the first run's served epoch, complete
    assert same(adapter(out / "adapter"), adapter(out / "checkpoints" / f"epoch-{chosen}"))
    resumed = train(tiny_base, split.train, plan, out, seed=2, validation=split.validation,
                    refit_examples=split.examples)
    assert resumed.status == "completed" and resumed.refit["served"]
    assert [(s.step, s.mean_loss) for s in resumed.snapshots] == [
        (s.step, s.mean_loss) for s in whole.snapshots]
    assert same(adapter(out / "adapter"), adapter(tmp_path / "whole" / "adapter"))
