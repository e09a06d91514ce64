"""`tunelab tune` with validation data and `tunelab eval`, run as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_cli import env, run  # noqa: F401 - the fixture and the runner of test_cli


def write_labelled(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(
        json.dumps({"text_input": f"item {i}", "output": "even" if i % 2 == 0 else "odd"}) + "\n"
        for i in range(start, start + n)))
    return path


def test_tune_holds_out_scores_each_epoch_then_eval_compares_with_the_base(tmp_path, env):  # noqa: F811
    data = write_labelled(tmp_path / "parity.jsonl", 48)
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "2", "--learning-rate",
             "0.05", "-o", "out"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "8 of the 48 examples were held out for validation" in out
    assert "validation: 8 examples" in out
    for col in ("train loss", "val. loss", "exact match", "accuracy", "base"):
        assert col in out
    # the advice: an epoch and its margins, or (the tiny random model often learns nothing in
    # two epochs) that no epoch got any validation example right
    assert "Best epoch: " in out
    # why accuracy ranks them, in the words the API's metricNote gives
    assert "Accuracy ranks them: the outputs are labels" in " ".join(out.split())
    assert ("over the base model" in out) != ("No epoch got any of the 8" in " ".join(out.split()))
    assert "20/20" in out  # 40 training examples, batch 4, 2 epochs
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ev = manifest["evaluation"]
    assert len(ev["validation"]["held_out"]) == 8 and len(ev["epochs"]) == 2
    assert manifest["selected_epoch"] == manifest["advice"]["epoch"]

    test = write_labelled(tmp_path / "test.jsonl", 6, start=200)
    e = run(["eval", "out", "--data", str(test)], env, tmp_path)
    assert e.returncode == 0, e.stderr
    assert "Scores on test.jsonl (6 examples)" in e.stdout
    lines = e.stdout.splitlines()
    assert any(" out " in line and " ms " in line for line in lines)  # the tuned model
    assert any(" tiny " in line and " ms " in line for line in lines)  # the base, added
    assert "accuracy" in e.stdout and "mean latency" in e.stdout
    # the base beside a tuned classifier is asked with its labels, as the validation scores
    # ask it: every one of its answers listed is a label, and a line says why
    said = " ".join(e.stdout.split())
    assert ("tiny was asked as out is, with its 2 labels, as the validation scores of tunelab "
            "tune ask a base model") in said
    # not a terminal: a line as each model has answered every example, no live bar
    assert [line.split(", ")[:2] for line in lines if line.startswith("answered: ")] == [
        ["answered: out", "6/6"], ["answered: tiny", "6/6"]]
    assert ("Answers that differ" in e.stdout
            or "Every model gave the same answer" in e.stdout)
    assert "Traceback" not in e.stderr
    # with none shown, the count of differing answers still (never "the same answer"); and
    # everything in a JSON file shaped as the API's :evaluate response
    quiet = run(["eval", "out", "--data", str(test), "--show", "0", "--json", "scores.json"],
                env, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    said = " ".join(quiet.stdout.split())
    differing = re.search(r"Answers that differ \((\d+) of 6 examples", " ".join(e.stdout.split()))
    if differing:
        assert f"answers differ on {differing[1]} of 6 examples (--show N lists them" in said
    else:
        assert "Every model gave the same answer to every example." in said
    assert "Scores written to scores.json" in said
    wire = json.loads((tmp_path / "scores.json").read_text())
    assert wire["metric"] == "accuracy" and wire["exampleCount"] == 6
    assert wire["metricNote"].startswith("Accuracy ranks them")
    tuned, base = wire["results"]
    assert tuned["model"] == "out" and base["model"] == "tiny"
    assert {"score", "exactMatch", "accuracy", "confusion", "meanLatencyMs"} <= tuned.keys()
    assert base["askedAs"] == "out" and base["askedWith"] == "its 2 labels"
    assert f"{tuned['score']:.3f}" in quiet.stdout and f"{base['score']:.3f}" in quiet.stdout
    assert wire["differingCount"] == len(wire["differences"]) == int(
        differing[1] if differing else 0)
    for d in wire["differences"]:
        assert {"textInput", "expected", "answers"} == d.keys()
    # a file in a folder that does not exist is refused before anything is answered
    bad = run(["eval", "out", "--data", str(test), "--json", "no/such/dir/s.json"], env,
              tmp_path)
    assert bad.returncode == 2 and "the folder no/such/dir does not exist" in " ".join(
        bad.stderr.split())
    assert "answered:" not in bad.stdout and "Traceback" not in bad.stderr


def test_short_values_are_ranked_by_exact_match_in_the_tables(tmp_path, env):  # noqa: F811
    data = tmp_path / "codes.jsonl"
    data.write_text("".join(json.dumps({"text_input": f"code of item {i}", "output": f"A-{i}"})
                            + "\n" for i in range(48)))
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "--learning-rate",
             "0.05", "-o", "out"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    head = next(line for line in r.stdout.splitlines() if "val. loss" in line)
    assert head.index("token F1") < head.index("exact match")  # the score last, F1 beside it
    out = " ".join(r.stdout.split())  # the advice as one line, however the console wrapped it
    assert ("validation exact match" in out or "exact match 0.000 at every epoch" in out)
    assert "validation token F1" not in out
    assert "Exact match ranks them: the outputs are short values or share a fixed format" in out
    ev = json.loads((tmp_path / "out" / "manifest.json").read_text())["evaluation"]
    assert ev["metric"] == "exact_match"
    e = run(["eval", "out", "--data", str(data), "--no-base"], env, tmp_path)
    assert e.returncode == 0, e.stderr
    head = next(line for line in e.stdout.splitlines() if "model" in line and "latency" in line)
    assert head.index("exact match") < head.index("token F1")
    assert "Exact match ranks them" in " ".join(e.stdout.split())


def test_given_validation_file_and_its_duplicates(tmp_path, env):  # noqa: F811
    data = write_labelled(tmp_path / "train.jsonl", 24)
    val = tmp_path / "val.jsonl"
    val.write_text('{"text_input": "item 3", "output": "odd"}\n'
                   '{"text_input": "item 90", "output": "even"}\n')
    r = run(["tune", str(data), "--validation", str(val), "--base-model", "tiny", "--epochs",
             "1", "--learning-rate", "0.05", "-o", "out"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Each epoch is scored on the 2 validation examples given" in r.stdout
    assert "1 of 2 validation inputs also appear in the training data" in r.stderr


def test_eval_errors_are_plain_words(tmp_path, env):  # noqa: F811
    big = write_labelled(tmp_path / "big.jsonl", 101)
    r = run(["eval", "tiny", "--data", str(big)], env, tmp_path)
    assert r.returncode == 2 and "at most 100 are scored" in r.stderr
    (tmp_path / "empty-dir").mkdir()
    small = write_labelled(tmp_path / "small.jsonl", 2)
    r = run(["eval", "empty-dir", "--data", str(small)], env, tmp_path)
    assert r.returncode == 2 and "not a tuning output directory" in r.stderr
    blank = tmp_path / "blank.jsonl"  # a test file's problems are the test data's, by line
    blank.write_text('{"text_input": "item 1", "output": "odd"}\n'
                     '{"text_input": "item 2", "output": " "}\n')
    r = run(["eval", "tiny", "--data", str(blank)], env, tmp_path)
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "The test data has 1 problem" in said
    assert "blank.jsonl, line 2" in said
    assert "Traceback" not in r.stderr
