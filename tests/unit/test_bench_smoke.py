"""Smoke test of bench/train_throughput.py on the tiny random model: both contenders train
and report tokens and finite losses. No assertion on wall time (the ratio is for humans)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "train_throughput.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_runs_both_contenders(tmp_path, monkeypatch, capsys):
    pytest.importorskip("trl")
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    bench = _load_bench()
    out = tmp_path / "bench.json"

    rc = bench.main(
        [
            "--base-model",
            "tiny-random",
            "--examples",
            "8",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )

    assert rc == 0
    assert "ratio tunelab/TRL tokens/s:" in capsys.readouterr().out
    result = json.loads(out.read_text())
    for name in ("tunelab", "trl_sft"):
        contender = result[name]
        assert contender["tokens"] > 0
        assert contender["train_seconds"] > 0
        assert math.isfinite(contender["final_loss"])
        run = contender["runs"][0]
        assert run["steps"] == 2  # ceil(8 / 4) × 1 epoch
        assert all(math.isfinite(loss) for loss in run["step_losses"])
    # Same examples, same template: both count the same prompt + output tokens.
    assert result["tunelab"]["tokens"] == result["trl_sft"]["tokens"]
    # ... and both learn from the same (output) tokens only.
    loss_tokens = [result[n]["runs"][0]["extra"]["loss_tokens"] for n in ("tunelab", "trl_sft")]
    assert loss_tokens[0] == loss_tokens[1] > 0


def test_bench_without_trl_exits_2(monkeypatch, capsys):
    bench = _load_bench()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "trl" else real_find_spec(name, *a),
    )
    assert bench.main(["--base-model", "tiny-random"]) == 2
    assert "pip install 'tunelab[bench]'" in capsys.readouterr().err
