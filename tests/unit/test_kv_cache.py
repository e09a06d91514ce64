"""The decoding cache that grows in place gives the model exactly what transformers' own does."""

from __future__ import annotations

import pytest
import torch

from tunelab.catalog.kv_cache import cache_of, growing_cache, with_cache


@pytest.fixture(scope="module")
def tiny(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    return load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32").model


def decode(model, cache, prompt, steps, crop_at=None, positions_from=None):
    """Greedy tokens and each step's logits, feeding ``cache`` (cropped by 3 at ``crop_at``).
    ``positions_from``: the position of the prompt's first token, where ``cache`` holds the
    tokens before it (else as the cache counts them)."""
    ids, logits, cur, past = [], [], torch.tensor([prompt]), cache
    with torch.no_grad():
        for i in range(steps):
            if i == crop_at:
                past.crop(-3)
                cur = torch.tensor([[ids[-4]]])
                del ids[-3:]
            at = {} if positions_from is None else {"position_ids": torch.arange(
                positions_from, positions_from + cur.shape[1]).unsqueeze(0) + (
                    0 if i == 0 else len(prompt) - 1 + i)}
            out = model(input_ids=cur, use_cache=True, logits_to_keep=1,
                        **with_cache(model, past), **at)
            past = cache_of(out)
            logits.append(out.logits[0, -1])
            ids.append(int(out.logits[0, -1].argmax()))
            cur = torch.tensor([[ids[-1]]])
    return ids, torch.stack(logits), past


def test_growing_cache_decodes_as_the_dynamic_cache_does(tiny):
    from transformers import DynamicCache

    prompt = list(range(3, 40))
    want, want_logits, _ = decode(tiny, DynamicCache(config=tiny.config), prompt, 150)
    got, got_logits, cache = decode(tiny, growing_cache(tiny.config), prompt, 150)
    assert got == want
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    layer = cache.layers[0]
    assert layer.keys.shape[-2] == len(prompt) + 149
    assert layer.key_buffer.shape[-2] > layer.keys.shape[-2]  # room to spare: it grew once
    assert layer.keys.data_ptr() == layer.key_buffer.data_ptr()


def test_a_cache_told_its_capacity_grows_no_larger_and_decodes_the_same(tiny):
    """A caller that knows the most positions a row will hold (its prompt and its answer's
    budget) gets a buffer of that size, not one doubled past it; past it, it still grows."""
    prompt = list(range(3, 40))
    want, want_logits, free = decode(tiny, growing_cache(tiny.config), prompt, 20)
    got, got_logits, bounded = decode(tiny, growing_cache(tiny.config, len(prompt) + 20),
                                      prompt, 20)
    assert got == want
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=0)
    assert free.layers[0].key_buffer.shape[-2] == len(prompt) + 64  # room to spare
    layer = bounded.layers[0]
    assert layer.key_buffer.shape[-2] == layer.value_buffer.shape[-2] == len(prompt) + 20
    assert layer.keys.shape[-2] == len(prompt) + 19
    assert layer.keys.data_ptr() == layer.key_buffer.data_ptr()  # never grown again
    # a capacity too small for what comes still holds it all
    over, _, small = decode(tiny, growing_cache(tiny.config, 10), prompt, 20)
    assert over == want and small.layers[0].keys.shape[-2] == len(prompt) + 19


def test_a_cropped_growing_cache_goes_on_from_the_cropped_length(tiny):
    from transformers import DynamicCache

    prompt = list(range(5, 20))
    want, _, _ = decode(tiny, DynamicCache(config=tiny.config), prompt, 40, crop_at=20)
    got, _, _ = decode(tiny, growing_cache(tiny.config), prompt, 40, crop_at=20)
    assert got == want


