"""catalog/stopping.py: an answer does not end before the pieces every training output holds
(a template's labels, a JSON object's keys), served and scored alike."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import scored_and_served

from tunelab.catalog.stopping import (
    FINISHED,
    AnswerRules,
    Reply,
    has_pieces,
    output_ends,
    output_pieces,
    output_unspaced,
    refuse_end,
    refuse_off_format,
    unspaced_mask,
)
from tunelab.data.examples import Example
from tunelab.inference.generate import GenerationConfig, Generator
from tunelab.training.hyperparameters import Hyperparameters
from tunelab.training.loop import train

PEOPLE = ["Ada Okafor", "Ines Duarte", "James Carter", "Lucy Brown", "Kenji Sato", "Mia Rossi"]
CITIES = ["Porto", "Lisbon", "Lyon", "Split", "Oslo", "Graz"]


def _entities(n: int) -> list[Example]:
    return [Example(f"{PEOPLE[i % 6]} went to {CITIES[(i * 5) % 6]} on day {i}.",
                    f"people: {PEOPLE[i % 6]}; cities: {CITIES[(i * 5) % 6]}") for i in range(n)]


def test_the_pieces_every_output_holds_in_order():
    assert output_pieces([ex.output for ex in _entities(30)]) == ["people: ", "; cities: "]
    orders = [json.dumps({"item": item, "quantity": q, "size": size})
              for item, q, size in [("tea", 2, "large"), ("bagel", 1, None), ("latte", 12, "small"),
                                    ("scone", 3, None), ("mocha", 1, "medium")]]
    # the closing brace alone (one character) is too short to be told from chance
    assert output_pieces(orders) == ['{"item": "', '", "quantity": ', ', "size": ']


@pytest.mark.parametrize("outputs", [
    # free text shares ". " by chance: not structure
    ["The cat sat. It slept.", "A dog ran. It barked.", "Birds fly. They return.",
     "Rain fell. Streets flooded.", "Sun rose. Day began."],
    # labels: nothing shared
    ["positive", "negative", "mixed", "positive", "negative"],
    # "-0" is in every date, but cuts through a number: a chance piece
    ["2029-04-25", "2000-07-31", "1999-12-01", "2010-01-05", "2020-02-02"],
    # too few outputs to tell
    ["people: A; cities: B", "people: C; cities: D"],
    [],
])
def test_no_pieces_where_outputs_share_no_structure(outputs):
    assert output_pieces(outputs) == []


def test_pieces_are_looked_for_in_order():
    assert has_pieces("people: Ada; cities: Porto", ["people: ", "; cities: "])
    assert not has_pieces("; cities: Porto people: Ada", ["people: ", "; cities: "])
    assert not has_pieces("people: Ada", ["people: ", "; cities: "])
    assert has_pieces("anything", [])


def test_a_reply_may_not_end_before_its_pieces(tiny_base):
    tok = tiny_base.tokenizer
    eos = tok.eos_token_id
    reply = Reply(tok, {eos}, [], budget=50, rules=AnswerRules(pieces=("people: ", "; cities: ")))
    for t in tok("people: Ada", add_special_tokens=False)["input_ids"]:
        reply.add(t)
    assert not reply.may_end
    logits = torch.zeros(2, len(tok))
    logits[:, eos] = 10.0  # the end is the most likely token on both rows
    free = Reply(tok, {eos}, [], budget=50)
    refuse_end(logits, [reply, free])
    assert int(logits[0].argmax()) != eos and int(logits[1].argmax()) == eos
    for t in tok("; cities: Porto", add_special_tokens=False)["input_ids"]:
        reply.add(t)
    assert reply.may_end
    reply.add(eos)
    assert reply.done and reply.reason == FINISHED


def test_an_answer_as_long_as_the_longest_output_may_end_without_its_pieces(tiny_base):
    tok = tiny_base.tokenizer
    eos = tok.eos_token_id
    text = "Ada Okafor went to Porto"  # no pieces: a copy of the prompt
    held, bounded = (Reply(tok, {eos}, [], budget=50, rules=AnswerRules(
        pieces=("people: ", "; cities: "), longest=n)) for n in (0, len(text)))
    for t in tok(text, add_special_tokens=False)["input_ids"][:-1]:
        held.add(t)
        bounded.add(t)
    assert not held.may_end and not bounded.may_end  # shorter than the longest output
    last = tok(text, add_special_tokens=False)["input_ids"][-1]
    held.add(last)
    bounded.add(last)
    assert bounded.text() == text
    assert not held.may_end  # no length recorded (an older manifest): held open to its budget
    assert bounded.may_end
    logits = torch.zeros(2, len(tok))
    logits[:, eos] = 10.0
    refuse_end(logits, [held, bounded])
    assert int(logits[0].argmax()) != eos and int(logits[1].argmax()) == eos


def _tuned_and_bare(tiny_base, tmp_path_factory, name: str, examples: list[Example],
                    **without: object) -> tuple:
    """A tiny model tuned on ``examples`` (enough to end its answers): its adapter, its
    manifest, and the same adapter with the manifest's entries ``without`` (what the model
    answers without that rule)."""
    out = tmp_path_factory.mktemp(name)
    r = train(tiny_base, examples, Hyperparameters(epoch_count=10, batch_size=4,
                                                   learning_rate=0.01), out)
    manifest = json.loads((out / "manifest.json").read_text())
    bare = tmp_path_factory.mktemp(f"{name}-bare")
    shutil.copytree(r.adapter_dir, bare / "adapter")
    (bare / "manifest.json").write_text(json.dumps({**manifest, **without}))
    return r.adapter_dir, manifest, bare / "adapter"


@pytest.fixture(scope="module")
def extractor(tiny_base, tmp_path_factory):
    """A tiny model tuned on "sentence → people: …; cities: …", enough to end its answers."""
    adapter, manifest, bare = _tuned_and_bare(tiny_base, tmp_path_factory, "extractor",
                                              _entities(36), output_pieces=[])
    assert manifest["output_pieces"] == ["people: ", "; cities: "]
    return adapter, bare


def test_served_answers_do_not_end_before_the_pieces(tiny_serving_base, extractor):
    adapter, bare = extractor
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=64)
    # which prompts a tiny random model ends early depends on the CPU's rounding in training
    # (none of the first 8 on an AVX2-only CPU, 8 of the next 32), so the guard is checked on
    # 40 and the batched and streamed answers on the first 8
    asked = [f"Someone went somewhere on day {i}." for i in range(40)]
    prompts = asked[:8]
    pieces = ["people: ", "; cities: "]

    def served(adapter_dir):
        return [gen.generate([("user", p)], None, cfg, adapter_dir).candidates[0]
                for p in asked]

    guarded, free = served(adapter), served(bare)
    longest = max(len(ex.output) for ex in _entities(36))
    # every answer holds the pieces, ran out of tokens or is as long as the longest training
    # output: none ended short without them
    assert all(has_pieces(c.text, pieces) or c.finish_reason == "MAX_TOKENS"
               or len(c.text.strip()) >= longest for c in guarded)
    # on its own the model ends some answers early: the guard is what changed them
    assert any(c.finish_reason == FINISHED and not has_pieces(c.text, pieces)
               and len(c.text.strip()) < longest for c in free)
    # batched (tunelab eval) and streamed answers are the same
    batched = gen.answers([([("user", p)], None) for p in prompts], 64, adapter)
    assert batched == [c.text for c in guarded[:len(prompts)]]
    streamed = "".join(ch.text for ch in gen.stream([("user", prompts[0])], None, cfg, adapter))
    assert streamed == guarded[0].text


def test_validation_scores_count_the_answers_the_model_serves(tiny_base, tiny_serving_base,
                                                               extractor):
    adapter, _ = extractor
    rules = AnswerRules.from_record(json.loads((adapter.parent / "manifest.json").read_text()))
    assert rules.pieces == ("people: ", "; cities: ")
    assert rules.copies is True  # the names and cities are the prompts' own (catalog/copying.py)
    scored, served = scored_and_served(tiny_base, tiny_serving_base, adapter, _entities(8),
                                       rules=rules)
    assert scored == served


# product titles normalised: "brand | model | storage | color", three " | " in every output
BRANDS = ["Apple", "Nokia", "Sony", "Google"]
MODELS = ["X30", "G21", "Pixel 7", "Edge"]
COLORS = ["black", "green", "gray", "white", "blue"]


def _titles(n: int) -> list[Example]:
    return [Example(f"{BRANDS[i % 4]}/{MODELS[(i * 3) % 4]}/{64 * (1 + i % 3)}GB/{COLORS[i % 5]}",
                    f"{BRANDS[i % 4]} | {MODELS[(i * 3) % 4]} | {64 * (1 + i % 3)} GB | "
                    f"{COLORS[i % 5]}") for i in range(n)]


def test_the_texts_that_end_an_answer_after_its_last_piece():
    titles = [ex.output for ex in _titles(20)]
    pieces = output_pieces(titles)
    assert pieces == [" | ", " GB | "]
    assert output_ends(titles, pieces) == [" | ", " GB | "]
    # each text once, in order
    assert output_ends(titles, [" | ", " | ", " GB | "]) == [" | ", " GB | "]
    entities = [ex.output for ex in _entities(20)]
    assert output_ends(entities, ["people: ", "; cities: "]) == ["people: ", "; cities: "]
    # where some output holds a piece's text again after its last piece, it ends nothing
    lists = ["a | b | c", "d | e | f | g", "h | i | j", "k | l | m | n | o", "p | q | r"]
    assert output_pieces(lists) == [" | ", " | "]
    assert output_ends(lists, [" | ", " | "]) == []
    # no pieces, or too few outputs that hold them: no ends
    assert output_ends(titles, []) == []
    assert output_ends(titles[:3] + ["free text"] * 10, [" | ", " | ", " | "]) == []


def test_a_reply_ends_where_it_would_go_on_past_its_pieces(tiny_base):
    tok = tiny_base.tokenizer
    pieces = [" | ", " GB | ", " | "]
    tokens = tok("X30 | 512 GB | green | Nokia | official | 2022 | 10", add_special_tokens=False
                 )["input_ids"]
    reply = Reply(tok, set(), [], budget=100, rules=AnswerRules(tuple(pieces), (" | ",)))
    for t in tokens:
        reply.add(t)
        if reply.done:
            break
    assert reply.done and reply.reason == FINISHED and reply.cut
    assert reply.text() == "X30 | 512 GB | green | Nokia"
    assert len(reply.ids) < len(tokens)  # stopped as soon as the text was complete
    assert reply.may_end
    # the same text while the pieces are not all written yet is not cut; without ends, never
    for ends, prefix_pieces in (([" | "], [" | "] * 6), ([], pieces)):
        other = Reply(tok, set(), [], budget=100,
                      rules=AnswerRules(tuple(prefix_pieces), tuple(ends)))
        for t in tokens:
            other.add(t)
        assert not other.done and other.text() == tok.decode(tokens)


def test_the_pieces_no_output_puts_whitespace_after():
    titles = [ex.output for ex in _titles(20)]
    assert output_unspaced(titles, [" | ", " GB | "]) == [0, 1]
    orders = [f'{{"item": "{w}", "quantity": {i}}}' for i, w in enumerate(
        ["tea", "cake", "soup", "bread", "rice", "pie"])]
    assert output_unspaced(orders, ['{"item": "', '", "quantity": ', "}"]) == [0, 1]
    # one output with a space after the first piece: that place is not kept
    spaced = [*orders, '{"item": " jam", "quantity": 2}']
    assert output_unspaced(spaced, ['{"item": "', '", "quantity": ', "}"]) == [1]
    # too few outputs holding the pieces, or none: nothing kept
    assert output_unspaced(orders[:4] + ["free text"] * 10, ['{"item": "']) == []
    assert output_unspaced(orders, []) == []


def test_no_whitespace_is_written_right_after_such_a_piece(tiny_base):
    tok = tiny_base.tokenizer
    eos = tok.eos_token_id
    rules = AnswerRules(pieces=('{"item": "', '"}'), unspaced=(0,))
    spaced, bare = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" Maple", "m"))
    assert not bool(unspaced_mask(tok)[spaced]) and bool(unspaced_mask(tok)[bare])
    reply, free = (Reply(tok, {eos}, [], budget=50, rules=r)
                   for r in (rules, AnswerRules(pieces=rules.pieces)))
    opening = tok('{"item":', add_special_tokens=False)["input_ids"]
    for t in opening:  # the piece not yet whole: any token may come
        reply.add(t)
        free.add(t)
    assert reply.allowed() is None
    for t in tok(' "', add_special_tokens=False)["input_ids"]:
        reply.add(t)
        free.add(t)
    assert reply.text() == '{"item": "'
    logits = torch.zeros(2, len(tok))
    logits[:, spaced], logits[:, bare] = 5.0, 4.8  # " Maple" the most likely on both rows
    refuse_off_format(logits, [reply, free])
    assert int(logits[0].argmax()) == bare and int(logits[1].argmax()) == spaced
    reply.add(bare)
    assert reply.allowed() is None  # inside the value: spaces as the model writes them


@pytest.fixture(scope="module")
def normaliser(tiny_base, tmp_path_factory):
    """A tiny model tuned on product titles → "brand | model | storage | color"."""
    adapter, manifest, bare = _tuned_and_bare(tiny_base, tmp_path_factory, "normaliser",
                                              _titles(36), output_ends=[])
    assert manifest["output_pieces"] == [" | ", " GB | "]
    assert manifest["output_ends"] == [" | ", " GB | "]
    assert manifest["output_unspaced"] == [0, 1]
    assert manifest["longest_output_chars"] == max(len(ex.output) for ex in _titles(36))
    return adapter, bare


# titles of brands, models and colors never trained on
ASKED = [f"{b}/{m}/{s}GB/{c}" for b in ("Motorola", "Xiaomi") for m in ("Razr", "Poco F5")
         for s in (128, 512) for c in ("red", "silver", "blue", "green", "black")]


def _past_last_piece(text: str, pieces: list[str]) -> str:
    """What ``text`` holds after its last piece ("" where it does not hold them all)."""
    at = 0
    for piece in pieces:
        i = text.find(piece, at)
        if i < 0:
            return ""
        at = i + len(piece)
    return text[at:]


def test_served_answers_end_where_they_would_go_on_past_their_pieces(tiny_serving_base,
                                                                     normaliser):
    adapter, bare = normaliser
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=48)
    asked = ASKED
    pieces = [" | ", " GB | "]

    def served(adapter_dir):
        return [gen.generate([("user", p)], None, cfg, adapter_dir).candidates[0].text
                for p in asked]

    guarded, free = served(adapter), served(bare)
    assert not any(" | " in _past_last_piece(t, pieces) for t in guarded)
    # on its own the model goes on past them on some: the rule is what changed them
    assert any(" | " in _past_last_piece(t, pieces) for t in free)
    assert gen.answers([([("user", p)], None) for p in asked[:8]], 48, adapter) == guarded[:8]


def test_validation_scores_end_answers_as_served(tiny_base, tiny_serving_base, normaliser):
    adapter, _ = normaliser
    rules = AnswerRules.from_record(json.loads((adapter.parent / "manifest.json").read_text()))
    assert rules.pieces == (" | ", " GB | ") and rules.ends == (" | ", " GB | ")
    assert rules.longest == max(len(ex.output) for ex in _titles(36))
    # the unseen titles, some of which the model goes on past its pieces with
    asked = [Example(p, "Motorola | Razr | 128 GB | red") for p in ASKED]
    scored, served = scored_and_served(tiny_base, tiny_serving_base, adapter, asked,
                                       rules=rules)
    assert scored == served
    assert any(_past_last_piece(t, [" | ", " GB | "]) for t in scored)
