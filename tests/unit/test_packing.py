"""Packed rows (data/batches.py ``pack``): several examples share a row with positions that
restart, and each example's loss and the adapter's gradients are what a padded batch gives.
The trainer packs only where the model keeps packed examples apart (``packing_works``)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tunelab.data import Example
from tunelab.data.batches import collate, pack, pack_rows, shared_prefix, tokenize_example
from tunelab.training.loop import (
    _private_model,
    attention_span,
    output_loss_sum,
    packing_works,
    prefix_sharing_works,
)
from tunelab.training.segment_attention import NAME, segment_attention, use_segment_attention

EXAMPLES = [Example("hi", "yes"), Example("a much longer question " * 6, "no"),
            Example("ok", "fine thanks"), Example("and a long one again " * 7, "x"),
            Example("middle sized question here", "a middle sized answer")]


def _items(base):
    return [tokenize_example(base.tokenizer, base.template, ex) for ex in EXAMPLES]


def test_every_example_lands_in_exactly_one_row():
    lengths = [37, 5, 120, 64, 64, 9, 200, 1]
    for span in (1.0, 50.0, 300.0, 3072.0, float("inf")):
        rows = pack_rows(lengths, span)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(rows)


def test_the_layout_follows_the_cost_of_attention():
    lengths = [100, 100, 100, 100]
    # attention free: one row, no padding at all
    assert pack_rows(lengths, float("inf")) == [[0, 1, 2, 3]]
    # attention dear: one example per row (no row longer than the longest example)
    assert len(pack_rows(lengths, 1.0)) == 4
    # examples of equal length pack into rows of one example each: no padding to remove
    assert len(pack_rows(lengths, 300.0)) == 4
    # in between: short examples share rows, fewer rows than examples but more than one
    rows = pack_rows([200, 50, 50, 50, 50, 50], 300.0)
    assert sorted(rows) == [[0, 5], [1, 2, 3, 4]]  # 250 and 200 tokens
    # a long example gets its own row; short ones fill the others
    rows = pack_rows([400, 90, 110, 100, 95], 3072.0)
    assert [0] in rows


def test_a_packed_batch_has_the_padded_batchs_targets_and_positions(tiny_base):
    items = _items(tiny_base)
    packed = pack(items, tiny_base.tokenizer.pad_token_id, 60.0)
    padded = collate(items, tiny_base.tokenizer.pad_token_id)
    assert packed.attention_mask is None and packed.n_tokens == padded.n_tokens
    assert packed.input_ids.shape[0] < len(items)  # something was packed
    assert packed.input_ids.numel() < padded.input_ids.numel()
    # every target is predicted from the position just before it, within its own example
    ids, pos = packed.input_ids, packed.position_ids
    got = sorted(zip(packed.targets.tolist(),
                     ids[packed.predict_rows, packed.predict_cols + 1].tolist(), strict=True))
    assert all(t == nxt for t, nxt in got)
    assert sorted(packed.targets.tolist()) == sorted(padded.targets.tolist())
    for r in range(ids.shape[0]):  # positions restart at 0 for each example and the padding
        starts = (pos[r] == 0).nonzero().flatten().tolist()
        assert starts[0] == 0 and all(pos[r, i] == pos[r, i - 1] + 1 for i in range(1, ids.shape[1])
                                      if i not in starts)


@pytest.mark.parametrize("span", [1.0, 60.0, float("inf")])
@pytest.mark.parametrize("by_example", [False, True], ids=["masked", "by-example"])
def test_a_packed_batch_gives_the_padded_batchs_loss_and_gradients(tiny_base, span, by_example):
    """Packed rows' attention either through transformers' block-diagonal mask or example by
    example (segment_attention.py): the same loss and gradients as padded rows."""
    items = _items(tiny_base)
    torch.manual_seed(0)
    private = _private_model(tiny_base.model)
    assert use_segment_attention(private) if by_example else True
    model = get_peft_model(private, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False))

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = output_loss_sum(model, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    pad = tiny_base.tokenizer.pad_token_id
    loss_padded, grads_padded = loss_and_grads(collate(items, pad))
    loss_packed, grads_packed = loss_and_grads(pack(items, pad, span))
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_packed, grads_padded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_the_model_is_checked_to_keep_packed_examples_apart(tiny_base):
    assert packing_works(tiny_base.model, tiny_base.tokenizer.pad_token_id)
    assert attention_span(tiny_base.model) > 0


class _PositionsIgnored(torch.nn.Module):
    """A causal LM whose decoder drops the position ids it is given (as an architecture that
    numbers positions itself would): packed examples would see each other."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_decoder(self):
        inner = self.model.get_decoder()

        class Decoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, *, input_ids, position_ids=None, **kw):
                return self.inner(input_ids=input_ids, **kw)

        return Decoder()


