"""The tunelab CLI, run as a user runs it (a subprocess), on the tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def write_jsonl(path: Path, n: int = 24, bad_row: int | None = None) -> Path:
    lines = []
    for i in range(n):
        out = "" if i + 1 == bad_row else f"{2 * i + 1}"
        lines.append(json.dumps({"text_input": f"add {i} and {i + 1}", "output": out}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def env(tmp_path, models_dir, tiny_base):
    e = dict(os.environ)
    e["TUNELAB_HOME"] = str(tmp_path / "home")
    e["TUNELAB_EXTRA_MODELS"] = json.dumps({"tiny": str(tiny_base.path)})
    e["COLUMNS"] = "200"
    return e


def run(args, env, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_tune_then_generate_then_use_epoch(tmp_path, env):
    data = write_jsonl(tmp_path / "sums.jsonl")
    r = run(
        [
            "tune",
            str(data),
            "--base-model",
            "tiny",
            "--epochs",
            "2",
            "--learning-rate",
            "0.02",
            "-o",
            "out",
        ],
        env,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "Per epoch" in r.stdout and "Epoch advice: From the training loss" in r.stdout
    assert "24 examples: 2 epochs × 6 steps (batch size 4)" in " ".join(r.stdout.split())
    assert "fewer than 40, so none were held out" in r.stdout
    # not a terminal: no live bar, a line per epoch (ceil(24/4) = 6 steps each)
    said = [line for line in r.stdout.splitlines() if line.startswith("tuning: ")]
    assert [line.split(", loss ")[0] for line in said] == [
        "tuning: epoch 1/2, step 6/12", "tuning: epoch 2/2, step 12/12"]
    assert all(line.endswith(" elapsed") for line in said) and "tuning ━" not in r.stdout
    assert "Warning" not in r.stdout + r.stderr  # no library deprecation notices
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["snapshots"]) == 12
    g = run(["generate", "out", "add 1 and 2", "--max-output-tokens", "5"], env, tmp_path)
    assert g.returncode == 0, g.stderr
    assert "Warning" not in g.stdout + g.stderr
    u = run(["use-epoch", "out", "1"], env, tmp_path)
    assert u.returncode == 0 and "epoch 1" in u.stdout
    bad = run(["use-epoch", "out", "9"], env, tmp_path)
    assert bad.returncode == 2 and "available epochs: 1, 2" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_one_epoch_of_one_step_is_said_in_the_singular(tmp_path, env):
    data = write_jsonl(tmp_path / "sums.jsonl", n=20)
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "--batch-size", "20",
             "-o", "out"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "20 examples: 1 epoch × 1 step (batch size 20)" in " ".join(r.stdout.split())


def test_tune_says_when_its_memory_budget_splits_the_batches(tmp_path, env):
    """The tiny model keeps 5 KB a token: 16 MB holds passes of ~3,300 tokens, not one step of
    20 examples of ~370 tokens."""
    rows = [{"text_input": "add 3 and 4 " * (25 + i // 2), "output": str(i)} for i in range(20)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["tune", str(data), "--base-model", "tiny", "--epochs", "1", "--batch-size", "20"]
    r = run([*args, "-o", "split"], {**env, "TUNELAB_TRAIN_MEMORY_MB": "16"}, tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "memory: activations kept, batches split into passes of at most" in said
    assert "to fit 16 MB (TUNELAB_TRAIN_MEMORY_MB)" in said
    r = run([*args, "-o", "whole"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "split into passes" not in r.stdout and "recomputed" not in r.stdout


def test_bad_data_is_reported_with_its_line_and_no_traceback(tmp_path, env):
    data = write_jsonl(tmp_path / "bad.jsonl", n=24, bad_row=5)
    r = run(["tune", str(data), "--base-model", "tiny"], env, tmp_path)
    assert r.returncode == 2
    assert "bad.jsonl, line 5" in r.stderr and "output" in r.stderr
    assert "Traceback" not in r.stderr


def test_too_few_examples_and_both_rates(tmp_path, env):
    data = write_jsonl(tmp_path / "few.jsonl", n=5)
    r = run(["tune", str(data), "--base-model", "tiny"], env, tmp_path)
    assert r.returncode == 2 and "20" in r.stderr and "Traceback" not in r.stderr
    r = run(
        ["tune", str(data), "--learning-rate", "0.1", "--learning-rate-multiplier", "2"],
        env,
        tmp_path,
    )
    assert r.returncode == 2 and "not both" in r.stderr


def test_missing_file_and_unknown_model(tmp_path, env):
    r = run(["tune", "nope.csv"], env, tmp_path)
    assert r.returncode == 2 and "nope.csv" in r.stderr and "Traceback" not in r.stderr
    data = write_jsonl(tmp_path / "ok.jsonl")
    r = run(["tune", str(data), "--base-model", "gpt-17"], env, tmp_path)
    assert r.returncode == 2 and "Known base models" in r.stderr


def test_models_lists_the_catalog(tmp_path, env):
    r = run(["models"], env, tmp_path)
    assert r.returncode == 0
    assert "smollm2-135m-instruct" in r.stdout and "gemma-3-270m" in r.stdout
    assert "tiny" in r.stdout


def test_ctrl_c_cancels_cleanly_and_keeps_the_adapter(tmp_path, env):
    data = write_jsonl(tmp_path / "long.jsonl", n=40)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunelab.cli",
            "tune",
            str(data),
            "--base-model",
            "tiny",
            "--epochs",
            "1000",
            "--batch-size",
            "1",
            "-o",
            "out",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = tmp_path / "out" / "checkpoints" / "epoch-1"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "training never reached its first checkpoint"
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, errs
    assert "Cancelling after this step" in errs
    assert "cancelled" in out and "quality is unpredictable" in out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "cancelled"
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_tune_with_a_refit_then_choose_an_epoch_and_the_refit_again(tmp_path, env):
    """48 examples, epochs automatic: 12 held out choose the stopping epoch, then a refit on all
    48 is served (training/refit.py), and the output says so."""
    data = write_jsonl(tmp_path / "sums.jsonl", n=48)
    r = run(["tune", str(data), "--base-model", "tiny", "--batch-size", "8",
             "--learning-rate", "0.02", "-o", "out"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # rich wraps long lines
    assert "Served model: a refit (automatic)" in text
    # a line per epoch of each run: 32 examples in 4 steps an epoch, then 48 in 6
    said = [line.split(", loss ")[0] for line in r.stdout.splitlines()
            if line.startswith("tuning: ")]
    assert re.fullmatch(r"tuning: epoch 1/\d+, step 4/\d+", said[0]), said
    refit = [line for line in said if line.startswith("tuning: refit on all 48, epoch ")]
    assert refit and refit[-1].startswith(f"tuning: refit on all 48, epoch {len(refit)}/")
    assert "Served: The served model is a refit: it trained on all 48 examples for" in text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    epoch = manifest["refit"]["from_epoch"]
    assert f"To serve epoch {epoch} of the run that held examples out instead: tunelab " \
           f"use-epoch out {epoch}" in text
    u = run(["use-epoch", "out", "1"], env, tmp_path)
    assert u.returncode == 0 and "after epoch 1" in u.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["selected_epoch"] == 1
    back = run(["use-epoch", "out", "refit"], env, tmp_path)
    assert back.returncode == 0 and "refit on all the examples" in back.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["refit"]["served"]
    bad = run(["use-epoch", "out", "last"], env, tmp_path)
    assert bad.returncode == 2 and "an epoch number or 'refit'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_classifier_says_it_answers_with_its_labels_and_free_answers_turn_it_off(tmp_path,
                                                                                   env):
    labels = ["refund", "delivery", "account"]
    data = tmp_path / "route.jsonl"
    data.write_text("".join(json.dumps({"text_input": f"message {i} from a customer",
                                        "output": labels[i % 3]}) + "\n" for i in range(24)))
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "-o", "on"], env,
            tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "Answers: a classifier: the training outputs are 3 labels" in said
    assert "tune with --free-answers" in said
    assert json.loads((tmp_path / "on" / "manifest.json").read_text())["answer_labels"]
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "--free-answers",
             "-o", "off"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "Answers: free text, as asked" in said and "a classifier" not in said
    assert json.loads((tmp_path / "off" / "manifest.json").read_text())["answer_labels"] is None
    assert "every training output holds" not in said  # labels hold no structure
    # tested on outputs that are none of its labels, `eval` says the labelled model cannot be
    # right on them (and how to let it answer freely); the free one gets no such line
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text_input": f"message {i} about {word}",
                                        "output": word}) + "\n"
                            for i, word in enumerate(["refund", "warranty", "invoice"])))
    r = run(["eval", "on", "off", "--data", str(test), "--no-base"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert ("on: 2 of the 3 expected outputs are none of its 3 labels (warranty, invoice); it "
            "answers with its labels, so it cannot be right on them. To let it answer freely, "
            "tune it again with --free-answers.") in said
    assert "off: " not in said


def test_tune_says_when_answers_may_not_end_before_the_format_is_whole(tmp_path, env):
    """Outputs that all share pieces of structure (catalog/stopping.py): the run says which,
    in one line, as it does for labels."""
    data = tmp_path / "people.jsonl"
    names = ["Ana", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
    data.write_text("".join(json.dumps({
        "text_input": f"{names[i % 8]} met {names[(i + 3) % 8]} in room {i}",
        "output": f"host: {names[i % 8]}; room: {i}"}) + "\n"
        for i in range(24)))
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "-o", "out"], env,
            tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    pieces = json.loads((tmp_path / "out" / "manifest.json").read_text())["output_pieces"]
    assert pieces == ["host: ", "; room: "]
    assert ("Answers: every training output holds 2 pieces of text in the same order "
            "('host: ', '; room: '); an answer does not end before it holds them all, and "
            "ends where it would write 'host: ' or '; room: ' again after the last of them; "
            "nor does it put a space right after any of them, as no training output does."
            ) in said
    # the names in the outputs are the prompts' own: a model tuned to copy (catalog/copying.py)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["copies_prompt"] is True
    assert ("Answers: the training outputs copy their words from the prompts; where the model "
            "hesitates between a new word and one of the prompt's, it writes the prompt's.") in said


def test_tune_says_when_answers_keep_to_one_shape(tmp_path, env):
    """Outputs of one fixed shape (catalog/stopping.py, a time's 99:99): the run says so in one
    line, and the manifest keeps the shape every answer is held to."""
    data = tmp_path / "times.jsonl"
    data.write_text("".join(json.dumps({
        "text_input": f"{i % 12 + 1} past {i % 9 + 1} in the evening",
        "output": f"{i % 9 + 13}:{i % 12 + 1:02d}"}) + "\n" for i in range(24)))
    r = run(["tune", str(data), "--base-model", "tiny", "--epochs", "1", "-o", "out"], env,
            tmp_path)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["output_shape"] == "99:99"
    assert ("Answers: every training output has one shape, '99:99' (9: a digit, a: a letter); "
            "an answer keeps to it and ends once it is 5 characters long.") in said
