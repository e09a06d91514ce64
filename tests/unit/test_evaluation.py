"""Validation split, scoring, per-epoch evaluation and the best epoch, on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tunelab.data import Example
from tunelab.data.split import GIVEN, HELD_OUT, NONE, hold_out_count, split_validation
from tunelab.inference import GenerationConfig, Generator
from tunelab.training import Hyperparameters, list_checkpoints, read_manifest, train
from tunelab.training.advice import TRAINING_LOSS, VALIDATION, advise_epoch, advise_from_scores
from tunelab.training.evaluate import (
    ACCURACY,
    EXACT_MATCH,
    TOKEN_F1,
    is_label_like,
    metric_for,
    score_answers,
    token_f1,
)
from tunelab.training.loop import read_evaluation


def labelled(n: int) -> list[Example]:
    return [Example(f"q{i}", "yes" if i % 2 else "no") for i in range(n)]


# ---- the split ------------------------------------------------------------------------------


@pytest.mark.parametrize("n, held", [(20, 0), (39, 0), (40, 8), (79, 8), (80, 8), (90, 9),
                                     (250, 25), (1000, 100), (5000, 100)])
def test_hold_out_sizes(n, held):
    assert hold_out_count(n) == held
    split = split_validation(labelled(n))
    assert len(split.validation) == held and len(split.train) == n - held
    assert split.source == (HELD_OUT if held else NONE)


def test_split_is_deterministic_and_listed():
    exs = [Example(f"input {i}", f"out {i}") for i in range(60)]
    a, b = split_validation(exs), split_validation(list(exs))
    assert a.held_out == b.held_out and len(a.held_out) == 8
    assert a.validation == [exs[i - 1] for i in a.held_out]  # 1-based numbers of the data
    assert [ex for ex in exs if ex not in a.validation] == a.train  # order kept
    assert a.record()["held_out"] == a.held_out and a.record()["source"] == HELD_OUT
    assert "8 of the 60 examples were held out" in a.message
    assert not a.warnings


def test_a_repeated_input_is_held_out_with_all_its_copies_or_not_at_all():
    import random

    from tunelab.data.split import SPLIT_SEED

    # without repeated inputs the split is the seed's plain draw
    exs = [Example(f"input {i}", f"out {i}") for i in range(90)]
    assert split_validation(exs).held_out == [
        i + 1 for i in sorted(random.Random(SPLIT_SEED).sample(range(90), 9))]
    # a third of the inputs given twice or three times (a copied line, two phrasings of one
    # answer), the copies apart in the file
    rows = [Example(f"input {i % 60}", f"out {i % 60}") for i in range(80)]
    rows += [Example(f" input {i} ", f"other {i}") for i in range(0, 30, 3)]
    for for_refit in (False, True):
        split = split_validation(rows, for_refit=for_refit)
        trained = {ex.text_input.strip() for ex in split.train}
        assert not any(ex.text_input.strip() in trained for ex in split.validation)
        assert not split.warnings
        assert len(split.validation) == hold_out_count(len(rows), for_refit)
        assert split.held_out == split_validation(list(rows), for_refit=for_refit).held_out
        assert split.examples == rows  # a refit still trains on every example, in order
    # every input the same: nothing can be held apart; the draw is kept and says so
    same = [Example("the one input", f"out {i}") for i in range(40)]
    split = split_validation(same)
    assert len(split.validation) == 8 and "8 of 8 validation inputs also appear" in str(
        split.warnings[0])


def test_no_label_of_a_classifier_is_held_out_whole():
    """A 12-way classifier of 40 examples, three or four of each label: the seed's plain draw
    holds out all three examples of one label (then never learnt by the first run, and no
    classifier's data: a held-out output no training example has). One goes back to training
    and another example takes its place: the count is kept, every label is trained on, and
    the label rule holds on the split as on the whole data."""
    import random

    from tunelab.catalog.labels import answer_labels
    from tunelab.data.split import SPLIT_SEED, _held_apart, _input_groups

    def labels_hold(split) -> bool:
        return answer_labels([ex.text_input for ex in split.train],
                             [ex.output for ex in split.train],
                             [ex.output for ex in split.validation]) is not None

    names = [f"intent_{c}" for c in "abcdefghijkl"]
    rows = [Example(f"customer message number {i} about {i * 7 % 11} things", names[i % 12])
            for i in range(40)]
    assert answer_labels([ex.text_input for ex in rows], [ex.output for ex in rows])
    for for_refit in (False, True):
        k = hold_out_count(len(rows), for_refit)
        drawn = _held_apart(rows, _input_groups(rows),
                            random.Random(SPLIT_SEED).sample(range(len(rows)), k))
        whole = {rows[i].output for i in drawn} - {rows[i].output for i in range(len(rows))
                                                    if i not in drawn}
        split = split_validation(rows, for_refit=for_refit)
        assert len(split.validation) == k and labels_hold(split)
        assert {ex.output for ex in split.train} == set(names)
        assert split.examples == rows
        if whole:  # the draw held a label out whole: the split differs from it there only
            assert set(split.held_out) != {i + 1 for i in drawn}
    assert any(  # the case this is for occurs in this data
        {rows[i].output for i in d} - {rows[i].output for i in range(40) if i not in d}
        for d in (_held_apart(rows, _input_groups(rows),
                              random.Random(SPLIT_SEED).sample(range(40), k))
                  for k in (8, 13)))
    # outputs that are not labels (every one new) keep the plain draw
    values = [Example(f"input {i}", f"value {i}") for i in range(60)]
    assert split_validation(values, for_refit=True).held_out == [
        i + 1 for i in sorted(random.Random(SPLIT_SEED).sample(range(60), 20))]


def test_below_40_nothing_is_held_out_and_it_says_so():
    split = split_validation(labelled(30))
    assert split.source == NONE and split.validation == [] and len(split.train) == 30
    assert "fewer than 40" in split.message and "training loss alone" in split.message


def test_given_validation_and_duplicate_warnings():
    train_exs = labelled(24)
    given = [Example("q3", "yes"), Example("new", "no"), Example(" q5 ", "yes")]
    split = split_validation(train_exs, given)
    assert split.source == GIVEN and split.train == train_exs and split.validation == given
    assert len(split.warnings) == 1
    assert "2 of 3 validation inputs also appear in the training data" in str(
        split.warnings[0])
    assert "validation examples 1, 3" in str(split.warnings[0])


# ---- scores ---------------------------------------------------------------------------------


def test_label_like_outputs_get_accuracy_and_confusion():
    assert is_label_like(["yes", "no", "yes", "no"])
    assert not is_label_like(["a b", "c d", "e f"])  # every output distinct: free text
    s = score_answers(["yes", "no", "yes", "no"], ["yes", "yes", " yes", "maybe"], ACCURACY)
    assert s.metric == "accuracy" and s.accuracy == s.score == s.exact_match == 0.5
    assert s.confusion == [
        {"expected": "no", "predicted": "(other)", "count": 1},
        {"expected": "no", "predicted": "yes", "count": 1},
        {"expected": "yes", "predicted": "yes", "count": 2},
    ]


def test_free_text_gets_token_f1():
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("the cat", "the cat sat") == pytest.approx(0.8)
    assert token_f1("", "x") == 0.0
    s = score_answers(["the cat sat", "a dog"], ["the cat", "a dog"], TOKEN_F1)
    assert s.metric == "token_f1" and s.exact_match == 0.5
    assert s.score == s.token_f1 == pytest.approx(0.9)


def test_short_values_are_scored_by_exact_match():
    """A date or an amount is right or wrong: token F1 would give a wrong date most of the
    credit, so outputs that are nearly all short values rank by exact match."""
    dates = ["2021-03-03", "1999-12-31", "2004-07-01", "2010-01-15"]
    assert token_f1("2021-03-04", "2021-03-03") == pytest.approx(0.8)
    assert metric_for(dates) == EXACT_MATCH
    assert metric_for(["267.8 mi", "12.0 kg", "Anna Berg", "A-113", "not on file"]) == EXACT_MATCH
    s = score_answers(dates, ["2021-03-04", "1999-12-31", "2004-07-02", "2010-01-14"],
                      EXACT_MATCH)
    assert s.metric == EXACT_MATCH and s.score == s.exact_match == 0.25
    assert s.token_f1 == pytest.approx(0.85)  # kept beside it, as the tables show it
    # labels stay labels; sentences stay token F1 (one short output in ten does not change it,
    # two do not make the rest short)
    assert metric_for(["yes", "no", "yes", "no"]) == ACCURACY
    sentences = [f"the kettle number {i} leaks and wants a refund" for i in range(8)]
    assert metric_for(sentences) == TOKEN_F1
    assert metric_for(sentences + ["ok", "fine"]) == TOKEN_F1
    assert metric_for([f"v{i}" for i in range(9)] + [sentences[0]]) == EXACT_MATCH
    assert metric_for([f"v{i}" for i in range(8)] + sentences[:2]) == TOKEN_F1


def test_structured_outputs_are_scored_by_exact_match():
    """A JSON object or a template is right or wrong as a whole: its format's words would give
    a wrong value most of token F1's credit."""
    items = ["maple syrup", "sesame oil", "coconut milk", "rolled oats", "brown sugar"]
    orders = [f'{{"quantity": "{i}", "unit": "cup", "ingredient": "{w}"}}'
              for i, w in enumerate(items)]
    assert metric_for(orders) == EXACT_MATCH
    assert token_f1(orders[0].replace("maple syrup", "maple"), orders[0]) > 0.9
    people = [f"people: {a} and {b}; cities: {c}" for a, b, c in (
        ("Ada", "Ines", "Porto"), ("Lucy", "Kenji", "Oslo"), ("Mia", "James", "Lyon"),
        ("Ines", "Lucy", "Graz"), ("Kenji", "Ada", "Split"))]
    assert metric_for(people) == EXACT_MATCH
    # free text that shares punctuation by chance stays token F1
    notes = ["The kettle leaks. A refund is wanted soon.",
             "My order came late, and the box was torn open.",
             "Two of the cups are chipped. Please send new ones.",
             "The charger stopped working after a week of use.",
             "Wrong colour sent. I asked for blue, not grey.",
             "Great service, thanks. The parcel arrived early."]
    assert metric_for(notes) == TOKEN_F1


# ---- the best epoch -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores, base, epoch, over_last",
    [  # 8 validation examples: one is worth 0.125
        ([0.5, 0.875, 0.75, 0.625], 0.25, 2, 0.25),  # two examples better than the last
        ([0.5, 0.875, 0.875, 0.5], 0.25, 3, 0.375),  # a tie of clearly better ones: the later
        ([0.1, 0.2, 0.3], 0.0, 3, 0.0),  # still improving: the last
        ([0.9, 0.5, 0.4], 0.95, 1, 0.5),  # worse than the base: still the best epoch
        ([0.9, 1.0, 1.0, 1.0, 1.0], 0.0, 5, 0.0),  # a tie with the last: the last
    ],
)
def test_best_epoch_from_a_score_sequence(scores, base, epoch, over_last):
    a = advise_from_scores(scores, base, "accuracy", 8)
    assert a.epoch == epoch and a.basis == VALIDATION
    assert a.over_last == pytest.approx(over_last)
    assert a.over_base == pytest.approx(scores[epoch - 1] - base)
    assert f"Epoch {epoch} has the best validation accuracy" in a.message
    assert "over the base model" in a.message