def test_a_model_that_ignores_restarted_positions_is_not_packed(tiny_base):
    assert not packing_works(_PositionsIgnored(tiny_base.model),
                             tiny_base.tokenizer.pad_token_id)


def _train_twice(tiny_base, tmp_path, failed):
    """``train()`` on the same examples as the trainer lays them out, then as it lays them out
    for a model that fails the layout checks ``failed`` ((attention implementation, shared
    prefix) keys of ``loop._PACKING``): both results, each trained 2 epochs of 3 steps."""
    from tunelab.training import Hyperparameters, train
    from tunelab.training.loop import _PACKING

    examples = [Example(f"add {i} and {i + 1} " * (1 + i % 4), f"{2 * i + 1}") for i in range(12)]
    hp = Hyperparameters(epoch_count=2, batch_size=4, learning_rate=0.01)
    first = train(tiny_base, examples, hp, tmp_path / "first")
    checked = dict(_PACKING[tiny_base.model])
    _PACKING[tiny_base.model].update(dict.fromkeys(failed, False))
    try:
        second = train(tiny_base, examples, hp, tmp_path / "second")
    finally:
        del _PACKING[tiny_base.model]
    assert len(first.snapshots) == len(second.snapshots) == 6
    return first, second, checked


def _assert_same_steps(a, b):
    for x, y in zip(a.snapshots, b.snapshots, strict=True):
        assert x.tokens == y.tokens  # the examples' own tokens, however they were laid out
        assert x.mean_loss == pytest.approx(y.mean_loss, rel=1e-4)


def test_training_on_packed_rows_takes_the_steps_padded_rows_take(tiny_base, tmp_path):
    packed, padded, _ = _train_twice(tiny_base, tmp_path, [
        (impl, share) for impl in (NAME, "sdpa") for share in (False, True)])
    _assert_same_steps(packed, padded)


def test_a_large_batch_is_laid_out_in_rows_near_the_longest_examples_width():
    lengths = [10 + (i * 37) % 300 for i in range(2000)]
    rows = pack_rows(lengths, 3072.0)
    assert sorted(i for row in rows for i in row) == list(range(2000))
    widths = [sum(lengths[i] for i in row) for row in rows]
    assert max(widths) < 1.1 * max(lengths)  # little padding: rows of about equal work


def test_attention_by_example_is_each_examples_own_causal_attention():
    """Each example's queries see only its own keys, causally; a row's padding is zeros."""
    torch.manual_seed(0)
    heads, kv_heads, dim = 4, 2, 8
    spans = [[(0, 5), (5, 3)], [(0, 7)]]  # row 0: two examples, row 1: one and 1 of padding
    q = torch.randn(2, heads, 8, dim)
    k, v = torch.randn(2, kv_heads, 8, dim), torch.randn(2, kv_heads, 8, dim)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    from tunelab.training.segment_attention import segments

    with segments(spans):
        out, _ = segment_attention(module, q, k, v, None, scaling=0.3)
    assert out.shape == (2, 8, heads, dim)
    for r, row in enumerate(spans):
        for start, n in row:
            alone = torch.nn.functional.scaled_dot_product_attention(
                q[r:r + 1, :, start:start + n], k[r:r + 1, :, start:start + n],
                v[r:r + 1, :, start:start + n], is_causal=True, scale=0.3, enable_gqa=True)
            torch.testing.assert_close(out[r:r + 1, start:start + n], alone.transpose(1, 2))
    assert torch.equal(out[1, 7:], torch.zeros(1, heads, dim))
    # outside the context it is transformers' SDPA attention with the mask it is given
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool).tril()
    plain, _ = segment_attention(module, q, k, v, mask, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask, scale=0.3)
    torch.testing.assert_close(plain, want.transpose(1, 2))


def test_only_the_trainers_private_copy_attends_by_example(tiny_base):
    private = _private_model(tiny_base.model)
    assert use_segment_attention(private)
    assert private.config._attn_implementation == NAME
    assert tiny_base.model.config._attn_implementation == "sdpa"  # the served base: unchanged
    assert packing_works(private, tiny_base.tokenizer.pad_token_id)


