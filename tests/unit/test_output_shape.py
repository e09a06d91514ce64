"""catalog/stopping.py: where every training output has one fixed shape (a date's
9999-99-99), an answer ends at its length, served and scored alike."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from conftest import scored_and_served

from tunelab.catalog.stopping import FINISHED, Reply, output_shape, shape_of
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
    reply = Reply(tok, {tok.eos_token_id}, [], budget=50, shape=shape)
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


def test_served_answers_end_at_the_shapes_length(tiny_serving_base, dater):
    adapter, bare = dater
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=24)
    prompts = [ex.text_input for ex in _dates(8, seed=1)]

    def served(adapter_dir):
        return [gen.generate([("user", p)], None, cfg, adapter_dir).candidates[0]
                for p in prompts]

    cut, free = served(adapter), served(bare)
    # on its own the model writes past ten characters: the shape is what changed them
    assert any(len(c.text.strip()) > 10 for c in free)
    for c, f in zip(cut, free, strict=True):
        start = len(f.text) - len(f.text.lstrip())
        # the same greedy answer, cut at the shape's length (or left as it is if shorter)
        assert c.text == f.text[:start + 10]
        assert len(c.text.strip()) <= 10
        if len(f.text.strip()) > 10:
            assert c.finish_reason == FINISHED
    # batched (tunelab eval) and streamed answers are the same
    assert gen.answers([([("user", p)], None) for p in prompts], 24, adapter) == [
        c.text for c in cut]
    streamed = "".join(ch.text for ch in gen.stream([("user", prompts[0])], None, cfg, adapter))
    assert streamed == cut[0].text


def test_validation_scores_count_the_cut_answers(tiny_base, tiny_serving_base, dater):
    adapter, _ = dater
    scored, served = scored_and_served(tiny_base, tiny_serving_base, adapter,
                                       _dates(8, seed=2), shape="9999-99-99")
    assert scored == served
    assert all(len(a.strip()) <= 10 for a in scored)