@pytest.mark.parametrize("scores, count", [
    ([0.5, 0.75, 0.75, 0.625], 8),  # one example better than the last: not evidence
    ([0.9, 0.98, 0.96, 0.96, 0.96], 10),  # token F1: a fraction of one example
])
def test_an_earlier_epoch_within_one_examples_worth_does_not_replace_the_last(scores, count):
    a = advise_from_scores(scores, 0.0, "token_f1", count)
    assert a.epoch == len(scores) and a.score == scores[-1] and a.over_last == 0
    top = max(i for i, x in enumerate(scores) if x == max(scores)) + 1  # ties: the later
    assert a.message.startswith(f"Epoch {len(scores)}, the last, is served")
    assert f"epoch {top}'s {max(scores):.3f} is higher by no more than one example's worth" \
        in a.message


@pytest.mark.parametrize("base", [0.0, None])
def test_when_nothing_is_ever_right_the_advice_says_so(base):
    a = advise_from_scores([0.0, 0.0, 0.0], base, EXACT_MATCH, 12)
    assert a.epoch == 3 and a.score == 0.0 and a.basis == VALIDATION
    assert a.message.startswith("No epoch got any of the 12 validation examples right")
    assert "exact match 0.000 at every epoch" in a.message and "has the best" not in a.message
    assert ("for the base model" in a.message) == (base is not None)  # only what was scored
    # one right answer anywhere, or a base model that got some: the usual advice
    assert advise_from_scores([0.0, 1 / 12, 0.0], base, EXACT_MATCH, 12).message.startswith(
        "Epoch 3, the last, is served")
    assert "has the best" in advise_from_scores([0.0, 0.0], 0.25, EXACT_MATCH, 4).message