def test_the_base_and_the_trainers_copy_are_checked_apart(tiny_base):
    """The trainer checks its private copy (attention by example) under the base model's key;
    a check of the base itself (SDPA with a mask) must not stand in for it, nor it for the
    base's."""
    from tunelab.training.loop import _PACKING

    pad = tiny_base.tokenizer.pad_token_id
    private = _private_model(tiny_base.model)
    use_segment_attention(private)
    assert packing_works(tiny_base.model, pad)
    assert packing_works(private, pad, key=tiny_base.model)
    assert _PACKING[tiny_base.model] == {("sdpa", False): True, (NAME, False): True}


# A shared prefix (pack(share_prefix=True)): the tokens every example of a batch begins with
# are laid once per row, and each example attends to them as to its own.

def test_a_shared_prefix_is_laid_once_and_every_target_keeps_its_place(tiny_base):
    items = _items(tiny_base)
    pad = tiny_base.tokenizer.pad_token_id
    prefix = shared_prefix(items)
    assert prefix > 0  # the chat template's opening and system turn
    assert all(it.prompt_ids[:prefix] == items[0].prompt_ids[:prefix] for it in items)
    assert len({it.prompt_ids[prefix] for it in items}) > 1  # and no further
    shared = pack(items, pad, float("inf"), share_prefix=True)
    plain = pack(items, pad, float("inf"))
    assert shared.prefix == prefix and plain.prefix == 0
    assert shared.input_ids.shape == (1, plain.input_ids.shape[1] - (len(items) - 1) * prefix)
    ids, pos = shared.input_ids[0], shared.position_ids[0]
    assert ids[:prefix].tolist() == items[0].prompt_ids[:prefix]
    assert pos[:prefix].tolist() == list(range(prefix))
    rests = sorted((it.prompt_ids + it.output_ids)[prefix:] for it in items)
    assert sorted(ids[s:s + n].tolist() for s, n in shared.segments[0]) == rests
    for s, n in shared.segments[0]:  # each example's positions go on from the prefix's
        assert pos[s:s + n].tolist() == list(range(prefix, prefix + n))
    assert shared.targets.tolist() == plain.targets.tolist()
    assert torch.equal(ids[shared.predict_cols + 1], shared.targets)


