"""The LoRA trainer on the tiny model: hyperparameters, snapshots, checkpoints, cancel,
resume-equals-uninterrupted, epoch advice. Numbers are pinned (seeded, deterministic)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tunelab.data import Example
from tunelab.data.batches import collate, tokenize_example
from tunelab.errors import FailedPrecondition, HyperparameterError, InvalidArgument
from tunelab.training import (
    Hyperparameters,
    adapter_path,
    advise_epoch,
    list_checkpoints,
    plan_batches,
    read_manifest,
    select_epoch,
    total_steps,
    train,
)


def arithmetic_examples(n: int = 24) -> list[Example]:
    return [Example(f"add {i} and {i + 1}", f"{2 * i + 1}") for i in range(n)]


# ---- hyperparameters ----------------------------------------------------------------------


def test_defaults_are_geminis():
    hp = Hyperparameters().resolve()
    assert (hp.epoch_count, hp.batch_size, hp.learning_rate) == (5, 4, 0.001)


def test_multiplier_scales_the_recommended_rate():
    assert Hyperparameters(learning_rate_multiplier=2.0).resolve(0.0005).learning_rate == 0.001
    assert Hyperparameters(learning_rate=0.01).resolve(0.0005).learning_rate == 0.01
    assert Hyperparameters().resolve(0.0005).learning_rate == 0.0005


def test_both_rates_is_a_clear_error():
    with pytest.raises(HyperparameterError) as e:
        Hyperparameters(learning_rate=0.001, learning_rate_multiplier=1.0).validate()
    assert "either learningRate or learningRateMultiplier, not both" in e.value.message


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"epoch_count": 0}, "epochCount"),
        ({"batch_size": 0}, "batchSize"),
        ({"batch_size": 10_000}, "batchSize"),
        ({"learning_rate": -1.0}, "learningRate"),
        ({"learning_rate": float("nan")}, "learningRate"),
        ({"learning_rate_multiplier": 0.0}, "learningRateMultiplier"),
    ],
)
def test_bad_hyperparameters_name_the_field(kwargs, field):
    with pytest.raises(HyperparameterError) as e:
        Hyperparameters(**kwargs).validate()
    assert field in e.value.message


def test_every_problem_is_reported_at_once():
    problems = Hyperparameters(epoch_count=0, batch_size=0, learning_rate=-1.0).problems()
    assert {p.field for p in problems} == {"epochCount", "batchSize", "learningRate"}


@pytest.mark.parametrize(
    "n, batch, epochs, steps", [(100, 4, 5, 125), (20, 4, 1, 5), (21, 4, 2, 12)]
)
def test_total_steps(n, batch, epochs, steps):
    assert total_steps(n, batch, epochs) == steps == math.ceil(n / batch) * epochs


# ---- batches and loss masking ---------------------------------------------------------------


def test_batches_cover_every_example_once_per_epoch_and_are_deterministic():
    a = plan_batches(11, 4, seed=0, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(11))
    assert len(a) == 3 and sorted(len(b) for b in a) == [3, 4, 4]
    assert a == plan_batches(11, 4, seed=0, epoch=0)
    assert a != plan_batches(11, 4, seed=0, epoch=1)


def test_a_step_split_into_micro_batches_has_the_whole_batch_gradient(tiny_base):
    from peft import LoraConfig, get_peft_model

    from tunelab.training.loop import _micro_batches, _private_model, output_loss_sum

    examples = [Example("hi", "yes"), Example("a much longer question " * 6, "no"),
                Example("ok", "fine thanks"), Example("and a long one again " * 7, "x")]
    items = [tokenize_example(tiny_base.tokenizer, tiny_base.template, ex) for ex in examples]
    longest = max(it.length for it in items)
    with pytest.MonkeyPatch.context() as mp:  # a budget that fits two of the longest at most
        mp.setattr("tunelab.training.loop.MICRO_BATCH_TOKENS", 2 * longest)
        groups = _micro_batches(items)
    assert len(groups) == 2
    torch.manual_seed(0)
    model = get_peft_model(_private_model(tiny_base.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    n = sum(len(it.output_ids) for it in items)

    def grads(groups) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        for g in groups:
            (output_loss_sum(model, collate(g, tiny_base.tokenizer.pad_token_id)) / n).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    for split, whole in zip(grads(groups), grads([items]), strict=True):
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-6)


def test_a_packed_step_is_split_by_its_packed_tokens_not_padded(tiny_base):
    """A cap on a pass's tokens counts them as the pass is laid out: packed in one row, the
    examples' sum (less a shared opening), not each padded to the longest."""
    from tunelab.data.batches import laid_out_tokens, shared_prefix
    from tunelab.training.loop import _micro_batches

    examples = [Example("hi", "yes"), Example("a much longer question " * 6, "no"),
                Example("ok", "fine thanks"), Example("and a long one again " * 7, "x")]
    items = [tokenize_example(tiny_base.tokenizer, tiny_base.template, ex) for ex in examples]
    prefix = shared_prefix(items)
    packed = laid_out_tokens(items, float("inf"), share_prefix=True)
    assert packed == prefix + sum(it.length - prefix for it in items)
    padded = laid_out_tokens(items, None)
    assert padded == len(items) * max(it.length for it in items) > packed

    def tokens(group):
        return laid_out_tokens(group, float("inf"), share_prefix=True)

    # a cap the packed step fits: one pass (counted padded, it was split)
    assert _micro_batches(items, packed, float("inf"), True) == [
        sorted(items, key=lambda it: it.length)]
    assert len(_micro_batches(items, packed)) > 1
    # one token less: split, every pass within the cap, every example in one pass
    groups = _micro_batches(items, packed - 1, float("inf"), True)
    assert len(groups) > 1
    assert all(tokens(g) <= packed - 1 or len(g) == 1 for g in groups)
    assert sorted(id(it) for g in groups for it in g) == sorted(id(it) for it in items)


