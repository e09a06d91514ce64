"""The fused LoRA forward/backward (training/fused_lora.py) computes what PEFT computes: the
same outputs, input gradients and adapter gradients, on a whole model in fp32 and with a bf16
base, and a layer it cannot compute keeps PEFT's forward."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tunelab.training.fused_lora import fuse_lora_layers, unfuse_lora_layers
from tunelab.training.loop import _private_model, output_loss_sum


def assert_gradient_close(actual, expected, msg: str = "", rounded: bool = False) -> None:
    """An fp32 gradient computed another way: equal to a thousandth of its scale (at least
    1e-6). The sums run in another order, and what that changes varies with the CPU's kernels
    (2e-6 on an AMD EPYC where an Intel Xeon's matched to 1e-6). ``rounded``: computed from
    activations kept in bf16 (a bf16 base's MLP), equal to 2% of its scale (bf16 keeps 8 bits:
    a product rounded so is off by up to 0.4%, and the gradients sum many of them)."""
    scale = float(expected.abs().max())
    share = 2e-2 if rounded else 1e-3
    torch.testing.assert_close(actual, expected, rtol=share / 10, atol=max(1e-6, share * scale),
                               msg=msg or None)


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft(base, dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(_private_model(base.model), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=dropout, target_modules=TARGETS, task_type="CAUSAL_LM"))
    with torch.no_grad():  # B starts at zero; give it values so every gradient path is used
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    return model


def _batch(base):
    from tunelab.data.batches import collate, tokenize_example
    from tunelab.data.examples import Example

    examples = [Example(f"question {i} " * (i + 1), f"answer {i}" * (3 - i % 3 + 1))
                for i in range(4)]
    items = [tokenize_example(base.tokenizer, base.template, ex) for ex in examples]
    return collate(items, base.tokenizer.pad_token_id)


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = output_loss_sum(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_layers_compute_what_peft_computes(models_dir, precision):
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, precision)
    model = _peft(base)
    batch = _batch(base)
    loss_peft, grads_peft = _loss_and_grads(model, batch)

    assert fuse_lora_layers(model) == 7 * base.model.config.num_hidden_layers
    loss_fused, grads_fused = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss_fused, loss_peft, rtol=1e-5, atol=1e-5)
    assert grads_fused.keys() == grads_peft.keys() and len(grads_fused) == 2 * 7 * 2
    for name, g in grads_peft.items():  # fp32 rounding, on gradients as large as ~30
        if precision == "bf16":  # the MLPs keep their gate and up products in bf16
            assert_gradient_close(grads_fused[name], g, name, rounded=True)
        else:
            torch.testing.assert_close(grads_fused[name], g, rtol=1e-4,
                                       atol=1e-6 * max(1.0, float(g.abs().max())), msg=name)

    unfuse_lora_layers(model)  # PEFT's own forward again: the same numbers as at first
    loss_again, _ = _loss_and_grads(model, batch)
    assert torch.equal(loss_again, loss_peft)


def test_the_output_dtype_and_shape_are_peft_s(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16")
    model = _peft(base)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features, requires_grad=True)
    expected = layer(x)
    fuse_lora_layers(model)
    got = layer(x)
    assert got.dtype == expected.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected)


def test_layers_the_fused_path_cannot_compute_keep_peft_s_forward(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")
    model = _peft(base, dropout=0.5)  # dropout: PEFT's forward draws the mask
    fuse_lora_layers(model)
    model.train()
    batch = _batch(base)
    torch.manual_seed(1)
    loss_fused = output_loss_sum(model, batch)
    unfuse_lora_layers(model)
    torch.manual_seed(1)
    assert torch.equal(output_loss_sum(model, batch), loss_fused)

    plain = _peft(base)
    fuse_lora_layers(plain)
    with plain.disable_adapter():  # disabled adapters: the base model's own output
        disabled = output_loss_sum(plain, batch)
    reference = copy.deepcopy(plain)
    unfuse_lora_layers(reference)
    with reference.disable_adapter():
        assert torch.equal(output_loss_sum(reference, batch), disabled)


def test_sibling_layers_are_computed_as_one_group(models_dir):
    """q/k/v and gate/up, which read one input, are one function: each output comes from it,
    whichever sibling is called first, and a sibling called alone still gets PEFT's result."""
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16")
    model = _peft(base)
    attention = model.base_model.model.model.layers[0].self_attn
    mlp = model.base_model.model.model.layers[0].mlp
    torch.manual_seed(3)
    x = torch.randn(2, 5, attention.q_proj.in_features)
    expected = {n: getattr(attention, n)(x) for n in ("q_proj", "k_proj", "v_proj")}
    expected_mlp = {n: getattr(mlp, n)(x) for n in ("gate_proj", "up_proj")}
    fuse_lora_layers(model)

    xg = x.clone().requires_grad_(True)
    got = {n: getattr(attention, n)(xg) for n in ("v_proj", "q_proj", "k_proj")}  # any order
    for n, y in got.items():
        torch.testing.assert_close(y, expected[n])
    got_mlp = {n: getattr(mlp, n)(xg) for n in ("gate_proj", "up_proj")}
    for n, y in got_mlp.items():
        torch.testing.assert_close(y, expected_mlp[n])
    # one backward node per group (its outputs numbered), a layer outside any group its own
    nodes = {id(y.grad_fn) for y in got.values()}
    assert len(nodes) == 1 and sorted(y.output_nr for y in got.values()) == [0, 1, 2]
    nodes_mlp = {id(y.grad_fn) for y in got_mlp.values()}
    assert len(nodes_mlp) == 1 and nodes_mlp != nodes
    o = attention.o_proj(xg[..., :attention.o_proj.in_features])
    assert id(o.grad_fn) not in nodes | nodes_mlp

    # the input changed in place since the group ran: computed again, not taken from before
    xg2 = x.clone().requires_grad_(True) * 1
    q = attention.q_proj(xg2)
    with torch.no_grad():
        xg2.mul_(2)
    k = attention.k_proj(xg2)
    unfuse_lora_layers(model)
    torch.testing.assert_close(q, attention.q_proj(x))
    torch.testing.assert_close(k, attention.k_proj(x * 2))


def test_a_group_with_unused_outputs_gives_the_used_ones_gradients(models_dir):
    """Only k of q/k/v used: the gradients of x and of k's adapter are those of k alone; q's
    and v's adapters get zero gradients (as PEFT's layers, called and unused, would)."""
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32")
    model = _peft(base)
    attention = model.base_model.model.model.layers[0].self_attn
    torch.manual_seed(4)
    x = torch.randn(3, attention.q_proj.in_features)

    def grads():
        model.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        attention.q_proj(xg)
        attention.k_proj(xg).square().sum().backward()
        return xg.grad, {n: p.grad for n, p in attention.named_parameters() if p.requires_grad}

    x_plain, plain = grads()
    fuse_lora_layers(model)
    x_fused, fused = grads()
    torch.testing.assert_close(x_fused, x_plain, rtol=1e-5, atol=1e-6)
    for name, g in plain.items():
        if g is None:  # PEFT: q called, its output unused: no gradient reaches it
            assert fused[name] is None or not fused[name].any(), name
        else:
            torch.testing.assert_close(fused[name], g, rtol=1e-5, atol=1e-6, msg=name)


def _saved_widths(fn):
    """Run ``fn`` and list the last dimension of every tensor autograd saved meanwhile that is
    not a parameter, with the result."""
    widths, params = [], set()

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            widths.append(t.shape[-1] if t.dim() else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del params
    return out, widths


@pytest.mark.parametrize("activation, precision", [("silu", "bf16"), ("gelu_tanh", "bf16"),
                                                    ("silu", "fp32")])
def test_a_gated_mlp_is_one_function_that_keeps_two_of_its_four_wide_tensors(
        models_dir, activation, precision):
    """gate/up/down of an MLP as one function: PEFT's output and gradients (input and every
    adapter), with two tensors of the MLP's width kept for the backward pass instead of four,
    in bf16 where the frozen weights are (the gradients then as exact as bf16 allows); any
    activation function; computing no gradient, the module's own forward."""
    from tunelab.catalog import get_base_model, load_base_model

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, precision)
    model = _peft(base)
    mlp = model.base_model.model.model.layers[1].mlp
    if activation == "gelu_tanh":
        mlp.act_fn = torch.nn.GELU(approximate="tanh")
    wide = mlp.gate_proj.out_features
    torch.manual_seed(5)
    x = torch.randn(2, 7, mlp.gate_proj.in_features)

    def run():
        model.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        y, widths = _saved_widths(lambda: mlp(xg))
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        grads = {n: p.grad for n, p in mlp.named_parameters() if p.requires_grad}
        return y.detach(), xg.grad, grads, widths

    y_plain, x_plain, plain, widths_plain = run()
    fuse_lora_layers(model)
    kept: list[torch.dtype] = []

    def pack(t):
        if t.dim() and t.shape[-1] == wide and not isinstance(t, torch.nn.Parameter):
            kept.append(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mlp(x.clone().requires_grad_(True))
    assert kept == [torch.bfloat16 if precision == "bf16" else torch.float32] * 2
    y_fused, x_fused, fused, widths_fused = run()
    assert widths_plain.count(wide) >= 4 and widths_fused.count(wide) == 2, widths_fused
    rounded = precision == "bf16"
    torch.testing.assert_close(y_fused, y_plain, rtol=1e-5, atol=1e-5)
    if rounded:
        assert_gradient_close(x_fused, x_plain, "input", rounded=True)
    else:  # fp32 throughout: the input's gradient to the bound it always had
        torch.testing.assert_close(x_fused, x_plain, rtol=1e-4, atol=1e-5)
    assert fused.keys() == plain.keys() and len(plain) == 6
    for name, g in plain.items():
        assert_gradient_close(fused[name], g, name, rounded=rounded)
    with torch.no_grad():
        _, widths = _saved_widths(lambda: mlp(x))
        torch.testing.assert_close(mlp(x), y_plain, rtol=1e-5, atol=1e-5)
    assert widths == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_gated_mlp_told_to_recompute_keeps_none_of_its_width_and_the_same_gradients(
        models_dir, precision):
    """Within ``recomputed_mlps(n)`` the first n gated MLPs of a forward pass keep no tensor of
    their width and make the gate and up products again in the backward pass: the same output
    and, in fp32, the very same gradients as keeping them (in bf16, where the kept products are
    rounded, the recomputed ones are the exact ones: the same up to that rounding)."""
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.training.fused_lora import recomputed_mlps

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, precision)
    model = _peft(base)
    fuse_lora_layers(model)
    mlp = model.base_model.model.model.layers[1].mlp
    wide = mlp.gate_proj.out_features
    torch.manual_seed(5)
    x = torch.randn(2, 7, mlp.gate_proj.in_features)
    for p in mlp.parameters():  # B at random, so every path carries a gradient
        if p.requires_grad:
            p.data.normal_(0, 0.05)

    def run(count):
        model.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        with recomputed_mlps(count):
            y, widths = _saved_widths(lambda: mlp(xg))
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        grads = {n: p.grad.clone() for n, p in mlp.named_parameters() if p.requires_grad}
        return y.detach(), xg.grad, grads, widths

    y_kept, x_kept, kept, widths_kept = run(0)
    y_again, x_again, again, widths_again = run(1)
    assert widths_kept.count(wide) == 2 and widths_again.count(wide) == 0
    assert torch.equal(y_again, y_kept)
    assert kept.keys() == again.keys() and len(kept) == 6
    for name, g in [("input", x_kept), *kept.items()]:
        got = x_again if name == "input" else again[name]
        if precision == "fp32":
            assert torch.equal(got, g), name
        else:
            assert_gradient_close(got, g, name, rounded=True)
    # the count is of the forward pass's MLPs: a second call in the same context keeps its own
    with recomputed_mlps(1):
        _, first = _saved_widths(lambda: mlp(x.clone().requires_grad_(True)))
        _, second = _saved_widths(lambda: mlp(x.clone().requires_grad_(True)))
    assert first.count(wide) == 0 and second.count(wide) == 2


def test_a_bf16_base_keeps_one_bf16_copy_of_what_its_step_reads_again(models_dir):
    """A bf16 base's training step (the trainer's layout: packed rows, attention by example,
    fused norms) keeps the norms' outputs, the attention's values and output and the MLP's
    gate and up products in bf16, one copy of each for every function that reads it again, and
    the queries and keys in fp32; the loss is the same as keeping them all in fp32, the
    gradients the same to bf16's rounding (fused_lora.keeps_bf16)."""
    import tunelab.training.fused_lora as fused
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.data.batches import pack, tokenize_example
    from tunelab.data.examples import Example
    from tunelab.training.fused_norm import fuse_rms_norms, unfuse_rms_norms
    from tunelab.training.segment_attention import segments, use_segment_attention

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "bf16")
    private = _private_model(base.model)
    assert use_segment_attention(private)
    torch.manual_seed(0)
    model = get_peft_model(private, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                               task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    fuse_lora_layers(model)
    assert fused.kept_dtype(model) == torch.bfloat16
    items = [tokenize_example(base.tokenizer, base.template, Example(f"question {i} " * (i + 2),
                                                                     f"answer {i} " * 3))
             for i in range(4)]
    batch = pack(items, base.tokenizer.pad_token_id, float("inf"))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def step(keep):
        unfuse_rms_norms(model)
        fuse_rms_norms(model, fused.kept_dtype(model) if keep else None)
        kept: dict[int, tuple] = {}

        def save(t):
            key = t.untyped_storage().data_ptr()
            if key not in params:
                kept.setdefault(key, (t.dtype, t.shape[-1]))
            return t

        model.zero_grad(set_to_none=True)
        original = fused.keeps_bf16
        if not keep:
            fused.keeps_bf16 = lambda dtype: False
        try:
            with torch.autograd.graph.saved_tensors_hooks(save, lambda t: t):
                loss = output_loss_sum(model, batch)
        finally:
            fused.keeps_bf16 = original
        with segments(batch.segments, batch.prefix):
            loss.backward()
        fused.release_cast()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads, list(kept.values())

    loss32, grads32, kept32 = step(False)
    loss16, grads16, kept16 = step(True)
    torch.testing.assert_close(loss16, loss32, rtol=0, atol=0)  # the forward is the same
    for name, g in grads32.items():
        assert_gradient_close(grads16[name], g, name, rounded=True)
    config = base.model.config
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = hidden // config.num_attention_heads

    def count(kept, dtype, width):
        return sum(1 for d, w in kept if d == dtype and w == width)

    # one copy each, in bf16 where the other step kept fp32: every norm's output (two a layer
    # and the last one; the LoRA layers that read them keep the same copy), and per layer the
    # attention's values and output (which o_proj reads: the same copy laid out by heads);
    # not the queries and keys (the other head-wide tensors: the rotary tables, the MLP's A
    # products on this model)
    norms = 2 * layers + 1
    assert count(kept16, torch.bfloat16, hidden) - count(kept32, torch.bfloat16, hidden) == norms
    assert count(kept32, torch.float32, hidden) - count(kept16, torch.float32, hidden) == norms
    assert count(kept16, torch.bfloat16, head_dim) == 2 * layers
    assert count(kept32, torch.float32, head_dim) - count(kept16, torch.float32, head_dim) == (
        2 * layers)
    assert len(kept16) == len(kept32)
