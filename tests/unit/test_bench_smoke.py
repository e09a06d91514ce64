"""Smoke test of the throughput benchmark (``python -m bench.throughput``) on the tiny random
model: the contenders train, each in its own process, on identical token sequences, and report
finite losses and their peak memory; every trained adapter is scored on the same held-out
sequences. No assertion on wall time: the ratios are for people reading a run on a quiet machine.

The end-to-end run leaves out ``plain-fp32``: it is ``plain-bf16``'s code with autocast off, and
one process less keeps this test (one of the slowest) no longer than before the held-out
evaluation's process was added."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTENDERS = ["tunelab", "trl-shipped", "trl-fp32", "trl-bench", "plain-bf16"]


def _bench(monkeypatch, module: str):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module(module)


def test_quick_run_trains_the_contenders_on_identical_tokens_and_scores_them_alike(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--quick", "--threads", "1",
         "--contenders", ",".join(CONTENDERS), "--json", str(out)],
        cwd=REPO, env={**os.environ, "TUNELAB_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=1200, check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    contenders = result["contenders"]
    assert list(contenders) == CONTENDERS
    for c in contenders.values():
        assert c["steps"] == 2  # ceil(8 examples / batch 4) × 1 epoch
        assert c["examples"] == 8
        assert all(math.isfinite(loss) for loss in c["step_losses"])
        assert math.isfinite(c["last_epoch_train_loss"])
        assert math.isfinite(c["heldout_loss"]) and c["heldout_loss"] > 0
        assert c["tokens_per_second"] > 0 and c["peak_rss_bytes"] > 0
        assert c["load"]["load_before"] >= 0
    # the same real tokens, and the same sequences with the loss on the same tokens
    assert {c["tokens"] for c in contenders.values()} == {result["workload"]["tokens"]}
    assert len({c["fingerprint"] for c in contenders.values()}) == 1
    assert result["problems"] == []
    assert result["workload"]["heldout_examples"] == 8
    assert result["workload"]["heldout_output_tokens"] > 0
    # each ran as configured
    assert contenders["tunelab"]["precision"] in (
        "fp32 frozen base", "bf16 frozen base", "bf16-stored frozen base, fp32 products")
    assert contenders["trl-shipped"]["settings"]["gradient checkpointing"] is True
    assert contenders["trl-bench"]["settings"]["gradient checkpointing"] is False
    # bf16 off and nothing else: TRL's own gradient checkpointing and fused AdamW kept
    assert contenders["trl-fp32"]["precision"] == "fp32"
    assert contenders["trl-fp32"]["settings"] == contenders["trl-shipped"]["settings"]
    assert contenders["trl-bench"]["precision"] == "fp32"
    assert contenders["plain-bf16"]["precision"] == "bf16 autocast"
    peers = set(CONTENDERS) - {"tunelab"}
    assert set(result["ratios_tokens_per_second"]) == peers
    assert set(result["ratios_heldout_loss"]) == peers
    for name, x in result["ratios_heldout_loss"].items():
        assert x == contenders["tunelab"]["heldout_loss"] / contenders[name]["heldout_loss"]
    # the report: the machine, the table, tunelab's ratios to each, the loss target
    assert proc.stdout.startswith("CPU: ")
    # tunelab's run allocates as tunelab trains (jemalloc, which `make test` installs)
    assert result["machine"]["tunelab_allocator"] == "jemalloc"
    assert "tunelab allocates with jemalloc, the others with the C library's" in proc.stdout
    assert "| contender | precision | real tokens | real tokens/s |" in proc.stdout
    assert "| last-epoch train loss | held-out loss |" in proc.stdout
    for name in peers:
        assert f"ratio tunelab/{name} real tokens/s: " in proc.stdout
        assert f"ratio tunelab/{name} held-out loss: " in proc.stdout
    assert "held-out loss: tunelab " in proc.stdout and "(target ≤ 1.02: " in proc.stdout


def _adapted_tiny_model(model_path: str, seed: int):
    """The tiny model with a LoRA adapter of the benchmark's shape whose B matrices are random
    (PEFT starts them at zero, which would make the adapter change nothing)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from bench.throughput.contenders import lora_config

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                           lora_config())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def test_heldout_loss_scores_the_saved_adapter_the_same_way_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    data = _bench(monkeypatch, "bench.throughput.data")
    heldout = _bench(monkeypatch, "bench.throughput.heldout")
    workload = data.prepare("tiny-random", 4, 0, 6)
    model = _adapted_tiny_model(workload.model_path, seed=1)
    model.save_pretrained(tmp_path / "adapter")
    in_memory = heldout.score(model, workload.heldout)
    with model.disable_adapter():
        without_adapter = heldout.score(model, workload.heldout)

    first = heldout.heldout_loss(workload, tmp_path / "adapter")
    second = heldout.heldout_loss(workload, tmp_path / "adapter")

    assert math.isfinite(first) and first > 0
    assert first == second  # deterministic: the same adapter, the same number
    assert first == pytest.approx(in_memory.loss, rel=1e-6)  # the adapter as it was trained
    assert first != pytest.approx(without_adapter.loss, rel=1e-3)  # ... and it is applied
    # the mean is over the output tokens only, of every held-out sequence
    assert in_memory.tokens == workload.heldout_output_tokens


