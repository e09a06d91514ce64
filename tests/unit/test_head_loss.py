"""The output head's cross-entropy as one function (training/head_loss.py) computes what
``F.cross_entropy(head(h).float(), targets)`` computes: the same loss and the same gradient of
the hidden states, with a bf16 head and an fp32 one, keeping the logits or making them again,
in one block or many; and a model's training loss through it equals the plain path's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_fused_lora import assert_gradient_close
from torch import nn

from tunelab.catalog.wide_linear import WideLinear, widen_linear_outputs
from tunelab.training import head_loss


def _head(dtype: torch.dtype, vocab: int = 301, width: int = 24, bias: bool = False):
    torch.manual_seed(0)
    head = nn.Linear(width, vocab, bias=bias).to(dtype)
    head.requires_grad_(False)
    if dtype == torch.bfloat16:
        widen_linear_outputs(head)
    return head


def _plain(head, hidden, targets):
    out = head(hidden)
    return F.cross_entropy(out.float(), targets, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("keep_logits", [True, False])
@pytest.mark.parametrize("block", [1 << 22, 301 * 3])  # one block; blocks of 3 rows
@pytest.mark.parametrize("bias", [False, True])
def test_the_loss_and_its_gradient_are_the_plain_cross_entropys(monkeypatch, dtype, keep_logits,
                                                                 block, bias):
    monkeypatch.setattr(head_loss, "BLOCK_ELEMENTS", block)
    head = _head(dtype, bias=bias)
    assert isinstance(head, WideLinear) == (dtype == torch.bfloat16)
    torch.manual_seed(1)
    hidden = torch.randn(11, 24) * 3
    targets = torch.randint(0, 301, (11,))
    targets[3] = targets[4] = 7  # a repeated target

    h1 = hidden.clone().requires_grad_(True)
    plain = _plain(head, h1, targets)
    (plain * 0.37).backward()
    h2 = hidden.clone().requires_grad_(True)
    fused = head_loss.head_cross_entropy(head, h2, targets, keep_logits=keep_logits)
    (fused * 0.37).backward()

    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-4)
    # bf16: the gradient passes through the head's dtype either way, as autograd does it
    tol = dict(rtol=2e-2, atol=2e-3) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h2.grad, h1.grad, **tol)
    assert h2.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_second_backward_through_kept_logits_gives_the_same_gradient(monkeypatch, dtype):
    """The first backward pass writes the gradient over the kept logits; a second one (a
    retained graph) makes them again, block by block."""
    monkeypatch.setattr(head_loss, "BLOCK_ELEMENTS", 2 * 301)  # blocks of 2 rows
    head = _head(dtype)
    hidden = torch.randn(5, 24, requires_grad=True)
    loss = head_loss.head_cross_entropy(head, hidden, torch.tensor([1, 2, 3, 4, 5]))
    first, = torch.autograd.grad(loss, hidden, retain_graph=True)
    second, = torch.autograd.grad(loss, hidden)
    # (one product for every row and one per block round alike only to the last bits)
    exact = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(second, first, **exact)


def test_only_a_frozen_plain_head_without_soft_capping_is_used():
    head = _head(torch.bfloat16)
    assert head_loss.usable(head, SimpleNamespace())
    assert not head_loss.usable(head, SimpleNamespace(final_logit_softcapping=30.0))
    trainable = _head(torch.float32)
    trainable.weight.requires_grad_(True)
    assert not head_loss.usable(trainable, SimpleNamespace())
    assert not head_loss.usable(nn.Sequential(head), SimpleNamespace())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("recompute", [False, True])
def test_a_models_training_loss_through_it_is_the_plain_paths(models_dir, monkeypatch,
                                                             precision, recompute):
    """The loss of a whole model's batch, and every LoRA gradient, with the head's loss as
    one function and with the plain cross-entropy (``usable`` made to say no)."""
    from peft import LoraConfig, get_peft_model

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.data.batches import collate, tokenize_example
    from tunelab.data.examples import Example
    from tunelab.training.loop import _private_model, output_loss_sum

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, precision)
    torch.manual_seed(0)
    model = get_peft_model(_private_model(base.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    items = [tokenize_example(base.tokenizer, base.template, Example(f"in {i} " * (i + 2),
                                                                     f"out {i} " * (4 - i)))
             for i in range(4)]
    batch = collate(items, base.tokenizer.pad_token_id)

    def run():
        model.zero_grad(set_to_none=True)
        loss = output_loss_sum(model, batch, recompute)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.requires_grad}

    assert head_loss.usable(model.get_base_model().get_output_embeddings(),
                            model.get_base_model().config)
    loss_fused, grads_fused = run()
    monkeypatch.setattr(head_loss, "usable", lambda head, config: False)
    loss_plain, grads_plain = run()
    torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-5, atol=1e-5)
    assert grads_fused.keys() == grads_plain.keys() and grads_fused
    for name in grads_plain:
        if precision == "bf16":
            torch.testing.assert_close(grads_fused[name], grads_plain[name], rtol=5e-2,
                                       atol=1e-4)
        else:
            assert_gradient_close(grads_fused[name], grads_plain[name], name)