def test_only_output_tokens_are_targets(tiny_base):
    ex = Example("what is 2+2?", "4")
    t = tokenize_example(tiny_base.tokenizer, tiny_base.template, ex)
    batch = collate(
        [t, tokenize_example(tiny_base.tokenizer, tiny_base.template, Example("a", "bb"))], 0
    )
    assert batch.targets[: len(t.output_ids)].tolist() == t.output_ids
    decoded = tiny_base.tokenizer.decode(t.output_ids)
    assert decoded == "4" + tiny_base.template.end
    # each target is predicted from the position just before it
    row0 = batch.predict_cols[: len(t.output_ids)]
    assert row0.tolist() == list(range(len(t.prompt_ids) - 1, t.length - 1))
    assert batch.n_tokens == len(t.output_ids) + len(
        tokenize_example(tiny_base.tokenizer, tiny_base.template, Example("a", "bb")).output_ids
    )


# ---- training run ---------------------------------------------------------------------------

HP = Hyperparameters(epoch_count=3, batch_size=4, learning_rate=0.01)


def test_snapshots_checkpoints_and_manifest(tiny_base, examples, tmp_path):
    seen = []
    out = tmp_path / "run"
    result = train(tiny_base, examples, HP, out, on_snapshot=seen.append, seed=0)
    assert result.status == "completed"
    assert [s.step for s in seen] == list(range(1, 19)) == [s.step for s in result.snapshots]
    assert [s.epoch for s in seen] == [1] * 6 + [2] * 6 + [3] * 6
    assert all(math.isfinite(s.mean_loss) and s.tokens > 0 for s in seen)
    assert all(a.compute_time <= b.compute_time for a, b in zip(seen, seen[1:], strict=False))
    assert list_checkpoints(out) == [1, 2, 3]
    for e in (1, 2, 3):
        d = out / "checkpoints" / f"epoch-{e}"
        assert {"adapter_model.safetensors", "adapter_config.json", "state.safetensors",
                "state.json", "checksums.json"} <= {
            p.name for p in d.iterdir()
        }
    m = read_manifest(out)
    assert m["status"] == "completed" and m["base_model"] == "tiny-random"
    assert m["hyperparameters"] == {"epoch_count": 3, "batch_size": 4, "learning_rate": 0.01}
    assert m["dataset_hash"].startswith("sha256:") and m["example_count"] == 24
    assert len(m["snapshots"]) == 18 and len(m["epoch_losses"]) == 3
    assert m["total_steps"] == 18 and m["selected_epoch"] == 3
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8
    # pinned numbers: seeded and deterministic on this toy model
    assert result.epoch_losses == pytest.approx([5.4351, 2.7680, 2.2117], abs=2e-3)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_loss_falls_when_memorising(tiny_base, tmp_path):
    exs = [Example(f"q{i}", "yes" if i % 2 else "no") for i in range(20)]
    r = train(
        tiny_base,
        exs,
        Hyperparameters(epoch_count=8, batch_size=4, learning_rate=0.01),
        tmp_path / "m",
    )
    assert r.epoch_losses[-1] < 0.5 * r.epoch_losses[0]


