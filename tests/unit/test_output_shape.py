"""catalog/stopping.py: where every training output has one fixed shape (a date's
9999-99-99), an answer ends at its length, served and scored alike."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from conftest import scored_and_served

from tunelab.catalog.greedy import start_from_choices
from tunelab.catalog.stopping import (
    FINISHED,
    AnswerRules,
    Reply,
    _fits,
    keep_to_shape,
    output_shape,
    shape_masks,
    shape_of,
)
from tunelab.data.examples import Example
from tunelab.inference.generate import GenerationConfig, Generator
from tunelab.training.hyperparameters import Hyperparameters
from tunelab.training.loop import train

DATE = "9999-99-99"
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def _dates(n: int, seed: int = 0) -> list[Example]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        y, m, d = r.randint(1990, 2039), r.randint(1, 12), r.randint(1, 28)
        out.append(Example(f"{d:02d}-{MONTHS[m - 1]}-{y}", f"{y}-{m:02d}-{d:02d}"))
    return out


def test_the_shape_every_output_has():
    assert shape_of("2021-03-03") == "9999-99-99"
    assert shape_of("Ab-12 x") == "aa-99 a"
    assert output_shape([ex.output for ex in _dates(30)]) == "9999-99-99"
    # letters of any case and script are letters; the surrounding whitespace is not the shape
    codes = [" AB-123", "xy-999 ", "Qé-000", "zz-451", "KL-007", "mn-314", "PQ-271", "rs-828",
             "TU-161", "vw-803"]
    assert output_shape(codes) == "aa-999"
    assert output_shape(["14:30", "09:05", "23:59", "00:00", "12:15", "07:45", "18:20",
                         "11:11", "16:40", "05:55"]) == "99:99"


@pytest.mark.parametrize("outputs", [
    # one output of another length
    ["2021-03-03"] * 9 + ["2021-3-03"],
    # another character at one place
    ["2021-03-03"] * 9 + ["2021/03/03"],
    # a letter where the others have a digit
    ["2021-03-03"] * 9 + ["2021-0a-03"],
    # too few outputs to tell a format from chance
    ["2021-03-03"] * 9,
    # longer than a fixed format: text
    ["x" * 65] * 10,
    # an empty output
    ["2021-03-03"] * 9 + [" "],
    [],
])
def test_no_shape_where_outputs_differ(outputs):
    assert output_shape(outputs) == ""


def _fed(tiny_base, text: str, shape: str, end: bool = False) -> Reply:
    tok = tiny_base.tokenizer
    reply = Reply(tok, {tok.eos_token_id}, [], budget=50, rules=AnswerRules(shape=shape))
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        reply.add(t)
    if end:
        reply.add(tok.eos_token_id)
    return reply


def test_a_reply_ends_at_its_shapes_length(tiny_base):
    reply = _fed(tiny_base, "2029-01-2029", DATE)
    assert reply.done and reply.reason == FINISHED and reply.text() == "2029-01-20"
    # leading whitespace is not counted
    assert _fed(tiny_base, "  2029-01-2029", DATE).text() == "  2029-01-20"
    # a shorter answer is left as it is, and ends at its end token
    short = _fed(tiny_base, "2029-01-2", DATE)
    assert not short.done and short.text() == "2029-01-2"
    short.add(tiny_base.tokenizer.eos_token_id)
    assert short.done and short.text() == "2029-01-2"
    # no shape: no cut
    assert _fed(tiny_base, "2029-01-2029", "", end=True).text() == "2029-01-2029"


@pytest.fixture(scope="module")
def dater(tiny_base, tmp_path_factory):
    """A tiny model tuned a little on dates: it keeps writing past ten characters, which the
    shape cuts; the same adapter without the shape in its manifest shows what it writes."""
    out = tmp_path_factory.mktemp("dater")
    r = train(tiny_base, _dates(24), Hyperparameters(epoch_count=1, batch_size=4,
                                                     learning_rate=0.001), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output_shape"] == "9999-99-99"
    bare = tmp_path_factory.mktemp("bare")
    shutil.copytree(r.adapter_dir, bare / "adapter")
    (bare / "manifest.json").write_text(json.dumps({**manifest, "output_shape": ""}))
    return r.adapter_dir, bare / "adapter"


def test_served_answers_keep_to_the_shape(tiny_serving_base, dater):
    adapter, bare = dater
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=24)
    prompts = [ex.text_input for ex in _dates(8, seed=1)]

    def served(adapter_dir):
        return [gen.generate([("user", p)], None, cfg, adapter_dir).candidates[0]
                for p in prompts]

    kept, free = served(adapter), served(bare)
    # on its own the model writes past ten characters and off the shape: the shape is what
    # changed them
    assert any(len(f.text.strip()) > 10 for f in free)
    assert any(shape_of(f.text.strip()[:10]) != DATE for f in free)
    for k, f in zip(kept, free, strict=True):
        # every answer keeps to it: a digit at each 9, '-' at each '-', at most ten characters
        # (an end token may come before)
        text = k.text.strip()
        assert shape_of(text) == DATE[:len(text)] and k.finish_reason == FINISHED
        # greedy's own answer as far as it kept the shape (one byte a token here)
        text = f.text.lstrip()
        same = next((i for i in range(10) if i >= len(text)
                     or shape_of(text[i]) != DATE[i]), 10)
        assert k.text.lstrip()[:same] == text[:same]
    assert any(len(k.text.strip()) == 10 for k in kept)
    # batched (tunelab eval) and streamed answers are the same
    assert gen.answers([([("user", p)], None) for p in prompts], 24, adapter) == [
        k.text for k in kept]
    streamed = "".join(ch.text for ch in gen.stream([("user", prompts[0])], None, cfg, adapter))
    assert streamed == kept[0].text
    # a sampled answer keeps to it too
    hot = GenerationConfig(max_output_tokens=24, temperature=1.5, seed=3)
    for p in prompts[:3]:
        text = gen.generate([("user", p)], None, hot, adapter).candidates[0].text.strip()
        assert shape_of(text) == DATE[:len(text)]


def _reply(tiny_base, shape: str, text: str = "") -> Reply:
    tok = tiny_base.tokenizer
    reply = Reply(tok, {tok.eos_token_id}, [], budget=50, rules=AnswerRules(shape=shape))
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        reply.add(t)
    return reply


def _token(tiny_base, char: str) -> int:
    (token,) = tiny_base.tokenizer(char, add_special_tokens=False)["input_ids"]
    return token


def test_greedy_takes_the_most_likely_token_that_keeps_the_shape(tiny_base):
    import torch

    tok = tiny_base.tokenizer
    h, three, colon = (_token(tiny_base, c) for c in "h3:")
    logits = torch.zeros((2, len(tok)))
    logits[:, h], logits[:, three], logits[:, colon] = 5.0, 4.0, 3.0
    at_two, free = _reply(tiny_base, "99:99", "2"), _reply(tiny_base, "")
    keep_to_shape(logits, [at_two, free])
    # a digit at the second place: '3', the most likely digit; the reply without a shape
    # keeps every token
    assert int(logits[0].argmax()) == three and int(logits[1].argmax()) == h
    assert logits[0, h] == float("-inf") and logits[1, h] == 5.0
    # after two digits only ':' fits
    allowed = _reply(tiny_base, "99:99", "12").allowed()
    assert allowed.nonzero().flatten().tolist() == [colon]
    # an end token writes no character: it keeps its logit, and ends a value shorter than the
    # shape (a year 476 where every training year had four digits)
    eos = tok.eos_token_id
    logits = torch.zeros((1, len(tok)))
    logits[0, eos], logits[0, h] = 6.0, 5.0
    keep_to_shape(logits, [_reply(tiny_base, "9999", "476")])
    assert int(logits[0].argmax()) == eos and logits[0, h] == float("-inf")
    reply = start_from_choices(_reply(tiny_base, "9999", "476"), [eos], [([6.0, 5.0], [eos, h])])
    assert reply.done and reply.text() == "476"
    # the loss pass's candidates alike: the first that keeps the shape, or none taken
    reply = start_from_choices(_reply(tiny_base, "99:99", "2"), [three],
                               [([5.0, 4.0], [h, three])])
    assert reply.text() == "23"
    reply = start_from_choices(_reply(tiny_base, "99:99", "2"), [h], [([5.0], [h])])
    assert reply.text() == "2"  # decoded on from here, where every token is looked at


def test_what_a_place_of_the_shape_allows(tiny_base):
    tok = tiny_base.tokenizer
    masks = shape_masks(tok, "aa-99")
    assert masks.shape == (5, len(tok))
    words = [{tok.decode([i]) for i in row.nonzero().flatten().tolist()} for row in masks]
    assert {"A", "b", "z"} <= words[0] and not words[0] & {"1", "-", " "}
    assert words[2] == {"-"} and {"0", "9"} <= words[3]
    # a token may begin with whitespace at the first place only, and run past the shape's end
    # (the answer is cut there); part of a character's bytes fits a letter or a character
    # outside ASCII, never a digit or an ASCII sign
    assert _fits(" ab", "a") is False and _fits("a", "aa-99") and _fits("99-", "99")
    assert _fits("\ufffd", "a") and _fits("\ufffd", "é-9") and _fits("9\ufffd", "9a")
    assert not _fits("\ufffd", "9") and not _fits("\ufffd", "-") and not _fits("", "9")
    # a reply whose text ends inside a character is not held to a place yet
    split = _reply(tiny_base, "aé-99", "x")
    split.add(tok("é", add_special_tokens=False)["input_ids"][0])
    assert split.incomplete and split.allowed() is None


def test_a_character_of_several_tokens_keeps_its_place(tiny_base):
    """A letter the vocabulary writes in several tokens (the tiny model's: one a byte; the
    default model's '年' is two): its first part may come where the shape has a letter, the
    answer is free while the character is incomplete, and the shape holds again after it."""
    tok = tiny_base.tokenizer
    first, second, third = tok("年", add_special_tokens=False)["input_ids"]
    reply = _reply(tiny_base, "9999a99a", "2021")
    assert reply.allowed()[first]  # a letter's first byte at a letter's place
    assert not _reply(tiny_base, "9999a99a", "202").allowed()[first]  # not at a digit's
    reply.add(first)
    assert reply.incomplete and reply.allowed() is None
    reply.add(second)
    reply.add(third)
    assert reply.text() == "2021年" and not reply.incomplete
    digits = {tok.decode([i]) for i in reply.allowed().nonzero().flatten().tolist()}
    assert digits == set("0123456789")


def _digits_only_tokenizer():
    """A real tokenizer whose vocabulary holds the ten digits, '-' and the specials alone."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate([*"0123456789-", "<unk>", "<eos>"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    raw.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>")