def test_without_validation_the_advice_says_it_is_the_training_loss():
    a = advise_epoch([3.0, 1.5, 0.8, 0.75, 0.74])
    assert a.basis == TRAINING_LOSS and a.message.startswith("From the training loss")


# ---- per-epoch evaluation in training -------------------------------------------------------

HP = Hyperparameters(epoch_count=3, batch_size=4, learning_rate=0.05)


def test_each_epoch_is_scored_and_the_best_is_served(tiny_base, tmp_path):
    split = split_validation(labelled(48))
    seen, progress = [], []
    out = tmp_path / "v"
    r = train(tiny_base, split.train, HP, out, validation=split.validation,
              validation_record=split.record(), on_evaluation=seen.append,
              on_evaluation_progress=lambda *a: progress.append(a))
    ev = r.evaluation
    assert [e.epoch for e in seen] == [0, 1, 2, 3]  # the base model, then every epoch
    for epoch in range(4):  # each scoring says it begins, then counts its answers up to all 8
        done = [d for e, d, total in progress if e == epoch and total == 8]
        assert done[0] == 0 and done[-1] == 8 and done == sorted(done)
    assert ev["metric"] == "accuracy" and ev["example_count"] == 8
    assert ev["validation"]["held_out"] == split.held_out
    assert ev["baseline"]["epoch"] == 0 and len(ev["epochs"]) == 3
    for e in ev["epochs"]:
        assert e["validation_loss"] > 0 and 0 <= e["score"] <= 1
        assert sum(c["count"] for c in e["confusion"]) == 8
        assert len(e["wrong"]) <= 3
    assert read_evaluation(out) == ev == read_manifest(out)["evaluation"]
    scores = [e["score"] for e in ev["epochs"]]
    best = r.advice.epoch  # the last, or an epoch clearly better than it
    assert best == len(scores) or scores[best - 1] - scores[-1] > 1 / 8
    assert r.advice.basis == VALIDATION and r.advice.score == scores[best - 1]
    m = read_manifest(out)
    assert m["selected_epoch"] == best and m["advice"]["epoch"] == best
    served = load_file(out / "adapter" / "adapter_model.safetensors")
    ckpt = load_file(out / "checkpoints" / f"epoch-{best}" / "adapter_model.safetensors")
    assert all(torch.equal(served[k], ckpt[k]) for k in served)
    # the validation loss falls as the model learns the two labels
    assert ev["epochs"][-1]["validation_loss"] < ev["baseline"]["validation_loss"]