def test_cancel_keeps_the_parameters_learned_so_far(tiny_base, examples, tmp_path):
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        return calls["n"] > 8  # cancel before step 9 (in epoch 2)

    out = tmp_path / "c"
    r = train(tiny_base, examples, HP, out, should_cancel=should_cancel)
    assert r.status == "cancelled"
    assert [s.step for s in r.snapshots] == list(range(1, 9))
    assert list_checkpoints(out) == [1]
    m = read_manifest(out)
    assert m["status"] == "cancelled" and m["completed_steps"] == 8
    # the saved adapter is the weights after step 8, not epoch 1's checkpoint
    final = load_file(out / "adapter" / "adapter_model.safetensors")
    ckpt = load_file(out / "checkpoints" / "epoch-1" / "adapter_model.safetensors")
    assert any(not torch.equal(final[k], ckpt[k]) for k in final)


def test_resume_equals_uninterrupted(tiny_base, examples, tmp_path):
    full = train(tiny_base, examples, HP, tmp_path / "full", seed=3)

    calls = {"n": 0}

    def crash_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 9

    out = tmp_path / "resumed"
    first = train(tiny_base, examples, HP, out, seed=3, should_cancel=crash_in_epoch_2)
    assert first.status == "cancelled" and list_checkpoints(out) == [1]
    resumed = train(tiny_base, examples, HP, out, seed=3)
    assert resumed.resumed_from_epoch == 1 and resumed.status == "completed"
    assert [(s.step, s.epoch, s.mean_loss) for s in resumed.snapshots] == [
        (s.step, s.epoch, s.mean_loss) for s in full.snapshots
    ]
    assert resumed.epoch_losses == full.epoch_losses
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_run(tiny_base, examples, tmp_path):
    out = tmp_path / "r"
    train(tiny_base, examples, Hyperparameters(epoch_count=1, learning_rate=0.01), out)
    with pytest.raises(FailedPrecondition) as e:
        train(tiny_base, arithmetic_examples(30), Hyperparameters(epoch_count=2), out)
    assert "different tuning run" in e.value.message


def test_select_an_earlier_epoch(tiny_base, examples, tmp_path):
    out = tmp_path / "s"
    train(tiny_base, examples, HP, out)
    assert adapter_path(out, 1) == out / "checkpoints" / "epoch-1"
    select_epoch(out, 1)
    assert read_manifest(out)["selected_epoch"] == 1
    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "checkpoints" / "epoch-1" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InvalidArgument) as e:
        select_epoch(out, 7)
    assert "available epochs: 1, 2, 3" in e.value.message


# ---- epoch advice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "losses, epoch, plateaued",
    [
        ([3.0, 1.5, 0.8, 0.75, 0.74], 3, True),
        ([2.0, 1.6, 1.2, 0.8, 0.4], 5, False),  # still falling: the last epoch
        ([2.0, 1.0, 0.5, 0.25, 0.12], 4, True),  # halving: the last drop is < 10% of the total
        ([1.0, 0.3, 0.29, 0.28, 0.2], 2, True),
        ([1.0, 1.2, 1.3], 1, False),  # never improved
        ([1.0], 1, False),
        ([2.0, 1.0, 1.05, 0.98], 2, True),  # a bump counts as a plateau
    ],
)
def test_epoch_advice(losses, epoch, plateaued):
    advice = advise_epoch(losses)
    assert (advice.epoch, advice.plateaued) == (epoch, plateaued)
    assert str(epoch) in advice.message


def test_no_advice_without_epochs():
    assert advise_epoch([]) is None