def test_a_batch_of_prompts_reuses_no_row_of_another(tiny):
    """Rows of a batch keep their own keys and values (the buffer is per layer, all rows)."""
    from transformers import DynamicCache

    prompts = torch.tensor([list(range(3, 13)), list(range(50, 60))])
    with torch.no_grad():
        a = tiny(input_ids=prompts, use_cache=True, **with_cache(tiny, growing_cache(tiny.config)))
        b = tiny(input_ids=prompts, use_cache=True,
                 **with_cache(tiny, DynamicCache(config=tiny.config)))
        nxt = a.logits[:, -1].argmax(-1, keepdim=True)
        a2 = tiny(input_ids=nxt, use_cache=True, **with_cache(tiny, cache_of(a)))
        b2 = tiny(input_ids=nxt, use_cache=True, **with_cache(tiny, cache_of(b)))
    torch.testing.assert_close(a2.logits, b2.logits, rtol=1e-5, atol=1e-5)


def test_the_cache_goes_by_the_name_the_model_takes_without_a_deprecation_notice(tiny):
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name goes in 5.40):
    the cache is handed over and read back under the installed version's name, so decoding
    neither warns now nor breaks when the old name is removed."""
    import inspect
    import warnings

    from peft import LoraConfig, get_peft_model

    takes = inspect.signature(type(tiny).forward).parameters
    want = "cache" if "cache" in takes else "past_key_values"
    assert list(with_cache(tiny, None)) == [want]

    class Old:
        def forward(self, input_ids=None, past_key_values=None):
            return input_ids

    class New:
        def forward(self, input_ids=None, cache=None):
            return input_ids

    assert list(with_cache(Old(), 1)) == ["past_key_values"]
    assert list(with_cache(New(), 1)) == ["cache"]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation notice fails the test
        ids, _, cache = decode(tiny, growing_cache(tiny.config), list(range(3, 20)), 5)
    assert len(ids) == 5 and cache.layers[0].keys.shape[-2] == 17 + 4

    peft_model = get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        assert list(with_cache(peft_model, None)) == [want]  # the base model's name
    finally:
        peft_model.unload()


def test_a_pass_keeps_its_keys_and_values_only_where_decoding_can_go_on_from_them(tiny):
    """``pass_cache`` is a cache for a forward pass whose keys and values are read back: only
    where every layer keeps all its tokens (not a sliding window's last few) and within
    ``PASS_CACHE_BYTES``; what ``states_at`` reads back, laid out by ``prefilled_cache``,
    decodes as the prompt itself does."""
    from transformers import Gemma3TextConfig

    from tunelab.catalog import kv_cache
    from tunelab.catalog.greedy import cache_bytes_per_token
    from tunelab.catalog.kv_cache import pass_cache, prefilled_cache, states_at

    per_token = cache_bytes_per_token(tiny.config)
    fits = kv_cache.PASS_CACHE_BYTES // per_token
    assert pass_cache(tiny.config, fits, per_token) is not None
    assert pass_cache(tiny.config, fits + 1, per_token) is None
    windowed = Gemma3TextConfig(num_hidden_layers=2, layer_types=[
        "sliding_attention", "full_attention"], sliding_window=8)
    assert pass_cache(windowed, 10, per_token) is None

    prompt = list(range(3, 40))
    want, _, _ = decode(tiny, growing_cache(tiny.config), prompt, 20)
    cache = pass_cache(tiny.config, len(prompt), per_token)
    with torch.no_grad():
        tiny(input_ids=torch.tensor([prompt + [7, 8]]), use_cache=True,
             **with_cache(tiny, cache))  # the pass read two more tokens than are kept
    kept = states_at(cache, 0, list(range(len(prompt) - 1)), prompt[:-1])
    assert kept.tokens == prompt[:-1]
    assert kept.layers[0][0].shape[1] == len(prompt) - 1
    past = prefilled_cache(tiny.config, [kept], len(prompt) + 20)
    got, _, _ = decode(tiny, past, [prompt[-1]], 20, positions_from=len(prompt) - 1)
    assert got == want