def test_heldout_loss_weighs_every_output_token_alike(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    data = _bench(monkeypatch, "bench.throughput.data")
    heldout = _bench(monkeypatch, "bench.throughput.heldout")
    workload = data.prepare("tiny-random", 4, 0, 6)
    short, long = sorted(workload.heldout, key=lambda s: len(s.output_ids))[::5]
    model = _adapted_tiny_model(workload.model_path, seed=2)

    a, b, both = (heldout.score(model, rows) for rows in ([short], [long], [short, long]))

    assert len(short.output_ids) < len(long.output_ids)
    assert both.tokens == len(short.output_ids) + len(long.output_ids)
    assert both.loss == pytest.approx((a.loss * a.tokens + b.loss * b.tokens) / both.tokens)
    assert both.loss != pytest.approx((a.loss + b.loss) / 2)  # not a mean of per-row means


def test_heldout_examples_are_none_of_the_training_inputs(monkeypatch):
    data = _bench(monkeypatch, "bench.throughput.data")
    # a training set that holds the held-out stream's first five examples
    training = data.sentence_to_json_examples(5, data.HELDOUT_SEED_OFFSET)

    held = data.heldout_examples(12, 0, training)

    assert len(held) == 12
    inputs = [e.text_input for e in held]
    assert len(set(inputs)) == 12
    assert not set(inputs) & {e.text_input for e in training}
    assert held == data.heldout_examples(12, 0, training)  # the same on every run


def test_contenders_that_trained_on_other_tokens_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    data = _bench(monkeypatch, "bench.throughput.data")
    driver = _bench(monkeypatch, "bench.throughput.__main__")
    measure = _bench(monkeypatch, "bench.throughput.measure")
    workload = data.prepare("tiny-random", 8, 0, 1)
    rows = [(s.ids, len(s.prompt_ids)) for s in workload.sequences]
    plan = data.batch_plan(8, 4, 0, 0)
    steps = [[rows[i] for i in reversed(batch)] for batch in plan]
    same = measure.Result("tunelab", "fp32", {}, workload.tokens, 8, 2, 2, 1.0, [1.0, 1.0],
                          data.fingerprint(steps), 1)  # the order within a step does not matter
    # the same tokens, but the loss on one more token of the first example
    shifted = [list(step) for step in steps]
    shifted[0][0] = (shifted[0][0][0], shifted[0][0][1] - 1)
    other_loss = dataclasses.replace(same, contender="trl-shipped",
                                     fingerprint=data.fingerprint(shifted))
    # one example short (as truncation or a dropped example would make it)
    fewer = dataclasses.replace(same, contender="plain-fp32",
                                tokens=workload.tokens - len(rows[0][0]))
    # the same examples, but two of them trained in each other's step
    swapped = [list(step) for step in steps]
    swapped[0][0], swapped[1][0] = swapped[1][0], swapped[0][0]
    other_batches = dataclasses.replace(same, contender="plain-bf16",
                                        fingerprint=data.fingerprint(swapped))
    # the same steps in another order
    reordered = dataclasses.replace(same, contender="trl-bench",
                                    fingerprint=data.fingerprint(reversed(steps)))

    problems = driver.check_identical([same, other_loss, fewer, other_batches, reordered],
                                      workload, epochs=1, batch_size=4, seed=0)

    assert len(problems) == 4
    assert problems[0].startswith("trl-shipped trained on other token sequences")
    assert problems[1].startswith("plain-fp32 trained on")
    assert problems[2].startswith("plain-bf16 trained on other token sequences")
    assert problems[3].startswith("trl-bench trained on other token sequences")
    assert "other batches" in problems[3]


def test_without_trl_the_benchmark_says_what_to_install(monkeypatch, capsys):
    driver = _bench(monkeypatch, "bench.throughput.__main__")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        driver.importlib.util, "find_spec",
        lambda name, *a: None if name == "trl" else real_find_spec(name, *a),
    )

    assert driver.main(["--quick"]) == 2
    assert "pip install 'tunelab[bench]'" in capsys.readouterr().err


