"""A tuned classifier answers with one of its labels (``catalog/labels.py``): which outputs are
labels, the most likely label, and every answering path doing it alike, on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.catalog.labels import answer_labels, most_likely_labels, unreachable_note
from tunelab.catalog.stopping import Reply
from tunelab.data import Example
from tunelab.data.batches import encode_pieces, encode_prompt
from tunelab.inference import GenerationConfig, Generator
from tunelab.training import Hyperparameters, train
from tunelab.training.evaluate import ACCURACY, Evaluator
from tunelab.training.hyperparameters import ResolvedHyperparameters

INTENTS = ["check_balance", "lost_card", "change_pin", "open_account", "close_account",
           "report_fraud", "loan_inquiry", "exchange_rate", "card_declined", "update_address",
           "speak_to_human", "transfer_money"]


def _outputs(labels: list[str], n: int) -> list[str]:
    return [labels[i % len(labels)] for i in range(n)]


@pytest.mark.parametrize("inputs, outputs, validation, expected", [
    # a 3-way classifier
    ([f"review {i}" for i in range(20)], _outputs(["positive", "negative", "mixed"], 20), [],
     ["mixed", "negative", "positive"]),
    # 12 labels in 20 examples: eight seen twice, four once (the benchmark's intent at 20)
    ([f"message {i}" for i in range(20)], _outputs(INTENTS, 20), [], sorted(INTENTS)),
    # yes / no questions: "no" inside "now" or "know" is not the label written in the input
    ([f"Do you know if the shop is open now, question {i}?" for i in range(20)],
     _outputs(["yes", "no"], 20), [], ["no", "yes"]),
    # a classifier's input names its label now and then
    ([f"is my phone under warranty, case {i}" if i % 4 == 0 else f"case {i}" for i in range(20)],
     _outputs(["warranty", "billing"], 20), [], ["billing", "warranty"]),
    # validation outputs among the labels
    ([f"t{i}" for i in range(30)], _outputs(["yes", "no"], 30), ["no", "yes "], ["no", "yes"]),
])
def test_classification_outputs_are_labels(inputs, outputs, validation, expected):
    assert answer_labels(inputs, outputs, validation) == expected


@pytest.mark.parametrize("inputs, outputs, validation", [
    # every output different (dates, amounts): values, not labels
    ([f"d{i}" for i in range(20)], [f"2021-03-{i + 1:02d}" for i in range(20)], []),
    # many outputs seen once: a new input would often need a value never seen
    ([f"c{i}" for i in range(20)], _outputs(["France", "Spain"], 12) + [f"C{i}" for i in range(8)],
     []),
    # copied from the input: extraction, whose answers are new at every input
    ([f"the pet is a {p}" for p in _outputs(["cat", "dog"], 20)], _outputs(["cat", "dog"], 20),
     []),
    # long outputs are not labels
    ([f"x{i}" for i in range(20)], _outputs(["one two three four five", "six"], 20), []),
    # a single output
    ([f"x{i}" for i in range(20)], ["ok"] * 20, []),
    # a validation output never trained on: the set is open
    ([f"t{i}" for i in range(30)], _outputs(["yes", "no"], 30), ["maybe"]),
])
def test_other_outputs_are_not_labels(inputs, outputs, validation):
    assert answer_labels(inputs, outputs, validation) is None


def test_the_most_likely_label_is_the_one_the_models_own_probabilities_rank_first(
        tiny_serving_base):
    base = tiny_serving_base
    tok, template = base.tokenizer, base.template
    labels = ["positive", "negative", "mixed", "not sure at all"]
    label_ids = [encode_pieces(tok, template.output_pieces(label)) for label in labels]
    prompts = [encode_prompt(tok, template, [("user", text)], None)
               for text in ("Great bag.", "It broke on day one, sadly.", "ok",
                            "Arrived late and the strap is a different colour than shown.",
                            "meh", "Would buy again!")]
    with torch.inference_mode():
        chosen = most_likely_labels(base.model, prompts, label_ids, base.device)
        # run together or one prompt at a time: the same choice for each prompt
        assert [most_likely_labels(base.model, [p], label_ids, base.device)[0]
                for p in prompts] == chosen
        for prompt, k in zip(prompts, chosen, strict=True):
            sums = []
            for ids in label_ids:  # each label alone, the full logits of the model's forward
                logits = base.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                sums.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(ids)))
            assert k == max(range(len(sums)), key=sums.__getitem__)
        # the order of the labels does not change the choice
        flipped = most_likely_labels(base.model, prompts, label_ids[::-1], base.device)
    assert [len(labels) - 1 - k for k in flipped] == chosen


def _small_model(kind: str) -> torch.nn.Module:
    """A randomly initialised model of a few layers: Llama with SDPA or eager attention, or
    Gemma 3 whose local layers' window (4) is shorter than every prompt below."""
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    if kind == "gemma3-window":
        config = Gemma3TextConfig(**shape, sliding_window=4,
                                  layer_types=["sliding_attention", "full_attention"])
        model = Gemma3ForCausalLM(config)
    else:
        config = LlamaConfig(**shape)
        config._attn_implementation = "eager" if kind == "llama-eager" else "sdpa"
        model = LlamaForCausalLM(config)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama-sdpa", "llama-eager", "gemma3-window"])
