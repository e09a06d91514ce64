"""A base held in bf16 must not round an adapter's small updates away (catalog/wide_linear.py):
the frozen layer's matmul runs in bf16 and its result is fp32, so PEFT adds the adapter's output
at full precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from tunelab.catalog.wide_linear import WideLinear, widen_linear_outputs


def _lora_layer(widen: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A bf16 linear layer with a LoRA adapter whose update is ~1e-4 of the layer's output
    (well below bf16's ~4e-3 resolution); the input and the adapter's exact fp32 update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256, bias=False).to(torch.bfloat16))
    if widen:
        assert widen_linear_outputs(model) == 1
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["0"]), model)
    lora = model[0]
    lora.lora_A.float()  # as get_peft_model keeps them in training: adapter weights are fp32
    lora.lora_B.float()
    with torch.no_grad():
        lora.lora_B["default"].weight.normal_(std=1e-4)
    x = torch.randn(8, 256)
    a, b = lora.lora_A["default"].weight, lora.lora_B["default"].weight
    return model, x, (x @ a.T @ b.T).detach()


def test_the_adapter_update_is_added_in_full_to_a_bf16_layers_result():
    model, x, update = _lora_layer(widen=True)
    base = F.linear(x.to(torch.bfloat16), model[0].base_layer.weight).float()
    out = model(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out - base, update, rtol=1e-3, atol=1e-7)


def test_a_plain_bf16_layer_loses_the_update_which_is_why_the_base_is_widened():
    model, x, update = _lora_layer(widen=False)
    base = F.linear(x.to(torch.bfloat16), model[0].base_layer.weight).float()
    out = model(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    lost = ((out.float() - base) - update).abs().mean() / update.abs().mean()
    assert lost > 0.5  # most of the update is rounded away


def test_a_bf16_base_is_loaded_widened_and_an_fp32_base_is_not(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    spec = get_base_model("tiny-random")
    bf16 = load_base_model(spec, models_dir, "cpu", 1, "bf16")
    linears = [m for m in bf16.model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is WideLinear for m in linears)
    assert all(m.weight.dtype == torch.bfloat16 for m in linears)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert bf16.model(ids).logits.dtype == torch.float32
    fp32 = load_base_model(spec, models_dir, "cpu", 1, "fp32")
    assert not any(type(m) is WideLinear for m in fp32.model.modules())


def test_a_bf16_base_gives_its_first_layer_and_rotary_tables_fp32_inputs(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    spec = get_base_model("tiny-random")
    bf16 = load_base_model(spec, models_dir, "cpu", 1, "bf16")  # a copy of its own
    fp32 = load_base_model(spec, models_dir, "cpu", 1, "fp32")
    embedding = bf16.model.get_input_embeddings()
    assert embedding.weight.dtype == torch.bfloat16  # the table stays bf16
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def first_layer_input(module, args, kwargs):
        seen.append(((args[0] if args else kwargs["hidden_states"]),
                     kwargs["position_embeddings"][0]))

    for model in (fp32.model, bf16.model):
        model.get_decoder().layers[0].register_forward_pre_hook(first_layer_input,
                                                                with_kwargs=True)
    ids = torch.tensor([[5, 9, 3, 7, 11, 2, 8, 4]])
    with torch.no_grad():
        fp32.model(ids)
        bf16.model(ids)
        embedding._tunelab_fp32_output.remove()  # as it was before: a bf16 output
        bf16.model(ids)
    (reference, ref_cos), (widened, cos), (narrow, narrow_cos) = seen
    assert widened.dtype == cos.dtype == torch.float32
    assert narrow.dtype == narrow_cos.dtype == torch.bfloat16
    # the rotary tables are the fp32 base's exactly; the first layer's input is the bf16
    # table's values, unrounded by the output
    assert torch.equal(cos, ref_cos) and not torch.equal(narrow_cos.float(), ref_cos)
    torch.testing.assert_close(widened, reference, rtol=1e-2, atol=1e-2)


# --- Weights stored in bf16, products in fp32 (TUNELAB_PRECISION=bf16-stored) ---------------


def _rounded_fp32(models_dir):
    """The tiny model in fp32 with its weights rounded to bf16 (a stored base is loaded from
    the bf16 copy, so all of them are): what a stored base computes, done the plain way."""
    from tunelab.catalog import get_base_model, load_base_model

    fp32 = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")
    with torch.no_grad():
        for param in fp32.model.parameters():
            param.copy_(param.bfloat16().float())
    return fp32


def test_a_stored_base_keeps_bf16_weights_and_answers_as_fp32_products_of_them(models_dir):
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.catalog.wide_linear import StoredLinear

    stored = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16-stored")
    assert stored.precision.stored and stored.precision.label.startswith("fp32 products")
    model = stored.model
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
    assert linears and all(type(m) is StoredLinear for m in linears)
    assert all(m.weight.dtype == torch.bfloat16 for m in linears)
    # everything else is fp32: the embedding, the head, the norms
    others = [p for n, p in model.named_parameters()
              if not any(p is m.weight for m in linears)]
    assert others and all(p.dtype == torch.float32 for p in others)
    reference = _rounded_fp32(models_dir)
    ids = torch.tensor([[5, 9, 3, 7, 11, 2, 8, 4]])
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference.model(ids).logits
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def _lora_step(base, fuse: bool) -> tuple[float, dict]:
    """One forward and backward of a LoRA model on ``base`` (B made non-zero so every
    gradient flows): the loss and the adapter's gradients by name."""
    from peft import get_peft_model

    from tunelab.training.fused_lora import fuse_lora_layers, unfuse_lora_layers

    torch.manual_seed(1)
    model = get_peft_model(base.model, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                           "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.05)
            # PEFT makes the A matrices in the base layer's dtype and then fp32 (so a bf16
            # base's are bf16 values): the same values for both models
            param.copy_(param.bfloat16().float())
    if fuse:
        assert fuse_lora_layers(model) > 0
    ids = torch.tensor([[5, 9, 3, 7, 11, 2, 8, 4, 6, 10]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if fuse:
        unfuse_lora_layers(model)
    model.unload()
    return loss.item(), grads


@pytest.mark.parametrize("fuse", [True, False], ids=["fused layers", "PEFT's layers"])
def test_training_through_stored_weights_gives_the_fp32_gradients_of_their_values(models_dir,
                                                                                    fuse):
    """The backward pass widens each weight again (the forward's widened copy is overwritten
    by the next layer of that shape): loss and every adapter gradient are those of the plain
    fp32 model holding the same rounded values."""
    from tunelab.catalog import get_base_model, load_base_model

    stored = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16-stored")
    loss, grads = _lora_step(stored, fuse)
    ref_loss, ref_grads = _lora_step(_rounded_fp32(models_dir), fuse)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # the frozen weights stayed bf16 and got no gradient
    assert all(p.grad is None for p in stored.model.parameters())


def _resident_file_kb() -> int:
    import re

    status = open("/proc/self/status").read()
    return int(re.search(r"RssFile:\s+(\d+)", status).group(1))


def test_the_pages_of_a_converted_weights_file_are_given_back_and_no_other(tmp_path):
    """A weight read from its mapped file and converted leaves its old pages resident while the
    mapping stays: they are given back; memory of our own is left alone; either way the data
    reads as before (a file's pages come back from the file)."""
    from tunelab.catalog.wide_linear import release_file_pages

    path = tmp_path / "weights.bin"
    values = torch.arange(4 * 2**20, dtype=torch.int32)  # 16 MB
    path.write_bytes(values.numpy().tobytes())
    mapped = torch.from_file(str(path), shared=False, size=values.numel(), dtype=torch.int32)
    assert torch.equal(mapped, values)  # read: resident
    before = _resident_file_kb()
    assert release_file_pages(mapped)
    assert before - _resident_file_kb() > 12 * 1024  # most of its 16 MB
    assert torch.equal(mapped, values)
    own = values.clone()
    assert not release_file_pages(own) and torch.equal(own, values)