def test_several_seeds_are_judged_on_their_means(monkeypatch):
    """``--seeds N``: the held-out loss target is judged on each contender's mean over the
    seeds (one seed's loss varies more than the 2% the target allows)."""
    measure = _bench(monkeypatch, "bench.throughput.measure")
    report = _bench(monkeypatch, "bench.throughput.report")

    def result(name, tokens_per_second, heldout):
        return measure.Result(name, "fp32", {}, int(tokens_per_second * 10), 8, 2, 2, 10.0,
                              [1.0, 1.0], "f", 1, heldout_loss=heldout)

    runs = [
        [result("tunelab", 300, 0.0050), result("plain-fp32", 100, 0.0038)],  # seed 0: 1.32
        [result("tunelab", 330, 0.0040), result("plain-fp32", 120, 0.0052)],  # seed 1: 0.77
        [result("tunelab", 330, 0.0045)],  # seed 2: the peer failed; tunelab's run still counts
    ]
    across = report.across_seeds(runs)

    ours, peer = across["contenders"]["tunelab"], across["contenders"]["plain-fp32"]
    assert ours["runs"] == 3 and peer["runs"] == 2
    assert ours["heldout_loss_mean"] == pytest.approx(0.0045)
    assert peer["heldout_loss_mean"] == pytest.approx(0.0045)
    assert across["ratios_heldout_loss"]["plain-fp32"] == pytest.approx(1.0)
    assert across["ratios_tokens_per_second"]["plain-fp32"] == pytest.approx(320 / 110)
    text = report.across_seeds_summary(across, [0, 1, 2])
    assert "## across 3 seeds (0, 1, 2)" in text
    assert "| tunelab | 3 | 320.0 | 0.0045 | 0.0050, 0.0040, 0.0045 |" in text
    assert "mean ratio tunelab/plain-fp32 real tokens/s: 2.91" in text
    assert "ratio 1.000 (target ≤ 1.02: met)" in text
    # a tunelab mean 3% above the peer's misses the target
    runs[2][0].heldout_loss = 0.0049
    assert "(target ≤ 1.02: NOT met)" in report.across_seeds_summary(
        report.across_seeds(runs), [0, 1, 2])


def test_seeds_must_be_at_least_one(monkeypatch, capsys):
    driver = _bench(monkeypatch, "bench.throughput.__main__")
    with pytest.raises(SystemExit):
        driver.parse_args(["--seeds", "0"])
    assert "--seeds must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("uses_datasets", [False, True])
def test_only_a_contender_that_uses_datasets_imports_it(uses_datasets):
    """``datasets`` (pandas, pyarrow: ~80 MB) would count in the peak RSS of a contender that
    never uses it: the benchmark's processes silence it only where TRL runs."""
    code = ("import sys\nfrom bench.quiet import quiet_libraries\n"
            f"quiet_libraries(uses_datasets={uses_datasets})\n"
            "print(sorted({'datasets', 'pandas', 'pyarrow'} & set(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.strip()
    assert imported == ("['datasets', 'pandas', 'pyarrow']" if uses_datasets else "[]"), imported


def test_a_contender_s_peak_memory_is_its_own_not_the_driver_s():
    """A contender's process reports the peak of its own memory: a driver that had grown large
    (converting a base model) before starting it does not set the contender's floor, as
    ``ru_maxrss`` would (it counts the memory the new process shared before its program ran)."""
    big = bytearray(400 * 2**20)
    big[::4096] = b"\1" * len(big[::4096])  # touched: resident in the driver
    code = ("import resource; from bench.throughput.measure import peak_rss_bytes; "
            "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    own, inherited = (int(v) for v in out.stdout.split())
    del big
    assert own > 0
    if sys.platform.startswith("linux"):  # where the process's own high-water mark is read
        assert inherited > 400 * 2**20  # what ru_maxrss says
        assert own < 200 * 2**20
