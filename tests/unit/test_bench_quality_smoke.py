"""The quality benchmark (bench/quality): its tasks are what docs/quality.md says, and
``python -m bench.quality --quick`` runs every contender end to end on the tiny random model.
No assertion on time, nor on scores beyond their range (a random model's scores mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.quality.__main__ import table, targets
from bench.quality.contenders import CONTENDERS
from bench.quality.tasks import POOL, SEED, TASKS, TESTS, check_disjoint, make_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(TASKS))
def test_task_data_is_fixed_and_test_inputs_are_new(name):
    task = make_task(name)
    check_disjoint(task)  # 500 training and 100 test examples, no test input trained on
    assert make_task(name, SEED) == task  # a fixed seed: the same data every run
    assert len({ex.text_input for ex in task.train}) == POOL
    assert len({ex.text_input for ex in task.test}) == TESTS
    assert all(ex.output.strip() for ex in task.train + task.test)


def test_intent_covers_every_label_at_20_examples_and_tests_unseen_phrasings():
    task = make_task("intent")
    labels = {ex.output for ex in task.train}
    assert len(labels) == 12
    assert {ex.output for ex in task.train[:20]} == labels  # a prefix holds every label
    assert {ex.output for ex in task.test} == labels


def test_qa_prompts_carry_the_preamble_and_field_labels():
    from tunelab.data.prompt_format import profile_of

    task = make_task("qa")
    profile = profile_of([ex.text_input for ex in task.train]).to_dict()
    assert profile["preamble"].startswith("Answer the question")
    assert profile["labels"] == ["question:", "context:"]
    for ex in task.test:  # the answer is in the context, written capitalised or not
        assert ex.output in ex.text_input.lower().split("context:")[1]


def test_unknown_task_is_named_with_the_choices(capsys):
    from bench.quality.__main__ import main

    with pytest.raises(SystemExit):
        main(["--tasks", "intent,poetry"])
    err = capsys.readouterr().err
    assert "unknown task poetry" in err and "entities" in err


def test_unknown_base_model_is_said_before_any_run(capsys):
    from bench.quality.__main__ import main

    assert main(["--base-model", "no-such-model", "--contenders", "base"]) == 2
    err = capsys.readouterr().err
    assert "Base model 'no-such-model' is not in the catalog" in err
    assert "Traceback" not in err


def test_a_failed_run_is_reported_in_its_row_and_the_exit_status(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--base-model", str(folder), "--contenders",
         "base", "--tasks", "dates", "--sizes", "20", "--tests", "1", "--work",
         str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "dates base: FAILED: " in proc.stdout and "no config.json" in proc.stdout
    assert "| dates | 20 | failed |" in proc.stdout
    assert (tmp_path / "work" / "dates-0-base" / "log.txt").is_file()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_each_seed_runs_in_its_own_folder_and_a_failed_seed_fails_the_cell(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--base-model", str(folder), "--contenders",
         "tunelab", "--tasks", "dates", "--sizes", "20", "--tests", "1", "--seed", "3",
         "--seeds", "2", "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "training seeds 3, 4" in proc.stdout
    assert "dates n=20 tunelab seed 3: FAILED: " in proc.stdout
    assert "dates n=20 tunelab seed 4: FAILED: " in proc.stdout
    assert "| dates | 20 | failed |" in proc.stdout
    for seed in (3, 4):
        assert (tmp_path / "work" / f"dates-20-tunelab-seed{seed}" / "log.txt").is_file()
    assert "<task>-<size>-<contender>-seed<seed>/log.txt" in proc.stdout


def test_targets_are_checked_on_the_cells_run():
    def r(task, size, contender, score, seconds=10.0, kind="extraction"):
        return {"task": task, "size": size, "contender": contender, "score": score,
                "train_seconds": seconds, "kind": kind}

    results = [r("dates", 20, "tunelab", 0.80), r("dates", 20, "trl", 0.70),
               r("dates", 100, "tunelab", 0.96, 30.0), r("dates", 100, "trl", 0.97),
               r("dates", 100, "tunelab-gemini", 0.98, 10.0)]
    lines = targets(results)
    assert "tunelab beats TRL by ≥ 0.05 at 20 examples: 1 of 1" in lines
    assert "tunelab ≥ 0.95 at 100 examples on extraction/normalisation: 1 of 1" in lines
    assert "tunelab ≥ TRL at 100 examples: 0 of 1 (missed: dates)" in lines
    assert any(line.startswith("automatic settings within 0.01") and "missed: dates/100" in line
               for line in lines)
    assert any(line.startswith("automatic settings train in ≤ 2×") and "0 of 1" in line
               for line in lines)
    rows = table(results, ["dates"], [20, 100], ["tunelab", "tunelab-gemini", "trl"])
    assert rows[3].startswith("| dates | 100 | 0.96 | 0.98 | 0.97 | -0.01 | -0.02 |")


def test_several_seeds_are_judged_on_each_cells_mean():
    def r(seed, contender, score, seconds):
        return {"task": "entities", "size": 100, "contender": contender, "seed": seed,
                "score": score, "train_seconds": seconds, "kind": "extraction"}

    # one seed alone says automatic settings lose by 0.11; the mean over two says 0.04
    results = [r(0, "tunelab", 0.40, 100.0), r(0, "tunelab-gemini", 0.51, 80.0),
               r(1, "tunelab", 0.86, 120.0), r(1, "tunelab-gemini", 0.83, 100.0)]
    rows = table(results, ["entities"], [100], ["tunelab", "tunelab-gemini"])
    assert rows[2] == ("| entities | 100 | 0.63 (0.40 / 0.86) | 0.67 (0.51 / 0.83) | -0.04 "
                       "| 110 / 90 |")
    lines = targets(results)
    assert "tunelab ≥ 0.95 at 100 examples on extraction/normalisation: 0 of 1 " \
           "(missed: entities)" in lines
    assert any(line.startswith("automatic settings within 0.01") and "0 of 1" in line
               for line in lines)
    # a cell with one failed seed is failed, not the mean of the seeds that ran
    failed = [*results, {**r(2, "tunelab", 0.0, 0.0), "error": "out of memory"}]
    assert table(failed, ["entities"], [100], ["tunelab", "tunelab-gemini"])[2].startswith(
        "| entities | 100 | failed | 0.67 (0.51 / 0.83) | – |")
    assert not any(line.startswith("automatic settings within") for line in targets(failed))


def test_seeds_out_of_range_are_refused(capsys):
    from bench.quality.__main__ import main

    with pytest.raises(SystemExit):
        main(["--seeds", "0", "--contenders", "base"])
    assert "--seeds must be from 1 to 20, got 0" in capsys.readouterr().err


def test_quick_run_end_to_end(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "quality.json"
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home")}
    # one task of the two --quick runs (a process per contender and task): the token-F1 one
    proc = subprocess.run([sys.executable, "-m", "bench.quality", "--quick", "--tasks", "tickets",
                           "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "flags:" in text and "Precision of the base weights:" in text
    assert "| task | examples | base | tunelab | tunelab-gemini | trl |" in text

    report = json.loads(out.read_text())
    assert report["base_model"] == "tiny-random"
    results = report["results"]
    # the base once per task; every trained contender once per task and size
    assert len(results) == len(CONTENDERS)
    for r in results:
        assert "error" not in r, r
        assert 0.0 <= r["score"] <= 1.0
        assert r["test_count"] == 5
        if r["contender"] == "base":
            assert r["steps"] == 0 and r["size"] == 0
        else:
            assert r["size"] == 20 and r["steps"] > 0 and r["train_seconds"] > 0
    assert {(r["task"], r["metric"]) for r in results} == {("tickets", "token_f1")}
    auto = next(r for r in results if r["contender"] == "tunelab")
    assert auto["settings"]["epoch_count"] == 20  # automatic: ~100 steps for 20 examples
    gemini = next(r for r in results if r["contender"] == "tunelab-gemini")
    assert (gemini["settings"]["epoch_count"], gemini["steps"]) == (5, 25)
    trl = next(r for r in results if r["contender"] == "trl")
    assert trl["steps"] == 25 and trl["trained_examples"] == 20


def test_test_inputs_get_the_answers_the_service_gives(models_dir, tmp_path):
    """bench.quality answers the test inputs many at a time (``answer_all``): on an fp32 base
    every answer is the one generateContent's ``Generator`` gives that input alone, for the base
    model and for a tuned adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from bench.quality.one import answer_all
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.inference import GenerationConfig, Generator
    from tunelab.training.evaluate import answer_budget
    from tunelab.training.loop import _private_model

    def load():  # answer_all and the Generator each put the adapter on a base of their own
        return load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")

    base = load()
    torch.manual_seed(0)
    tuned = get_peft_model(_private_model(base.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tuned.save_pretrained(str(tmp_path / "adapter"))
    tests = make_task("intent").test[:40]  # more than one batch of 32
    served_base = load()
    generator = Generator(served_base)
    config = GenerationConfig(temperature=0.0, max_output_tokens=answer_budget(
        served_base.tokenizer, served_base.template, tests))
    for adapter in (None, tmp_path / "adapter"):
        served = [generator.generate([("user", ex.text_input)], ex.system, config, adapter).text
                  for ex in tests]
        assert len(set(served)) > 1  # the random model does answer differently
        assert answer_all(load(), tests, adapter) == served


def test_vary_changes_one_part_of_tunelabs_plan(tiny_base, tmp_path):
    from conftest import arithmetic_examples

    from bench.quality.contenders import parse_vary, train

    exs = arithmetic_examples(48)
    # automatic settings: a third (16) held out to choose the epoch, then a refit on all 48
    plain = train("tunelab", tiny_base, exs, tmp_path / "plain", seed=0)
    varied = train("tunelab", tiny_base, exs, tmp_path / "varied", seed=0,
                   vary=parse_vary("warmup=0,decay=constant,alpha=8,validation=none,epochs=2"))
    assert (plain.trained_examples, plain.validation_examples) == (32, 16)
    assert plain.settings["refit_steps"] > 0
    assert plain.settings["warmup_steps"] > 0 and plain.settings["decay"] == "cosine"
    assert plain.settings["lora_alpha"] == 16 and "vary" not in plain.settings
    # every example trained on, none held out; the schedule and LoRA scale as asked
    assert (varied.trained_examples, varied.validation_examples) == (48, 0)
    assert (varied.settings["warmup_steps"], varied.settings["decay"]) == (0, "constant")
    assert varied.settings["vary"]["alpha"] == 8
    # the epochs as asked: 2 epochs of 12 steps (48 examples, batch 4)
    assert varied.settings["epoch_count"] == 2 and plain.settings["epoch_count"] != 2
    assert varied.steps == 24
    config = json.loads((varied.adapter / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 8  # what was trained, not only what was reported
    manifest = json.loads((tmp_path / "varied" / "run" / "manifest.json").read_text())
    assert manifest["plan"]["decay"] == "constant" and manifest["plan"]["warmup_steps"] == 0


def test_vary_trains_with_lora_dropout_or_noisy_embeddings(tiny_base, tmp_path):
    """``dropout=P`` trains PEFT's LoRA dropout (saved in the adapter's config); ``neftune=A``
    adds noise to the input embeddings while training only (a different adapter from the same
    seed), and leaves the base model without the hook afterwards."""
    import torch
    from conftest import arithmetic_examples
    from safetensors.torch import load_file

    from bench.quality.contenders import parse_vary, train

    exs = arithmetic_examples(24)
    runs = {v: train("tunelab", tiny_base, exs, tmp_path / (v or "plain"), seed=0,
                     vary=parse_vary(v)) for v in ("", "dropout=0.1", "neftune=5")}
    config = json.loads((runs["dropout=0.1"].adapter / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.1
    plain, noisy = (load_file(str(runs[v].adapter / "adapter_model.safetensors"))
                    for v in ("", "neftune=5"))
    assert any(not torch.equal(plain[k], noisy[k]) for k in plain)
    assert not tiny_base.model.get_input_embeddings()._forward_hooks
    again = train("tunelab", tiny_base, exs, tmp_path / "again", seed=0)
    assert all(torch.equal(plain[k], t) for k, t in
               load_file(str(again.adapter / "adapter_model.safetensors")).items())


@pytest.mark.parametrize(("text", "says"), [
    ("decay=linear", "--vary decay must be constant or cosine; got 'linear'"),
    ("alpha=0", "--vary alpha must be a whole number, 1 or more; got '0'"),
    ("dropout=0.9", "--vary dropout must be a number from 0 to 0.5; got '0.9'"),
    ("neftune=x", "--vary neftune must be a number from 0 to 20; got 'x'"),
    ("epochs=0", "--vary epochs must be a whole number, 1 to 100; got '0'"),
    ("rank=3", "--vary takes KEY=VALUE with KEY one of warmup, epochs, decay, alpha, validation"),
])
def test_vary_refuses_what_it_cannot_do_before_any_run(text, says, capsys):
    from bench.quality.__main__ import main

    with pytest.raises(SystemExit):
        main(["--vary", text])
    assert says in capsys.readouterr().err


# --- a task of the user's own files ----------------------------------------------------------

def _write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text_input": i, "output": o}) + "\n" for i, o in rows))
    return path


def test_a_task_of_the_users_files_leaves_out_trained_inputs(tmp_path):
    from bench.quality.tasks import file_task

    labels = ["billing", "shipping", "account"]
    train = [(f"message {i} about {labels[i % 3]}", labels[i % 3]) for i in range(30)]
    (tmp_path / "tickets-train.csv").write_text(
        "input,output\n" + "".join(f'"{i}",{o}\n' for i, o in train))
    test = _write_jsonl(tmp_path / "test.jsonl", [
        train[0], ("where is my parcel", "shipping"), ("card declined", "billing")])
    task = file_task(tmp_path / "tickets-train.csv", test)
    # named after the training file, not after a suite task ("tickets" is one: file- before it)
    assert task.name == "file-tickets"
    assert task.kind == "classification" and task.metric == "exact_match"
    assert [ex.output for ex in task.train] == [o for _, o in train]  # the file's order
    assert [ex.text_input for ex in task.test] == ["where is my parcel", "card declined"]
    assert "1 also in the training file left out" in task.description

    long = "The customer writes at length about the order. " * 8
    summaries = [(f"{long} Case {i}.", f"Customer {i} wants a refund for the late order.")
                 for i in range(10)]
    task = file_task(_write_jsonl(tmp_path / "sums.jsonl", summaries[:8]),
                     _write_jsonl(tmp_path / "sums-test.jsonl", summaries[8:]))
    assert (task.name, task.kind, task.metric) == ("sums", "summarisation", "token_f1")
    assert file_task(tmp_path / "sums.jsonl", tmp_path / "sums-test.jsonl",
                     "exact_match").metric == "exact_match"  # a metric given is used


@pytest.mark.parametrize("make, args, says", [
    (None, ["--data", "{d}/missing.jsonl", "--test-data", "{d}/test.jsonl"],  # the path given
     "The training file missing.jsonl cannot be used:\n- "),
    ("bad", ["--data", "{d}/bad.jsonl", "--test-data", "{d}/test.jsonl"],
     "The training file bad.jsonl cannot be used:\n- bad.jsonl"),
    (None, ["--data", "{d}/train.jsonl", "--test-data", "{d}/train.jsonl"],
     "Every input of the test file train.jsonl is also a training input"),
    (None, ["--data", "{d}/train.jsonl", "--test-data", "{d}/test.jsonl", "--sizes", "20,50"],
     "Task train has 30 training examples, fewer than the --sizes 50 asked for; give sizes up "
     "to 30."),
    (None, ["--data", "{d}/train.jsonl"], "needs both --data TRAIN and --test-data TEST"),
    (None, ["--metric", "token_f1"], "--metric applies to a task of your own"),
])
def test_a_task_file_that_cannot_be_used_is_said_before_any_run(tmp_path, capsys, make, args,
                                                                 says):
    from bench.quality.__main__ import main

    _write_jsonl(tmp_path / "train.jsonl", [(f"toy input {i}", f"out {i % 4}") for i in range(30)])
    _write_jsonl(tmp_path / "test.jsonl", [("a new input", "out 1")])
    if make == "bad":
        (tmp_path / "bad.jsonl").write_text('{"text_input": "only an input"}\n')
    argv = [a.format(d=tmp_path) for a in args] + ["--contenders", "base", "--work",
                                                   str(tmp_path / "work")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "work").exists()  # nothing ran


def test_a_task_of_the_users_files_runs_end_to_end(tmp_path):
    """``--data`` and ``--test-data``: the base model and tunelab on the user's task, every test
    input not trained on scored (no ``--tests``), the file's whole size by default among the
    suite's sizes it holds."""
    rows = [(f"convert {i} apples", f"{i} APPLES") for i in range(24)]
    _write_jsonl(tmp_path / "fruit_train.jsonl", rows)
    _write_jsonl(tmp_path / "fruit_test.jsonl",
                 [rows[0]] + [(f"convert {i} pears", f"{i} PEARS") for i in range(6)])
    out = tmp_path / "q.json"
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--data", str(tmp_path / "fruit_train.jsonl"),
         "--test-data", str(tmp_path / "fruit_test.jsonl"), "--base-model", "tiny-random",
         "--threads", "1", "--contenders", "base,tunelab", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tasks fruit; sizes 20, 24; test inputs: 6 for fruit" in proc.stdout
    report = json.loads(out.read_text())
    assert report["task_files"]["name"] == "fruit"
    runs = {(r["contender"], r["size"]): r for r in report["results"]}
    assert set(runs) == {("base", 0), ("tunelab", 20), ("tunelab", 24)}
    for r in runs.values():
        assert r["task"] == "fruit" and r["test_count"] == 6 and 0 <= r["score"] <= 1
    assert runs[("tunelab", 24)]["trained_examples"] == 24


def test_a_varied_plan_has_a_folder_of_its_own():
    """Two ``--vary`` runs into one ``--work`` are two runs: the second must not meet the
    first's checkpoints (the trainer refuses another run's folder)."""
    from bench.quality.__main__ import run_folder

    plain = run_folder("intent", 20, "tunelab", 0, True)
    ten = run_folder("intent", 20, "tunelab", 0, True, "epochs=10")
    five = run_folder("intent", 20, "tunelab", 0, True, "epochs=5,decay=constant")
    assert len({plain, ten, five}) == 3 and ten == "intent-20-tunelab-seed0-vary-epochs10"
    assert five == "intent-20-tunelab-seed0-vary-epochs5-decayconstant"
    # contenders the variation does not change keep their folder (and their finished runs)
    assert run_folder("intent", 20, "trl", 0, True, "epochs=10") == "intent-20-trl-seed0"
    assert "/" not in run_folder("t", 20, "tunelab", 0, False, "../../x=1")