def test_label_scores_laid_out_in_one_row_or_read_from_a_cache_are_the_models_own(kind):
    """Each prompt's labels laid after it in one row (each attending to the prompt and itself)
    and the labels read from the prompt's cached keys and values give the log-probabilities
    the model's own forward pass gives each label after the prompt alone."""
    from tunelab.catalog import labels as lab

    model = _small_model(kind)
    prompts = [[1, 5, 9, 3, 7, 2], [1, 4, 4, 8, 2, 6, 11, 13, 2], [1, 30, 2, 9, 17, 2, 40]]
    label_ids = [[10, 11, 12, 2], [10, 20, 2], [33, 2], [5, 6, 7, 8, 9, 2]]
    decoder = model.get_decoder()
    with torch.inference_mode():
        want = []
        for prompt in prompts:
            logp = []
            for ids in label_ids:
                out = torch.log_softmax(model(input_ids=torch.tensor([prompt + ids])).logits[0],
                                        -1)
                logp.append(sum(float(out[len(prompt) - 1 + j, t]) for j, t in enumerate(ids)))
            want.append(logp)
        assert lab._reads_masks(model.config)
        in_rows = lab._masked_scores(model, decoder, prompts, label_ids, "cpu")
        per_token = lab.cache_bytes_per_token(model.config)
        cached = lab._cached_scores(model, decoder, prompts, label_ids, 5, per_token * 3,
                                    1 << 30, "cpu")
        # a cache bound that holds no (prompt, label) pair: a label at a time
        shares = lab._cached_scores(model, decoder, prompts, label_ids, 5, per_token * 3, 1,
                                    "cpu")
        chosen = most_likely_labels(model, prompts, label_ids, "cpu")
        assert most_likely_labels(model, [], label_ids, "cpu") == []
        # rows too wide to lay out, a cache too small for two pairs: the same choice
        assert most_likely_labels(model, prompts, label_ids, "cpu", cache_bytes=1,
                                  masked_width=0) == chosen
    for got in (in_rows, cached, shares):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
    assert chosen == [max(range(4), key=row.__getitem__) for row in want]


def test_the_trainers_attention_scores_labels_in_rows_too(tiny_base):
    """The validation scores of a training run read labels through the trainer's own attention
    (training/segment_attention.py), which applies a mask it is given as SDPA does."""
    from tunelab.catalog import labels as lab
    from tunelab.training.loop import _private_model
    from tunelab.training.segment_attention import NAME, use_segment_attention

    model = _private_model(tiny_base.model)
    assert use_segment_attention(model) and model.config._attn_implementation == NAME
    assert lab._reads_masks(model.config)


