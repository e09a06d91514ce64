"""Each MLP with its LoRA layers as one compiled function (training/compiled_mlp.py): the same
steps as the eager layers, used only where it pays, kept by a resumed run, and a compiler that
fails leaves training as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tunelab.training import Hyperparameters, read_manifest, train
from tunelab.training.compiled_mlp import COLD_COMPILE_MIN_TOKENS, worth_compiling

HP = Hyperparameters(epoch_count=2, batch_size=4, learning_rate=0.01)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compile-cache")


def losses(result) -> list[float]:
    return [s.mean_loss for s in result.snapshots]


def test_a_compiled_run_takes_the_steps_an_eager_run_takes(tiny_base, examples, cache,
                                                           tmp_path):
    eager = train(tiny_base, examples, HP, tmp_path / "eager", compile_mode="off",
                  compile_cache=cache)
    compiled = train(tiny_base, examples, HP, tmp_path / "compiled", compile_mode="on",
                     compile_cache=cache)
    assert read_manifest(tmp_path / "eager")["compiled"]["mlp"] is False
    record = read_manifest(tmp_path / "compiled")["compiled"]
    assert record["mlp"] is True and "ready in" in record["note"]
    # the same forward pass; the backward's sums are ordered differently (fp32 rounding)
    assert losses(compiled)[0] == pytest.approx(losses(eager)[0], rel=1e-6)
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4)
    assert list(cache.glob("compiled/*.ok")), "a compiled shape is marked for the next job"


def test_auto_compiles_a_short_job_only_when_compiled_before(tiny_base, examples, cache,
                                                             tmp_path):
    train(tiny_base, examples, HP, tmp_path / "warm", compile_mode="on", compile_cache=cache)
    warm = train(tiny_base, examples, HP, tmp_path / "auto", compile_mode="auto",
                 compile_cache=cache)
    assert warm.manifest["compiled"]["mlp"] is True
    assert "compiled before" in warm.manifest["compiled"]["note"]
    cold = train(tiny_base, examples, HP, tmp_path / "cold", compile_mode="auto",
                 compile_cache=tmp_path / "empty-cache")
    assert cold.manifest["compiled"]["mlp"] is False
    assert "do not pay" in cold.manifest["compiled"]["note"]


def test_the_rule_for_a_first_compile():
    assert worth_compiling("auto", False, COLD_COMPILE_MIN_TOKENS)[0] is True
    assert worth_compiling("auto", False, COLD_COMPILE_MIN_TOKENS - 1)[0] is False
    assert worth_compiling("auto", True, 10)[0] is True
    assert worth_compiling("off", True, 10**9)[0] is False
    assert worth_compiling("on", False, 10)[0] is True


def test_a_resumed_run_computes_as_the_run_it_resumes(tiny_base, examples, cache, tmp_path):
    whole = train(tiny_base, examples, HP, tmp_path / "whole", compile_mode="on",
                  compile_cache=cache)
    steps = {"n": 0}

    def stop_in_the_second_epoch() -> bool:
        steps["n"] += 1
        return steps["n"] > 8  # 6 steps an epoch: after epoch 1's checkpoint

    first = train(tiny_base, examples, HP, tmp_path / "run", compile_mode="on",
                  compile_cache=cache, should_cancel=stop_in_the_second_epoch)
    assert first.status == "cancelled"
    resumed = train(tiny_base, examples, HP, tmp_path / "run", compile_mode="off",
                    compile_cache=cache)
    assert resumed.resumed_from_epoch == 1
    assert resumed.manifest["compiled"]["mlp"] is True
    assert losses(resumed) == losses(whole)


def test_a_compiler_that_fails_leaves_training_as_it_was(models_dir, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import torch._inductor.config as inductor
        inductor.cpp.cxx = ("{tmp_path}/no-such-compiler",)
        from tunelab.catalog import get_base_model, load_base_model
        from tunelab.data import Example
        from tunelab.training import Hyperparameters, train
        base = load_base_model(get_base_model("tiny-random"), Path({str(models_dir)!r}),
                               "cpu", threads=1)
        examples = [Example(f"add {{i}} and {{i + 1}}", f"{{2 * i + 1}}") for i in range(8)]
        result = train(base, examples, Hyperparameters(1, 4, 0.01), Path({str(tmp_path)!r}) /
                       "run", compile_mode="on", compile_cache=Path({str(tmp_path)!r}) / "cache")
        print(json.dumps({{"status": result.status, "steps": len(result.snapshots),
                          "compiled": result.manifest["compiled"]}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "completed" and report["steps"] == 2
    assert report["compiled"]["mlp"] is False
    assert "the compiler failed" in report["compiled"]["note"]
    assert not list((tmp_path / "cache").glob("compiled/*.ok"))