def test_evaluation_does_not_change_training_and_resume_is_identical(tiny_base, tmp_path):
    split = split_validation(labelled(48))
    plain = train(tiny_base, split.train, HP, tmp_path / "plain", seed=2)
    full = train(tiny_base, split.train, HP, tmp_path / "full", seed=2,
                 validation=split.validation)
    assert [s.mean_loss for s in plain.snapshots] == [s.mean_loss for s in full.snapshots]

    calls = {"n": 0}

    def crash_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 14

    out = tmp_path / "resumed"
    first = train(tiny_base, split.train, HP, out, seed=2, validation=split.validation,
                  should_cancel=crash_in_epoch_2)
    assert first.status == "cancelled" and list_checkpoints(out) == [1]
    assert len(first.evaluation["epochs"]) == 1  # a cancelled run keeps its last score
    resumed = train(tiny_base, split.train, HP, out, seed=2, validation=split.validation)
    assert resumed.resumed_from_epoch == 1
    assert [(s.step, s.mean_loss) for s in resumed.snapshots] == [
        (s.step, s.mean_loss) for s in full.snapshots]
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in full.evaluation["epochs"]]
    assert [{k: v for k, v in e.items() if k != "seconds"}
            for e in resumed.evaluation["epochs"]] == strip
    for name in ("adapter",):
        a = load_file(tmp_path / "full" / name / "adapter_model.safetensors")
        b = load_file(out / name / "adapter_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_scoring_by_the_metric_its_epochs_were_scored_by(
        tiny_base, tmp_path, monkeypatch):
    """A run started by a tunelab that chose another metric for these outputs (token F1 for
    short values, before exact match ranked them) goes on with that metric when resumed, so
    its epochs stay comparable."""
    import tunelab.training.loop as loop

    examples = [Example(f"code {i}", f"A-{i}") for i in range(48)]
    split = split_validation(examples)
    assert metric_for([ex.output for ex in examples]) == EXACT_MATCH
    calls = {"n": 0}

    def crash_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 14

    out = tmp_path / "older"
    with monkeypatch.context() as m:
        m.setattr(loop, "metric_for", lambda outputs: TOKEN_F1)
        first = train(tiny_base, split.train, HP, out, seed=2, validation=split.validation,
                      should_cancel=crash_in_epoch_2)
    assert first.status == "cancelled" and first.evaluation["metric"] == TOKEN_F1
    resumed = train(tiny_base, split.train, HP, out, seed=2, validation=split.validation)
    ev = resumed.evaluation
    assert resumed.resumed_from_epoch == 1 and ev["metric"] == TOKEN_F1
    for e in [ev["baseline"], *ev["epochs"]]:
        assert e["metric"] == TOKEN_F1 and e["score"] == e["token_f1"]
    fresh = train(tiny_base, split.train, HP, tmp_path / "new", seed=2,
                  validation=split.validation).evaluation
    assert fresh["metric"] == EXACT_MATCH
    assert all(e["score"] == e["exact_match"] for e in fresh["epochs"])


