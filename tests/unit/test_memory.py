"""Keeping a step's activations within a memory budget: split, recompute, both (memory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
import types

import pytest
from conftest import MALLINFO_PROBE

from tunelab.data import Example
from tunelab.training import Hyperparameters, read_manifest, train
from tunelab.training.memory import (
    MB,
    MIN_PASS_TOKENS,
    activation_budget,
    activation_bytes_per_token,
    available_memory,
    plan_memory,
)

SMOLLM2 = types.SimpleNamespace(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                                num_attention_heads=9, num_key_value_heads=3)


def test_the_estimate_matches_what_was_counted_on_the_default_model():
    kept = activation_bytes_per_token(SMOLLM2, recompute=False)
    assert 0.64 * MB < kept < 0.76 * MB  # counted with saved_tensors_hooks: 687 KB per token
    bf16 = activation_bytes_per_token(SMOLLM2, recompute=False, bf16=True)
    assert 0.36 * MB < bf16 < 0.42 * MB  # a bf16 base keeps activations in bf16: 393 KB
    norm_inputs = activation_bytes_per_token(SMOLLM2, recompute=False, norms_fused=False)
    assert 0.77 * MB < norm_inputs < 0.9 * MB  # before the norms kept their outputs: 822 KB
    unfused = activation_bytes_per_token(SMOLLM2, recompute=False, mlp_fused=False,
                                         norms_fused=False)
    assert 1.1 * MB < unfused < 1.4 * MB  # before the MLP was one function: ~1.3 MB
    assert activation_bytes_per_token(SMOLLM2, recompute=True) < kept / 7


def test_a_budget_the_fused_layers_fit_recomputes_only_without_them():
    budget = 560 * MB  # 750 tokens keep ~495 MB fused, ~593 MB with the norms' inputs
    whole = plan_memory(SMOLLM2, 750, budget)
    assert not whole.recompute and not whole.mlp_per_token
    # over it: the MLPs' products made again where a step needs it (its MLP is fused)
    unfused_norms = plan_memory(SMOLLM2, 750, budget, norms_fused=False)
    assert unfused_norms.mlp_per_token and not unfused_norms.recompute
    assert plan_memory(SMOLLM2, 750, budget, mlp_fused=False).recompute


def test_a_run_plans_its_memory_for_the_mlp_it_trains_with(tiny_base, tmp_path):
    """The tiny model's MLP is a gated one (fused when its three projections are LoRA layers
    without dropout): the plan counts two of its wide tensors, else four."""
    from peft import LoraConfig, get_peft_model

    from tunelab.training.fused_lora import _fused_mlp_forward, fuse_lora_layers, mlp_fuses
    from tunelab.training.loop import _private_model

    model = tiny_base.model
    assert mlp_fuses(model, ["q_proj", "gate_proj", "up_proj", "down_proj"], 0.0)
    assert mlp_fuses(model, [], 0.0)  # every linear layer
    assert not mlp_fuses(model, ["q_proj", "v_proj"], 0.0)
    assert not mlp_fuses(model, ["gate_proj", "up_proj", "down_proj"], 0.1)
    # the prediction is what fusing the LoRA layers then does
    for targets in (["q_proj", "gate_proj", "up_proj", "down_proj"], ["q_proj", "v_proj"]):
        peft = get_peft_model(_private_model(model), LoraConfig(r=2, target_modules=targets))
        fuse_lora_layers(peft)
        fused = any(getattr(m.__dict__.get("forward"), "__func__", None) is _fused_mlp_forward
                    for m in peft.modules())
        assert fused is mlp_fuses(model, targets, 0.0)


@pytest.mark.parametrize("tokens, longest, budget_mb, recompute, split, mlp", [
    (600, None, None, False, False, False),  # no limit known
    (600, None, 2000, False, False, False),  # 0.45 GB fits
    (600, 150, 350, False, False, True),     # ~190 MB with every MLP's products made again
    (600, None, 350, False, False, True),    # one example of 600 tokens: the same
    (1200, 150, 300, False, True, False),    # ~380 MB even so: passes of ≤ 455 tokens keep theirs
    (600, 150, 150, True, False, False),     # passes of ≤ 227 tokens would be too short: recompute
    (600, None, 30, True, True, False),      # not even that: passes of at most ~340 tokens
])
def test_the_plan_follows_the_budget(tokens, longest, budget_mb, recompute, split, mlp):
    budget = None if budget_mb is None else budget_mb * MB
    plan = plan_memory(SMOLLM2, tokens, budget, longest_example_tokens=longest)
    assert plan.recompute is recompute and (plan.micro_batch_tokens is not None) is split
    assert bool(plan.mlp_per_token) is mlp
    if split:
        per_token = activation_bytes_per_token(SMOLLM2, recompute)
        assert plan.micro_batch_tokens * per_token <= budget
        assert recompute or plan.micro_batch_tokens >= MIN_PASS_TOKENS
    assert plan.describe()


def test_a_step_a_little_over_budget_makes_as_few_layers_mlp_products_again_as_fit_it():
    """SmolLM2 with a bf16 base keeps ~393 KB a token, ~180 KB of it the MLPs' products (6 KB
    a layer): within 200 MB a step of 800 tokens fits with every MLP recomputed, and each
    pass makes as few layers' products again as bring it within the budget."""
    from tunelab.training.memory import mlp_bytes_per_token

    budget = 200 * MB
    plan = plan_memory(SMOLLM2, 800, budget, bf16=True)
    assert not plan.recompute and plan.micro_batch_tokens is None and plan.mlp_per_token
    kept = activation_bytes_per_token(SMOLLM2, recompute=False, bf16=True)
    mlp = mlp_bytes_per_token(SMOLLM2, bf16=True)
    assert plan.recomputed_mlps(500) == 0  # 500 × 393 KB fits
    for tokens in (600, 700, 800):
        n = plan.recomputed_mlps(tokens)
        assert 0 < n <= 30
        assert tokens * (kept - n * mlp) <= budget < tokens * (kept - (n - 1) * mlp)
    assert "MLP products" in plan.describe()
    # too long even so: split as before; the MLP unfused: split or recompute, never this
    assert not plan_memory(SMOLLM2, 1200, budget, bf16=True).mlp_per_token
    assert not plan_memory(SMOLLM2, 800, budget, bf16=True, mlp_fused=False).mlp_per_token