def test_the_prefix_leaves_every_example_its_last_prompt_token(tiny_base):
    from tunelab.data.batches import TokenizedExample

    same = [TokenizedExample([1, 2, 3, 4], [7]), TokenizedExample([1, 2, 3, 4], [8, 9])]
    assert shared_prefix(same) == 3
    assert shared_prefix(same[:1]) == 0  # nothing to share with
    assert shared_prefix([TokenizedExample([1, 2], [7]), TokenizedExample([5, 2], [7])]) == 0
    batch = pack(same, 0, float("inf"), share_prefix=True)
    assert batch.input_ids[0].tolist() == [1, 2, 3, 4, 7, 4, 8, 9]
    assert batch.predict_cols.tolist() == [3, 5, 6] and batch.targets.tolist() == [7, 8, 9]


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_a_shared_prefix_gives_the_padded_batchs_loss_and_gradients(tiny_base, recompute):
    """Every example's loss and the adapter's gradients through the prefix laid once (the
    gradients from every example that reach it add up) are those of padded rows, where each
    example has its own copy; also with each layer recomputed in the backward pass."""
    from tunelab.training.segment_attention import segments

    items = _items(tiny_base)
    torch.manual_seed(0)
    private = _private_model(tiny_base.model)
    assert use_segment_attention(private)
    if recompute:
        private.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(private, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
        init_lora_weights=False))
    model.train()

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = output_loss_sum(model, batch, recompute)
        with segments(batch.segments, batch.prefix):
            loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    pad = tiny_base.tokenizer.pad_token_id
    loss_padded, grads_padded = loss_and_grads(collate(items, pad))
    shared = pack(items, pad, float("inf"), share_prefix=True)
    assert shared.prefix > 0
    loss_shared, grads_shared = loss_and_grads(shared)
    torch.testing.assert_close(loss_shared, loss_padded, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_shared, grads_padded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_only_attention_by_example_is_trusted_with_a_shared_prefix(tiny_base):
    pad = tiny_base.tokenizer.pad_token_id
    private = _private_model(tiny_base.model)
    assert use_segment_attention(private)
    assert prefix_sharing_works(private, pad)
    # transformers' SDPA with the mask it makes from the positions cuts an example off the
    # prefix: the check sees it
    assert not prefix_sharing_works(tiny_base.model, pad)
    assert packing_works(tiny_base.model, pad)


def test_attention_with_a_shared_prefix_is_each_examples_causal_attention_over_it():
    from tunelab.training.segment_attention import segments

    torch.manual_seed(0)
    heads, kv_heads, dim, prefix = 4, 2, 8, 3
    spans = [[(3, 4), (7, 2)], [(3, 5)]]  # row 1: one example and 1 of padding
    q = torch.randn(2, heads, 9, dim)
    k, v = torch.randn(2, kv_heads, 9, dim), torch.randn(2, kv_heads, 9, dim)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    with segments(spans, prefix):
        out, _ = segment_attention(module, q, k, v, None, scaling=0.3)
    for r, row in enumerate(spans):
        for start, n in row:
            seq = torch.cat((torch.arange(prefix), torch.arange(start, start + n)))
            alone = torch.nn.functional.scaled_dot_product_attention(
                q[r:r + 1, :, seq], k[r:r + 1, :, seq], v[r:r + 1, :, seq], is_causal=True,
                scale=0.3, enable_gqa=True).transpose(1, 2)
            torch.testing.assert_close(out[r:r + 1, start:start + n], alone[:, prefix:])
            torch.testing.assert_close(out[r:r + 1, :prefix], alone[:, :prefix])
    assert torch.equal(out[1, 8:], torch.zeros(1, heads, dim))
    # a layer whose window is shorter than an example cannot read such a row: it says so
    module.sliding_window = 4
    with segments(spans, prefix), pytest.raises(RuntimeError, match="shared prefix"):
        segment_attention(module, q, k, v, None, scaling=0.3)


@pytest.mark.parametrize("prefix", [0, 3])
def test_attention_by_example_has_each_examples_own_gradients(prefix):
    """The CPU function's backward: the gradients of the queries, keys and values are those of
    each example's own causal attention (over the prefix, which gathers every example's)."""
    from tunelab.training.segment_attention import segments

    torch.manual_seed(1)
    heads, kv_heads, dim = 4, 2, 8
    spans = [[(prefix, 4), (prefix + 4, 2), (prefix + 6, 3)], [(prefix, 5)]]
    width = prefix + 9
    q0 = torch.randn(2, heads, width, dim)
    k0, v0 = torch.randn(2, kv_heads, width, dim), torch.randn(2, kv_heads, width, dim)
    grad = torch.randn(2, width, heads, dim)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
    with segments(spans, prefix):
        out, _ = segment_attention(module, q, k, v, None, scaling=0.3)
    out.backward(grad)
    # the reference: every example alone, as autograd differentiates it
    rq, rk, rv = (t.clone().requires_grad_() for t in (q0, k0, v0))
    total = 0
    for r, row in enumerate(spans):
        for i, (start, n) in enumerate(row):
            seq = torch.cat((torch.arange(prefix), torch.arange(start, start + n)))
            alone = torch.nn.functional.scaled_dot_product_attention(
                rq[r:r + 1, :, seq], rk[r:r + 1, :, seq], rv[r:r + 1, :, seq], is_causal=True,
                scale=0.3, enable_gqa=True).transpose(1, 2)
            keep = alone if i == 0 else alone[:, prefix:]  # the prefix's outputs count once
            total = total + (keep * grad[r:r + 1, seq[-keep.shape[1]:]]).sum()
    total.backward()
    for got, want in ((q, rq), (k, rk), (v, rv)):
        torch.testing.assert_close(got.grad, want.grad)
    assert torch.equal(q.grad[1, :, prefix + 5:], torch.zeros(heads, width - prefix - 5, dim))
    # the path for other devices (autograd through PyTorch's attention) computes the same
    from tunelab.training.segment_attention import _by_example

    gq, gk, gv = (t.clone().requires_grad_() for t in (q0, k0, v0))
    other = _by_example(gq, gk, gv, spans, prefix, 0.3)
    torch.testing.assert_close(other.transpose(1, 2), out)
    other.transpose(1, 2).backward(grad)
    for got, want in ((gq, q), (gk, k), (gv, v)):
        torch.testing.assert_close(got.grad, want.grad)


def test_training_with_a_shared_prefix_takes_the_steps_training_without_takes(tiny_base,
                                                                             tmp_path):
    shared, unshared, checked = _train_twice(tiny_base, tmp_path, [(NAME, True)])
    assert checked[(NAME, True)]  # the trainer's copy shared prefixes
    _assert_same_steps(shared, unshared)