def test_tuning_again_after_serving_an_adapter_on_the_same_base(models_dir, tmp_path):
    """A base a Generator has wrapped (adapters loaded in inference mode) can tune again, and
    the generator keeps serving its adapter unchanged ("Setting requires_grad=True on
    inference tensor outside InferenceMode" before)."""
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", threads=1)
    one = Hyperparameters(epoch_count=1, batch_size=4, learning_rate=0.05)
    first = train(base, labelled(24), one, tmp_path / "a")
    gen = Generator(base)
    cfg = GenerationConfig(max_output_tokens=4)
    before = gen.generate([("user", "q1")], None, cfg, first.adapter_dir).text
    plain_before = gen.generate([("user", "q1")], None, cfg).text
    second = train(base, labelled(24)[::-1], one, tmp_path / "b")
    assert second.status == "completed"
    assert gen.generate([("user", "q1")], None, cfg, first.adapter_dir).text == before
    assert gen.generate([("user", "q1")], None, cfg).text == plain_before
    # the second run trained on the plain base weights: the same as on a fresh base
    fresh = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", threads=1)
    third = train(fresh, labelled(24)[::-1], one, tmp_path / "c")
    assert [s.mean_loss for s in third.snapshots] == [s.mean_loss for s in second.snapshots]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] == "completed"


