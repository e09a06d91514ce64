"""Smoke test of the throughput benchmark (``python -m bench.throughput``) on the tiny random
model: all five contenders train, each in its own process, on identical token sequences, and
report finite losses and their peak memory. No assertion on wall time: the ratios are for people
reading a run on a quiet machine."""

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

REPO = Path(__file__).resolve().parents[2]
CONTENDERS = {"tunelab", "trl-shipped", "trl-bench", "plain-fp32", "plain-bf16"}


def _bench(monkeypatch, module: str):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module(module)


def test_quick_run_trains_all_five_contenders_on_identical_tokens(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--quick", "--threads", "1", "--json", str(out)],
        cwd=REPO, env={**os.environ, "TUNELAB_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=1200, check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    contenders = result["contenders"]
    assert set(contenders) == CONTENDERS
    for c in contenders.values():
        assert c["steps"] == 2  # ceil(8 examples / batch 4) × 1 epoch
        assert c["examples"] == 8
        assert all(math.isfinite(loss) for loss in c["step_losses"])
        assert math.isfinite(c["final_loss"])
        assert c["tokens_per_second"] > 0 and c["peak_rss_bytes"] > 0
        assert c["load"]["load_before"] >= 0
    # the same real tokens, and the same sequences with the loss on the same tokens
    assert {c["tokens"] for c in contenders.values()} == {result["workload"]["tokens"]}
    assert len({c["fingerprint"] for c in contenders.values()}) == 1
    assert result["problems"] == []
    # each ran as configured
    assert contenders["tunelab"]["precision"] in ("fp32 frozen base", "bf16 frozen base")
    assert contenders["trl-shipped"]["settings"]["gradient checkpointing"] is True
    assert contenders["trl-bench"]["settings"]["gradient checkpointing"] is False
    assert contenders["trl-bench"]["precision"] == "fp32"
    assert contenders["plain-bf16"]["precision"] == "bf16 autocast"
    assert set(result["ratios_tokens_per_second"]) == CONTENDERS - {"tunelab"}
    # the report: the machine, the table, tunelab's ratio to each
    assert proc.stdout.startswith("CPU: ")
    assert "| contender | precision | real tokens | real tokens/s |" in proc.stdout
    for name in CONTENDERS - {"tunelab"}:
        assert f"ratio tunelab/{name} real tokens/s: " in proc.stdout


def test_contenders_that_trained_on_other_tokens_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    data = _bench(monkeypatch, "bench.throughput.data")
    driver = _bench(monkeypatch, "bench.throughput.__main__")
    measure = _bench(monkeypatch, "bench.throughput.measure")
    workload = data.prepare("tiny-random", 8, 0)
    rows = [(s.ids, len(s.prompt_ids)) for s in workload.sequences]
    same = measure.Result("tunelab", "fp32", {}, workload.tokens, 8, 2, 2, 1.0, [1.0, 1.0],
                          data.fingerprint(reversed(rows)), 1)  # order does not matter
    # the same tokens, but the loss on one more token of the first example
    shifted = [(rows[0][0], rows[0][1] - 1), *rows[1:]]
    other_loss = dataclasses.replace(same, contender="trl-shipped",
                                     fingerprint=data.fingerprint(shifted))
    # one example short (as truncation or a dropped example would make it)
    fewer = dataclasses.replace(same, contender="plain-fp32",
                                tokens=workload.tokens - len(rows[0][0]))

    problems = driver.check_identical([same, other_loss, fewer], workload, epochs=1)

    assert len(problems) == 2
    assert problems[0].startswith("trl-shipped trained on other token sequences")
    assert problems[1].startswith("plain-fp32 trained on")


def test_without_trl_the_benchmark_says_what_to_install(monkeypatch, capsys):
    driver = _bench(monkeypatch, "bench.throughput.__main__")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        driver.importlib.util, "find_spec",
        lambda name, *a: None if name == "trl" else real_find_spec(name, *a),
    )

    assert driver.main(["--quick"]) == 2
    assert "pip install 'tunelab[bench]'" in capsys.readouterr().err
