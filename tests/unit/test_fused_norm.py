"""RMS norms that keep their output, not their input (training/fused_norm.py): the same output
and input gradient as transformers' own norms, a whole model's loss and LoRA gradients as
before, less kept for the backward pass, and a norm it cannot compute left as it is."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tests.unit.test_fused_lora import _batch, _loss_and_grads, _peft, assert_gradient_close
from tunelab.training.fused_norm import (
    fusable_norm,
    fuse_rms_norms,
    norms_fuse,
    unfuse_rms_norms,
)


def _norm(kind, dtype):
    norm = kind(48, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48) * 0.5 + (0.0 if kind is Gemma3RMSNorm else 1.0))
    norm.weight.requires_grad_(False)
    return norm.to(dtype)


@pytest.mark.parametrize("kind", [LlamaRMSNorm, Gemma3RMSNorm])
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
def test_a_norm_computes_and_differentiates_as_its_own_forward(kind, weight_dtype):
    torch.manual_seed(0)
    norm = _norm(kind, weight_dtype)
    x = (torch.randn(2, 7, 48) * 3).requires_grad_(True)
    g = torch.randn(2, 7, 48)
    expected = norm(x)
    (expected_grad,) = torch.autograd.grad(expected, x, g)
    assert fuse_rms_norms(norm) == 1
    got = norm(x)
    (got_grad,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert_gradient_close(got_grad, expected_grad)
    # without gradients, and after unfusing, the norm's own forward
    with torch.no_grad():
        assert torch.equal(norm(x), type(norm).forward(norm, x))
    unfuse_rms_norms(norm)
    assert "forward" not in norm.__dict__ and torch.equal(norm(x), expected)


def test_a_norm_it_cannot_compute_keeps_its_own_forward():
    """A weight with a zero (the backward divides by it) or a trainable weight (its gradient
    is not computed) leaves the norm's own forward; so does an input that is not fp32."""
    zero = _norm(LlamaRMSNorm, torch.float32)
    with torch.no_grad():
        zero.weight[3] = 0.0
    assert not fusable_norm(zero) and fuse_rms_norms(zero) == 0
    assert not norms_fuse(torch.nn.Sequential(_norm(LlamaRMSNorm, torch.float32), zero))

    trainable = _norm(LlamaRMSNorm, torch.float32)
    assert fuse_rms_norms(trainable) == 1
    trainable.weight.requires_grad_(True)
    x = torch.randn(3, 48, requires_grad=True)
    trainable(x).sum().backward()
    assert trainable.weight.grad is not None  # computed by the norm's own forward

    half = _norm(LlamaRMSNorm, torch.float32)
    fuse_rms_norms(half)
    xb = torch.randn(3, 48, dtype=torch.bfloat16, requires_grad=True)
    assert half(xb).grad_fn.name() != "_RmsNormBackward"


def _saved_bytes(model, batch):
    from tunelab.training.loop import output_loss_sum

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output_loss_sum(model, batch)
    return sum(seen.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_model_with_fused_norms_trains_as_before_and_keeps_less(models_dir, precision):
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.training.fused_lora import fuse_lora_layers, kept_dtype

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, precision)
    model = _peft(base)
    fuse_lora_layers(model)
    batch = _batch(base)
    loss, grads = _loss_and_grads(model, batch)
    kept = _saved_bytes(model, batch)

    layers = base.model.config.num_hidden_layers
    assert norms_fuse(model)  # the memory plan's prediction (memory.py)
    # in the dtype the LoRA layers keep their inputs in (bf16 for a bf16 base): one copy
    assert fuse_rms_norms(model, kept_dtype(model)) == 2 * layers + 1  # two a layer, the last
    fused_loss, fused_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == grads.keys()
    for name, g in grads.items():
        assert_gradient_close(fused_grads[name], g, name, rounded=precision == "bf16")
    # each layer's two norm inputs are no longer kept (the outputs are, by the LoRA layers);
    # the first layer's first norm kept none (its input, the frozen embeddings, needs none);
    # a norm keeps its weight in fp32 now: a copy where the base is bf16. The last norm keeps
    # its output instead of its input: in bf16 for a bf16 base, 2 bytes a value less
    hidden = base.model.config.hidden_size
    tokens = batch.input_ids.numel()
    inputs = (2 * layers - 1) * tokens * hidden * 4
    weights = 2 * layers * hidden * 4 if precision == "bf16" else 0  # the norms that keep any
    last = tokens * hidden * 2 if precision == "bf16" else 0
    assert kept - _saved_bytes(model, batch) == inputs - weights + last


def test_the_trainers_steps_run_the_fused_norms(tiny_base, tmp_path):
    """Through ``train`` itself, every RMS norm's output in a training step comes from the fused
    norm. transformers 5 swapped the forward of its norms back ("hub kernels") whenever a model
    entered training mode, which the trainer does after fusing: the steps silently kept every
    norm's input again (~135 KB a token on the default model) until models were loaded with
    them off (catalog/loading.py, ``hub_kernels_off``)."""
    from conftest import arithmetic_examples

    from tunelab.training import Hyperparameters, train
    from tunelab.training.fused_norm import RMS_NORMS

    made: list[str] = []

    def record(module, args, output):
        if torch.is_grad_enabled() and output.requires_grad:
            made.append(type(output.grad_fn).__name__)

    norms = [m for m in tiny_base.model.modules() if type(m).__name__ in RMS_NORMS]
    handles = [m.register_forward_hook(record) for m in norms]  # the trainer's copy has them
    try:
        train(tiny_base, arithmetic_examples(8), Hyperparameters(epoch_count=1, batch_size=4),
              tmp_path / "out")
    finally:
        for handle in handles:
            handle.remove()
    # two steps; the first norm's input, the frozen embeddings, needs no gradient
    assert len(made) == 2 * (len(norms) - 1)
    assert set(made) == {"_RmsNormBackward"}