def test_answers_the_loss_pass_determines_are_not_generated_again(models_dir, tmp_path,
                                                                   monkeypatch):
    """Where the validation loss pass's next-token choices run to the end of an answer before
    the first mismatch, that answer is taken from it; the rest are generated from where the
    pass leaves them (its choices up to and including the first mismatch). Either way every
    answer equals the one the served model gives (``Generator.answers``, from the prompts)."""
    from peft import PeftModel

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.training import evaluate
    from tunelab.training.evaluate import Evaluator
    from tunelab.training.loop import _private_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")
    examples = [Example(f"q{i}", "yes, it is" if i % 4 else "no, not at all") for i in range(24)]
    r = train(base, examples, Hyperparameters(epoch_count=4, batch_size=4, learning_rate=0.01),
              tmp_path / "run")
    model = PeftModel.from_pretrained(_private_model(base.model), r.adapter_dir).eval()
    evaluator = Evaluator(base, examples, ACCURACY)
    decode = evaluate.greedy_answers
    started: list[list[int]] = []  # what each generated answer was given to go on from
    reused: list[bool] = []  # whether it went on from the pass's keys and values

    def watched(model, prompts, replies, pad_id, device, prefilled=None):
        started.extend(list(reply.ids) for reply in replies)
        reused.extend(p is not None and p.tokens == (list(q) + r.ids)[:-1]
                      for p, q, r in zip(prefilled or [None] * len(replies), prompts, replies,
                                         strict=True))
        return decode(model, prompts, replies, pad_id, device, prefilled)

    monkeypatch.setattr(evaluate, "greedy_answers", watched)
    with torch.no_grad():
        loss, scored = evaluator.score(model)
    served = Generator(base).answers([([("user", ex.text_input)], ex.system) for ex in examples],
                                     evaluator.max_new_tokens, r.adapter_dir)
    assert scored == served
    right = sum(a == ex.output for ex, a in zip(examples, scored, strict=True))
    assert right and 0 < len(started) <= len(examples) - right  # every right one: the pass's
    assert all(len(ids) >= 1 for ids in started)  # each went on from the pass's choices
    assert all(reused)  # and from the pass's keys and values: its prompt not computed again
    assert abs(loss - evaluator.evaluate(model, 1).validation_loss) < 1e-6


def test_the_loss_pass_laid_out_as_training_steps_scores_as_padded_rows(models_dir):
    """The trainer's evaluator lays the loss pass's examples in one packed row with their
    common prefix once (as its steps are): the same loss and the same answers as padded rows."""
    _packed_and_padded(models_dir)