def test_a_run_whose_steps_recompute_mlp_products_takes_the_very_same_steps(tiny_base, tmp_path,
                                                                            monkeypatch):
    """The tiny model (fp32) keeps 5 KB a token, 1 KB of it a layer's MLP products: a budget
    of 1 MB holds steps of ~200 tokens kept whole and ~340 with both MLPs recomputed. Steps of
    four examples of 75-85 tokens (~300 as laid out) make both layers' products again, and
    since that is exact the run's losses are the ones of a run that keeps everything."""
    from tunelab.data.batches import tokenize_example
    from tunelab.training import fused_lora

    examples = [Example(f"{i} plus {i + 1} " * (6 + i % 2), f"{2 * i + 1}") for i in range(8)]
    lengths = sorted(tokenize_example(tiny_base.tokenizer, tiny_base.template, ex).length
                     for ex in examples)
    assert 205 < sum(lengths[-4:]) < 340, lengths
    counts, real = [], fused_lora.recomputed_mlps

    def counted(n):  # the real context, its count recorded (the trainer imports it per run)
        counts.append(n)
        return real(n)

    monkeypatch.setattr(fused_lora, "recomputed_mlps", counted)
    hp = Hyperparameters(epoch_count=1, batch_size=4, learning_rate=0.01)
    kept = train(tiny_base, examples, hp, tmp_path / "kept", train_memory_mb=4096)
    assert counts == [0, 0]
    lean = train(tiny_base, examples, hp, tmp_path / "lean", train_memory_mb=1)
    assert counts[2:] == [2, 2]  # each step: both layers' MLPs
    memory = read_manifest(tmp_path / "lean")["memory"]
    assert memory["mlps_recomputed"] is True and memory["recompute"] is False
    assert memory["pass_tokens"] is None and "MLP products" in memory["note"]
    assert read_manifest(tmp_path / "kept")["memory"]["mlps_recomputed"] is False
    assert [s.mean_loss for s in lean.snapshots] == [s.mean_loss for s in kept.snapshots]


def test_a_run_a_little_over_budget_splits_its_batches_without_recomputing(tiny_base, tmp_path):
    """The tiny model keeps 5 KB a token: 2 MB holds passes of ~400 tokens, not a batch of four
    examples of ~300 (one pass each), and each pass keeps its activations."""
    examples = [Example("add 3 and 4 " * (20 + i % 5), f"{i}") for i in range(8)]
    hp = Hyperparameters(epoch_count=1, batch_size=4, learning_rate=0.01)
    kept = train(tiny_base, examples, hp, tmp_path / "kept", train_memory_mb=4096)
    split = train(tiny_base, examples, hp, tmp_path / "split", train_memory_mb=2)
    memory = read_manifest(tmp_path / "split")["memory"]
    assert memory["recompute"] is False and MIN_PASS_TOKENS <= memory["pass_tokens"] < 500
    assert "split into passes" in memory["note"]
    assert read_manifest(tmp_path / "kept")["memory"]["pass_tokens"] is None
    assert len(kept.snapshots) == len(split.snapshots) == 2
    for a, b in zip(kept.snapshots, split.snapshots, strict=True):
        assert a.mean_loss == pytest.approx(b.mean_loss, rel=1e-4)