@pytest.fixture(scope="module")
def classifier(tiny_base, tmp_path_factory):
    """A tiny model tuned a little on a 12-way classification: it answers mostly nonsense,
    which is what the labels are for."""
    examples = [Example(f"customer message number {i}", INTENTS[i % 12]) for i in range(36)]
    out = tmp_path_factory.mktemp("classifier")
    r = train(tiny_base, examples, Hyperparameters(epoch_count=1, batch_size=4,
                                                    learning_rate=0.01), out)
    assert json.loads((out / "manifest.json").read_text())["answer_labels"] == sorted(INTENTS)
    return r.adapter_dir


def test_every_answer_of_a_tuned_classifier_is_one_of_its_labels(tiny_serving_base,
                                                                  classifier):
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=12)
    prompts = [f"please help {i}" for i in range(6)]
    results = [gen.generate([("user", p)], None, cfg, classifier).candidates[0]
               for p in prompts]
    assert all(c.text in INTENTS and c.finish_reason == "STOP" for c in results)
    replaced = [c for c in results if c.replaced is not None]
    assert replaced and all(c.replaced not in INTENTS for c in replaced)
    # the same answers batched (tunelab eval, the compare page) and streamed (one chunk: a
    # label is known only once the answer is whole)
    batched = gen.answers([([("user", p)], None) for p in prompts], 12, classifier)
    assert batched == [c.text for c in results]
    chunks = list(gen.stream([("user", prompts[0])], None, cfg, classifier))
    assert len(chunks) == 1 and chunks[0].text == results[0].text
    assert chunks[0].replaced == results[0].replaced
    # a base model, or a model whose outputs are not labels, answers freely
    free = gen.generate([("user", prompts[0])], None, cfg).candidates[0]
    assert free.replaced is None


def test_a_label_longer_than_the_answer_budget_is_not_answered(tiny_serving_base, classifier):
    """maxOutputTokens is a limit: where no label fits it, the model's own answer stands."""
    gen = Generator(tiny_serving_base)
    tok, template = tiny_serving_base.tokenizer, tiny_serving_base.template
    shortest = min(len(encode_pieces(tok, template.output_pieces(x))) - 1 for x in INTENTS)
    cfg = GenerationConfig(max_output_tokens=shortest - 1)
    c = gen.generate([("user", "please help")], None, cfg, classifier).candidates[0]
    assert c.replaced is None and c.finish_reason == "MAX_TOKENS"


def test_validation_scores_count_the_answers_the_model_serves(tiny_base, tiny_serving_base,
                                                               classifier):
    """The trainer's validation answers are chosen among the labels as served ones are, so the
    scores that choose the epoch are those of what the user gets."""
    from peft import PeftModel

    from tunelab.training.loop import _private_model

    examples = [Example(f"another message {i}", INTENTS[i % 12]) for i in range(12)]
    model = PeftModel.from_pretrained(_private_model(tiny_base.model), classifier).eval()
    evaluator = Evaluator(tiny_base, examples, ACCURACY, labels=sorted(INTENTS))
    with torch.no_grad():
        _, scored = evaluator.score(model)
        _, free = Evaluator(tiny_base, examples, ACCURACY).score(model)
    served = Generator(tiny_serving_base).answers(
        [([("user", ex.text_input)], None) for ex in examples], evaluator.max_new_tokens,
        classifier)
    assert scored == served and all(a in INTENTS for a in scored)
    assert any(a not in INTENTS for a in free)


