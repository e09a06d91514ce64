"""The one reader of a tuned model's manifest for serving (inference/manifest.py)."""

from __future__ import annotations

import json
import os

from tunelab.inference.manifest import MAX_MANIFEST_BYTES, NO_FACTS, served_facts
from tunelab.inference.prompt_check import trained_format


def _write(tmp_path, data) -> object:
    (tmp_path / "adapter").mkdir(exist_ok=True)
    path = tmp_path / "manifest.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return tmp_path / "adapter"


def test_reads_the_three_facts_serving_needs(tmp_path):
    adapter = _write(tmp_path, {
        "system_instruction": "Answer in one word.",
        "answer_labels": ["refund", "shipping", "other"],
        "prompt_format": {"preamble": "Classify:", "labels": ["question:"], "example_count": 20},
        "snapshots": [{"step": i} for i in range(50)],
    })
    facts = served_facts(adapter)
    assert facts.system_instruction == "Answer in one word."
    assert facts.answer_labels == ("refund", "shipping", "other")
    assert facts.prompt_format.preamble == "Classify:"
    assert trained_format(adapter) == facts.prompt_format


def test_a_base_model_or_a_missing_manifest_has_no_facts(tmp_path):
    assert served_facts(None) == NO_FACTS
    assert served_facts(tmp_path / "adapter") == NO_FACTS


def test_malformed_values_are_dropped_not_served(tmp_path):
    adapter = _write(tmp_path, {"system_instruction": 7, "answer_labels": ["only one"],
                                "prompt_format": "nonsense"})
    facts = served_facts(adapter)
    assert facts.system_instruction is None
    assert facts.answer_labels is None
    assert facts.prompt_format == NO_FACTS.prompt_format
    for text in ("[1, 2]", "{not json", "[" * 100_000):
        assert served_facts(_write(tmp_path, text)) == NO_FACTS
    blank = _write(tmp_path, {"answer_labels": ["a", "  "]})
    assert served_facts(blank).answer_labels is None


def test_a_rewritten_manifest_is_read_again(tmp_path):
    adapter = _write(tmp_path, {"answer_labels": ["yes", "no"]})
    assert served_facts(adapter).answer_labels == ("yes", "no")
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"answer_labels": ["yes", "no", "maybe"]}))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert served_facts(adapter).answer_labels == ("yes", "no", "maybe")


def test_a_file_over_the_bound_is_not_read(tmp_path):
    adapter = _write(tmp_path, {"answer_labels": ["yes", "no"]})
    with open(tmp_path / "manifest.json", "r+b") as f:  # sparse: no disk used
        f.truncate(MAX_MANIFEST_BYTES + 1)
    assert served_facts(adapter) == NO_FACTS


def test_the_pieces_ends_and_longest_output_are_read_only_when_well_formed(tmp_path):
    adapter = _write(tmp_path, {"output_pieces": [" | ", " GB | "], "output_ends": [" | "],
                                "longest_output_chars": 43})
    facts = served_facts(adapter)
    assert facts.rules.pieces == (" | ", " GB | ")
    assert facts.rules.ends == (" | ",)
    assert facts.rules.longest == 43
    bad_ends = ({"output_ends": [" | "]},  # ends without pieces end nothing
                {"output_pieces": [" | "], "output_ends": [" | ", 3]},
                {"output_pieces": [" | "], "output_ends": " | "},
                {"output_pieces": [" | "], "output_ends": [""]})
    for i, bad in enumerate(bad_ends):  # a folder each: the reader caches by time and size
        (tmp_path / f"e{i}").mkdir()
        assert served_facts(_write(tmp_path / f"e{i}", bad)).rules.ends == ()
    for i, bad in enumerate((-5, 0, True, "43", 4.5, None)):
        (tmp_path / f"l{i}").mkdir()
        facts = served_facts(_write(tmp_path / f"l{i}", {"longest_output_chars": bad}))
        assert facts.rules.longest == 0


def test_the_rules_the_trainer_records_are_the_rules_served(tmp_path):
    from tunelab.catalog.stopping import AnswerRules, answer_rules

    titles = [f"{b} | X{i} | {g} GB | black" for i, (b, g) in enumerate(
        [("Apple", 128), ("Nokia", 64), ("Sony", 256), ("Google", 512), ("Apple", 64),
         ("Nokia", 128)])]
    rules = answer_rules([f"a {t.lower()} phone" for t in titles], titles, titles[:2])
    assert rules.pieces == (" | ", " GB | black") and rules.copies
    assert rules.unspaced == (0,)  # " GB | black" ends the outputs: nothing follows it
    assert rules.longest == max(len(t) for t in titles)
    assert AnswerRules.from_record(rules.to_record()) == rules
    for bad in ([2], [-1], ["0"], 0, [True]):  # places that are not the pieces' own
        assert AnswerRules.from_record({**rules.to_record(), "output_unspaced": bad}
                                       ).unspaced == ()
    assert served_facts(_write(tmp_path, rules.to_record())).rules == rules
    # a classifier's answers are its labels: no pieces, shape or copying
    assert answer_rules(titles, titles, classifier=True) == AnswerRules(
        longest=rules.longest)