def test_the_default_budget_is_half_of_the_available_memory():
    assert activation_budget(256) == 256 * MB
    free = available_memory()
    assert activation_budget(None) == (None if free is None else free // 2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_over_budget_recomputes_and_splits_and_takes_the_same_steps(
        tiny_base, models_dir, tmp_path, precision):
    """A bf16 base keeps its activations in bf16 (fused_lora.keeps_bf16): the layers
    recomputed in the backward pass must keep what the forward pass kept, or the checkpoint
    refuses them."""
    from tunelab.catalog import get_base_model, load_base_model

    base = tiny_base if precision == "fp32" else load_base_model(
        get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16")
    examples = [Example(f"add {i} and {i + 1} " * (1 + i % 3), f"{2 * i + 1}") for i in range(12)]
    hp = Hyperparameters(epoch_count=2, batch_size=4, learning_rate=0.01)
    kept = train(base, examples, hp, tmp_path / "kept", train_memory_mb=4096)
    tight = train(base, examples, hp, tmp_path / "tight", train_memory_mb=0)
    assert read_manifest(tmp_path / "kept")["memory"]["recompute"] is False
    memory = read_manifest(tmp_path / "tight")["memory"]
    assert memory["recompute"] is True and "split" in memory["note"]
    assert len(kept.snapshots) == len(tight.snapshots) == 6
    for a, b in zip(kept.snapshots, tight.snapshots, strict=True):
        assert a.mean_loss == pytest.approx(b.mean_loss, rel=1e-4 if precision == "fp32" else 1e-2)
    if precision == "bf16":
        return
    # the served base is not left recomputing: a later run keeps its activations again
    again = train(tiny_base, examples, hp, tmp_path / "again", train_memory_mb=4096)
    assert [s.mean_loss for s in again.snapshots] == [s.mean_loss for s in kept.snapshots]
    assert not any(getattr(m, "gradient_checkpointing", False) for m in tiny_base.model.modules())


def test_the_loss_made_in_chunks_and_recomputed_equals_the_kept_one(tiny_base, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    from tunelab.data.batches import pack, tokenize_example
    from tunelab.training import loop

    monkeypatch.setattr(loop, "LOSS_CHUNK", 3)  # several chunks even for the tiny batch
    torch.manual_seed(0)
    model = get_peft_model(loop._private_model(tiny_base.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    items = [tokenize_example(tiny_base.tokenizer, tiny_base.template, Example(f"q{i}", "yes no"))
             for i in range(3)]
    batch = pack(items, tiny_base.tokenizer.pad_token_id, float("inf"))
    assert batch.n_tokens > 3

    def loss_and_grads(recompute):
        model.zero_grad(set_to_none=True)
        loss = loop.output_loss_sum(model, batch, recompute)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    kept, kept_grads = loss_and_grads(False)
    chunked, chunked_grads = loss_and_grads(True)
    torch.testing.assert_close(chunked, kept, rtol=1e-5, atol=1e-5)
    for a, b in zip(chunked_grads, kept_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# A training process of its own (in the test process, earlier tests' freed blocks could serve
# the probe's request whatever the threshold): with the 256 KB threshold of a run short of
# memory a 16 MB block is mapped on its own, with the usual 32 MB it comes from the heap.
_RUN = MALLINFO_PROBE + """
import sys
from pathlib import Path
from tunelab.catalog import get_base_model, load_base_model
from tunelab.data import Example
from tunelab.training import Hyperparameters, fused_lora, train

def mapped():
    return mapped_on_its_own(16 * 2**20)

out = Path(sys.argv[1])
base = load_base_model(get_base_model("tiny-random"), out / "models", "cpu", threads=1)
examples = [Example(f"add {i} and {i + 1}", f"{2 * i + 1}") for i in range(8)]
hp = Hyperparameters(epoch_count=1, batch_size=4, learning_rate=0.01)
seen = []

def fail_at_the_second_step():
    seen.append(mapped())
    if len(seen) == 2:
        raise RuntimeError("the worker was told to stop")
    return False

try:
    train(base, examples, hp, out / "failed", train_memory_mb=0,
          should_cancel=fail_at_the_second_step)
except RuntimeError as e:
    print("raised:", e)
print("while recomputing:", seen)
print("after the failed run:", mapped(), fused_lora._cast.source is None)
done = train(base, examples, hp, out / "done", train_memory_mb=0)
print("after a completed run:", done.status, mapped())
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt and mallinfo2 are glibc's")
def test_a_run_short_of_memory_gives_the_process_its_threshold_back_however_it_ends(tmp_path):
    run = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "raised: the worker was told to stop",
        "while recomputing: [True, True]",  # 256 KB: the block is mapped
        "after the failed run: False True",  # 32 MB again, and the kept input cast let go
        "after a completed run: completed False",
    ], run.stdout