def test_a_user_can_turn_the_labels_off(tiny_base, tiny_serving_base, tmp_path):
    """``answer_labels=False`` (the CLI's --free-answers, the API's answerLabels: false): the
    same classifier's answers are the model's own, and the plan says so in one line."""
    examples = [Example(f"customer message number {i}", INTENTS[i % 12]) for i in range(36)]
    hp = Hyperparameters(epoch_count=1, batch_size=4, learning_rate=0.01, answer_labels=False)
    resolved = hp.resolve(None, examples)
    assert resolved.answer_labels is False
    assert resolved.reasons[-1].startswith("Answers: free text, as asked")
    assert ResolvedHyperparameters.from_plan(resolved.plan()) == resolved
    # an older plan (no such field) keeps the rule on
    old = {k: v for k, v in resolved.plan().items() if k != "answer_labels"}
    assert ResolvedHyperparameters.from_plan(old).answer_labels is True
    assert Hyperparameters(epoch_count=1).resolve(None, examples).answer_labels is True
    r = train(tiny_base, examples, hp, tmp_path / "free")
    assert json.loads((tmp_path / "free" / "manifest.json").read_text())["answer_labels"] is None
    gen = Generator(tiny_serving_base)
    answers = [gen.generate([("user", f"please help {i}")], None,
                            GenerationConfig(max_output_tokens=12), r.adapter_dir).candidates[0]
               for i in range(6)]
    assert all(c.replaced is None for c in answers)
    assert any(c.text not in INTENTS for c in answers)


def test_test_outputs_none_of_the_labels_are_counted():
    labels = ["France", "Spain", "Japan"]
    assert unreachable_note(labels, ["France", " Spain ", "Japan"]) is None
    assert unreachable_note(None, ["Canada"]) is None  # a model that answers freely
    note = unreachable_note(labels, ["Canada", "France", "Peru", "Chad", "Oman", "Fiji", "Peru"])
    assert note.startswith("6 of the 7 expected outputs are none of its 3 labels "
                           "(Canada, Peru, Chad, Oman, …)")


def test_an_answer_ends_once_it_cannot_be_a_label(tiny_base, classifier):
    """An answer that is none of the labels is replaced, and what it was is not shown where
    answers are scored or batched: it ends once it cannot become a label, and what replaces it
    is the same as when it is decoded whole."""
    from peft import PeftModel

    from tunelab.catalog.greedy import greedy_answers
    from tunelab.catalog.labels import answers_as_labels, labels_to_end_at
    from tunelab.catalog.stopping import end_token_ids
    from tunelab.data.batches import label_token_ids
    from tunelab.training.loop import _private_model

    tok, template = tiny_base.tokenizer, tiny_base.template
    labels = sorted(INTENTS)
    label_ids = label_token_ids(tok, template, labels)
    prompts = [encode_prompt(tok, template, [("user", f"help me please {i}")], None)
               for i in range(8)]
    ends = end_token_ids(tok, template)
    model = PeftModel.from_pretrained(_private_model(tiny_base.model), classifier).eval()
    runs = {}
    for early in (False, True):
        replies = [Reply(tok, ends, [template.end], 24, labels=labels_to_end_at(
            labels, label_ids, 24) if early else ()) for _ in prompts]
        with torch.no_grad():
            answers = greedy_answers(model, prompts, replies, tok.pad_token_id, tiny_base.device)
            answers_as_labels(model, prompts, answers, labels, label_ids, tiny_base.device,
                              [24] * len(prompts))
        runs[early] = answers, sum(len(r.ids) for r in replies)
    assert runs[True][0] == runs[False][0] and all(a in INTENTS for a in runs[True][0])
    assert runs[True][1] < runs[False][1]  # fewer tokens decoded for the same answers
    # no label fits the budget: the answer is the model's own, decoded whole
    assert labels_to_end_at(labels, label_ids, 1) == () and labels_to_end_at(None, None, 9) == ()


def test_the_rule_of_an_answer_that_cannot_be_a_label(tiny_base):
    tok = tiny_base.tokenizer

    def fed(text: str, labels: tuple[str, ...]) -> Reply:
        reply = Reply(tok, set(), [], 50, labels=labels)
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            reply.add(t)
        return reply

    labels = ("lost_card", "loan_inquiry")
    assert not fed(" lo", labels).done  # the start of two labels
    assert not fed("lost_card", labels).done  # a label, maybe more to come
    assert not fed("lost_card and", labels).done  # a stop text could still cut it back
    assert fed("hello there", labels).done and fed("hello there", labels).off_labels
    assert not fed("hello there", ()).done  # no labels: decoded to its budget