def _packed_and_padded(models_dir):
    """Scores ten examples with a packed and a padded evaluator and checks they agree;
    returns (base, model, the packed evaluator, the loss, the answers)."""
    from peft import LoraConfig, get_peft_model

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.data.batches import pack, shared_prefix
    from tunelab.training.evaluate import Evaluator
    from tunelab.training.loop import _private_model
    from tunelab.training.segment_attention import use_segment_attention

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")
    examples = [Example(f"Answer in one word. Is {w} a colour?", "yes" if i % 3 else "no")
                for i, w in enumerate(["red", "tree", "blue", "fish", "green", "stone", "pink",
                                       "door", "grey", "salt"])]
    private = _private_model(base.model)
    assert use_segment_attention(private)
    torch.manual_seed(0)
    model = get_peft_model(private, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    padded = Evaluator(base, examples, ACCURACY)
    packed = Evaluator(base, examples, ACCURACY, packed=True, share_prefix=True)
    first = packed._batch(packed.tokenized[:8], base.tokenizer.pad_token_id)
    assert first.segments is not None and len(first.segments) == 1  # one row, in order
    assert first.prefix == shared_prefix(packed.tokenized[:8]) > 0
    assert first.input_ids.numel() < sum(t.length for t in packed.tokenized[:8])
    assert len(pack(packed.tokenized[:8], 0, float("inf")).segments) == 1
    with torch.no_grad():
        loss, answers = padded.score(model)
        packed_loss, packed_answers = packed.score(model)
    assert abs(packed_loss - loss) < 1e-5
    assert packed_answers == answers
    return base, model, packed, loss, answers


def test_the_loss_pass_takes_as_many_examples_a_batch_as_its_token_budget_allows(
        models_dir, monkeypatch):
    """Ten short examples are one forward pass; under a budget of a few examples' tokens they
    are cut in order into batches that keep within it, with the same loss and answers."""
    import tunelab.training.evaluate as evaluate

    base, model, packed, loss, answers = _packed_and_padded(models_dir)
    assert [len(g) for g in packed._loss_groups()] == [10]
    budget = 3 * max(it.length for it in packed.tokenized)
    monkeypatch.setattr(evaluate, "LOSS_PASS_TOKENS", budget)
    groups = packed._loss_groups()
    assert len(groups) > 2
    assert [it for g in groups for it in g] == packed.tokenized  # every example, in order
    assert all(sum(it.length for it in g) <= budget for g in groups)
    with torch.no_grad():
        split_loss, split_answers = packed.score(model)
    assert abs(split_loss - loss) < 1e-5
    assert split_answers == answers


def test_the_loss_pass_makes_its_logits_a_chunk_at_a_time(models_dir, monkeypatch):
    """The logits of one pass are made a few rows at a time within the byte budget (never the
    whole vocabulary-wide tensor); the loss and answers are those of one chunk."""
    import tunelab.training.evaluate as evaluate
    from tunelab.training import loop

    base, model, packed, loss, answers = _packed_and_padded(models_dir)
    per_row = 4 * base.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(evaluate, "LOSS_PASS_LOGIT_BYTES", 3 * per_row)
    sizes: list[int] = []
    chunks = loop.output_logit_chunks

    def watched(model, batch, max_bytes, cache=None):
        for logits, targets in chunks(model, batch, max_bytes, cache):
            sizes.append(logits.shape[0])
            yield logits, targets

    monkeypatch.setattr(loop, "output_logit_chunks", watched)
    with torch.no_grad():
        chunk_loss, chunk_answers = packed.score(model)
    outputs = sum(len(it.output_ids) for it in packed.tokenized)
    assert sum(sizes) == outputs and max(sizes) == 3 and len(sizes) == -(-outputs // 3)
    assert abs(chunk_loss - loss) < 1e-5
    assert chunk_answers == answers


def test_compare_times_a_few_answers_alone_and_answers_the_rest_together(models_dir):
    """A local model answers the first ``LATENCY_SAMPLE`` examples alone (its latency) and the
    rest together; its answers are those it gives one at a time, the progress goes up to
    every example, and the latency is the mean of the answers timed alone."""
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.inference import Generator
    from tunelab.training.evaluate import (
        LATENCY_SAMPLE,
        Answerer,
        compare,
        generator_answerer,
    )

    gen = Generator(load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32"))
    examples = [Example(f"item {i} " + "x " * (i % 4), f"answer {i}") for i in range(20)]
    local = generator_answerer("together", gen, None, examples)
    alone: list[Example] = []
    hints: list[bool] = []  # whether its first answers were right (often_right)

    def many(exs, progress, often_right):
        hints.append(often_right)
        return local.many(exs, progress, often_right)

    spied = Answerer("together", lambda ex: alone.append(ex) or local.one(ex), many)
    one_by_one = Answerer("one by one", local.one)
    # a model that answers every example right (its answers are the expected outputs)
    right = Answerer("right", lambda ex: ex.output, lambda exs, progress, often_right: (
        hints.append(often_right), [ex.output for ex in exs])[1])
    progress: list[tuple[str, int]] = []
    out = compare(examples, [spied, one_by_one, right], lambda name, done, total: progress.append(
        (name, done)))
    assert alone == examples[:LATENCY_SAMPLE]
    assert hints == [False, True]  # the random model's first answers are wrong
    assert [d for n, d in progress if n == "together"] == [1, 2, 3, 20]
    assert [d for n, d in progress if n == "one by one"] == list(range(1, 21))
    assert all(d["answers"][0]["text"] == d["answers"][1]["text"]  # the same either way
               for d in out["differences"])
    together, single, oracle = out["results"]
    assert together["score"] == single["score"] and together["mean_latency_ms"] > 0
    assert oracle["score"] == 1.0


def test_undecided_answers_go_on_from_the_loss_pass_keys_and_values(models_dir, monkeypatch):
    """An answer the loss pass leaves undecided is decoded on from the keys and values that pass
    computed for its prompt and its choices so far (packed rows with a shared prefix, and
    padded rows): the first decoding pass reads one token a row, and the loss and answers are
    those of decoding from the prompts again (the pass's states not kept)."""
    import tunelab.catalog.kv_cache as kv_cache
    from tunelab.training.evaluate import Evaluator

    base, model, packed, loss, answers = _packed_and_padded(models_dir)
    padded = Evaluator(base, packed.examples, ACCURACY)
    widths: list[int] = []  # tokens a row of each decoding pass reads
    forward = model.forward

    def watched(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", watched)
    with torch.no_grad():
        for evaluator in (packed, padded):
            widths.clear()
            assert evaluator.score(model) == (pytest.approx(loss, abs=1e-5), answers)
            assert widths and max(widths) == 1  # no pass over a prompt
        monkeypatch.setattr(kv_cache, "PASS_CACHE_BYTES", 0)  # nothing kept: prompts again
        widths.clear()
        again_loss, again = packed.score(model)
    assert max(widths) > 1
    assert abs(again_loss - loss) < 1e-5
    assert again == answers


def test_the_keys_and_values_kept_across_loss_passes_stay_within_their_bound(models_dir,
                                                                           monkeypatch):
    """Cut into several loss passes, the scoring keeps a pass's keys and values only while they
    and those it still holds from earlier passes fit in ``PASS_CACHE_BYTES``: with room for
    the first pass alone, its undecided answers have its states and later ones none (decoded
    from their prompts), and every answer and the loss are the same."""
    import tunelab.catalog.kv_cache as kv_cache
    import tunelab.training.evaluate as evaluate
    from tunelab.catalog.greedy import cache_bytes_per_token

    base, model, packed, loss, answers = _packed_and_padded(models_dir)
    monkeypatch.setattr(evaluate, "LOSS_PASS_TOKENS", 3 * max(
        it.length for it in packed.tokenized))
    groups = packed._loss_groups()
    first = packed._batch(groups[0], base.tokenizer.pad_token_id).input_ids.numel()
    monkeypatch.setattr(kv_cache, "PASS_CACHE_BYTES",
                        first * cache_bytes_per_token(base.model.config))
    given: list[bool] = []  # per decoded answer: whether it had a pass's states
    decode = evaluate.greedy_answers

    def watched(model, prompts, replies, pad_id, device, prefilled=None):
        given.extend(p is not None for p in prefilled or [None] * len(replies))
        return decode(model, prompts, replies, pad_id, device, prefilled)

    monkeypatch.setattr(evaluate, "greedy_answers", watched)
    with torch.no_grad():
        bound_loss, bound_answers = packed.score(model)
    assert any(given) and not all(given)  # the first pass's, not the later ones'
    assert abs(bound_loss - loss) < 1e-5
    assert bound_answers == answers


def test_the_first_models_misses_are_listed_first():
    """Against its base nearly every example differs; the examples the first model (the tuned
    one) answers wrongly lead the list, the rest follow, each part in the examples' order."""
    from tunelab.training.evaluate import MAX_DIFFERENCES, Answerer, compare

    examples = [Example(f"q{i}", f"a{i}") for i in range(MAX_DIFFERENCES + 10)]
    misses = {3, 17, 26}  # the tuned model's wrong answers, one past the listed 20

    def tuned(ex: Example) -> str:
        return "wrong" if int(ex.text_input[1:]) in misses else ex.output

    out = compare(examples, [Answerer("tuned", tuned), Answerer("base", lambda ex: "no idea")])
    listed = [d["text_input"] for d in out["differences"]]
    assert out["differing_count"] == len(examples)
    assert listed[:3] == ["q3", "q17", "q26"]
    assert listed[3:] == [f"q{i}" for i in range(len(examples)) if i not in misses][
        :MAX_DIFFERENCES - 3]
    # models that agree are not listed; one model alone lists nothing
    same = compare(examples[:4], [Answerer("x", tuned), Answerer("y", tuned)])
    assert same["differing_count"] == 0 and same["differences"] == []
