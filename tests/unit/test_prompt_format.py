"""The seed's advice enforced at validation: dataset size by task type, and inputs written in
another format than the rest, named by row; and the training format recorded for inference."""

from __future__ import annotations

import json

import pytest

from tunelab.data import Example
from tunelab.data.prompt_format import (
    CLASSIFICATION,
    DOCUMENT_SEARCH,
    SUMMARISATION,
    PromptFormat,
    detect_task,
    profile_of,
)
from tunelab.data.validate import validate
from tunelab.training import Hyperparameters, train

PREAMBLE = "Answer the question from the context."
LONG = " ".join(f"sentence {i} of a long article about topic {i % 7}." for i in range(30))


def qa(i: int) -> str:
    return f"{PREAMBLE}\nquestion: what is item {i}?\ncontext: item {i} is a thing"


def _messages(examples: list[Example]) -> list[str]:
    return [str(w) for w in validate(examples)]


def test_inputs_missing_a_field_label_are_named_by_row():
    exs = [Example(qa(i), f"thing {i}") for i in range(30)]
    exs[4] = Example(f"{PREAMBLE}\nquestion: what is item 4?", "thing 4")
    exs[17] = Example(f"{PREAMBLE}\nquestion: what is item 17?", "thing 17")
    found = [m for m in _messages(exs) if "field label" in m]
    assert found == [
        "training data, field 'text_input': examples 5 and 18 lack the field label 'context:' "
        "that the other 28 inputs carry. The model learns the format of the examples, so prompts "
        "in production must match the training format: write every input in one format, and "
        "send prompts in it"]


def test_inputs_missing_the_preamble_are_named_by_row():
    exs = [Example(qa(i), f"thing {i}") for i in range(30)]
    exs[9] = Example("question: what is item 9?\ncontext: item 9 is a thing", "thing 9")
    found = [m for m in _messages(exs) if "opening" in m]
    assert len(found) == 1
    assert found[0].startswith(f"training data, field 'text_input': example 10 lacks the opening "
                               f"\"{PREAMBLE}\" that the other 29 inputs start with.")


def test_one_format_everywhere_gives_no_format_warning():
    assert _messages([Example(qa(i), f"thing {i}") for i in range(30)]) == []


@pytest.mark.parametrize(("inputs", "outputs", "task"), [
    ([f"review {i}" for i in range(40)], ["good", "bad", "neutral", "mixed"] * 10,
     CLASSIFICATION),
    ([f"{LONG} ({i})" for i in range(40)], [f"a short summary of article {i} here"
                                             for i in range(40)], SUMMARISATION),
    ([f"where is the refund policy {i}" for i in range(40)], [f"doc-{i}, doc-{i + 1}"
                                                              for i in range(40)],
     DOCUMENT_SEARCH),
    ([f"date {i}" for i in range(40)], [f"2024-01-{i % 28 + 1:02d}" for i in range(40)], None),
    ([f"order {i}" for i in range(40)], [json.dumps({"item": i}) for i in range(40)], None),
])
def test_the_task_type_is_detected_from_the_outputs(inputs, outputs, task):
    assert detect_task(inputs, outputs) == task


def test_a_small_classification_dataset_gets_the_size_advice():
    exs = [Example(f"review number {i}", ["good", "bad", "neutral"][i % 3]) for i in range(40)]
    exs += [Example("review number 40", "mixed"), Example("review number 41", "mixed")]
    advice = [m for m in _messages(exs) if "recommended" in m]
    assert advice == [
        "training data: the outputs look like classification labels (4 labels; the fewest "
        "examples: 'mixed' 2, 'bad' 13, 'neutral' 13); for this kind of task 100 or more "
        "examples are recommended and 42 were given, so the tuned model may answer new inputs "
        "poorly. Add examples, covering every kind of input production will send"]
    big = [Example(f"review number {i}", ["good", "bad"][i % 2]) for i in range(100)]
    assert not [m for m in _messages(big) if "recommended" in m]


def test_summarisation_advice_names_the_range():
    exs = [Example(f"{LONG} ({i})", f"a short summary of article {i} here") for i in range(30)]
    (advice,) = [m for m in _messages(exs) if "recommended" in m]
    assert "summaries of longer inputs" in advice and "100-500 or more examples" in advice


def test_the_profile_and_the_check():
    profile = profile_of([qa(i) for i in range(20)])
    assert profile == PromptFormat(PREAMBLE, ("question:", "context:"), 20)
    assert profile.check(qa(99)) is None
    assert profile.check("  " + qa(99).replace("\n", "\n\n")) is None  # spacing is not format
    no_preamble = profile.check("question: what is x?\ncontext: x is y")
    assert f'start with "{PREAMBLE}"' in no_preamble and "field label" not in no_preamble
    no_context = profile.check(f"{PREAMBLE}\nquestion: what is x?")
    assert "carry the field label 'context:' at the start of a line" in no_context
    swapped = profile.check(f"{PREAMBLE}\ncontext: x is y\nquestion: what is x?")
    assert "give the fields in the order 'question:', 'context:'" in swapped
    assert profile_of([f"add {i} and {i + 1}" for i in range(20)]).empty
    assert PromptFormat.from_dict({"preamble": 3, "labels": "x"}) == PromptFormat()


def test_training_records_the_format_in_the_manifest(tiny_base, tmp_path):
    exs = [Example(qa(i), f"thing {i}") for i in range(8)]
    result = train(tiny_base, exs, Hyperparameters(epoch_count=1, batch_size=4,
                                                   learning_rate=0.01), tmp_path)
    recorded = json.loads((tmp_path / "manifest.json").read_text())["prompt_format"]
    assert recorded == {"preamble": PREAMBLE, "labels": ["question:", "context:"],
                        "example_count": 8}
    assert result.manifest["prompt_format"] == recorded