def test_no_token_is_refused_where_the_shape_cannot_be_written():
    tok = _digits_only_tokenizer()
    assert tok.decode(tok("12-3", add_special_tokens=False)["input_ids"]) == "12-3"
    masks = shape_masks(tok, "99-9")
    assert [tok.decode(row.nonzero().flatten().tolist()) for row in masks] == [
        "0123456789", "0123456789", "-", "0123456789"]
    # no token writes a letter: a shape with one holds nothing back
    assert shape_masks(tok, "9a") is None
    reply = Reply(tok, {tok.eos_token_id}, [], budget=5, rules=AnswerRules(shape="9a"))
    assert reply.allowed() is None


def test_validation_scores_count_the_kept_answers(tiny_base, tiny_serving_base, dater):
    adapter, _ = dater
    scored, served = scored_and_served(tiny_base, tiny_serving_base, adapter,
                                       _dates(8, seed=2), rules=AnswerRules(shape=DATE))
    assert scored == served
    assert all(shape_of(a.strip()) == DATE[:len(a.strip())] for a in scored)
    assert any(len(a.strip()) == 10 for a in scored)


def test_shapes_asked_for_from_many_threads_at_once():
    """The server answers in several threads: each shape's tokens are worked out once and
    alike, also while older shapes are let go (more than SHAPE_MASKS of them)."""
    from concurrent.futures import ThreadPoolExecutor

    from tunelab.catalog.stopping import SHAPE_MASKS

    tok = _digits_only_tokenizer()
    shapes = ["9" * n + "-9" for n in range(1, SHAPE_MASKS + 5)] * 3
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda s: shape_masks(tok, s), shapes))
    for shape, masks in zip(shapes, found, strict=True):
        assert [tok.decode(row.nonzero().flatten().tolist()) for row in masks] == (
            ["0123456789"] * (len(shape) - 2) + ["-", "0123456789"])


def test_free_answers_keep_no_shape(tiny_base, tmp_path):
    """Free answers, as asked (``--free-answers``, ``answerLabels: false``): the manifest keeps
    no shape, so every answer is the model's own."""
    r = train(tiny_base, _dates(24), Hyperparameters(epoch_count=1, batch_size=4,
                                                     learning_rate=0.001, answer_labels=False),
              tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["output_shape"] == ""
    assert r.manifest["output_shape"] == ""
