"""The decoding cache that grows in place gives the model exactly what transformers' own does."""

from __future__ import annotations

import pytest
import torch

from tunelab.catalog.kv_cache import growing_cache


@pytest.fixture(scope="module")
def tiny(models_dir):
    from tunelab.catalog import get_base_model, load_base_model

    return load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32").model


def decode(model, cache, prompt, steps, crop_at=None):
    """Greedy tokens and each step's logits, feeding ``cache`` (cropped by 3 at ``crop_at``)."""
    ids, logits, cur, past = [], [], torch.tensor([prompt]), cache
    with torch.no_grad():
        for i in range(steps):
            if i == crop_at:
                past.crop(-3)
                cur = torch.tensor([[ids[-4]]])
                del ids[-3:]
            out = model(input_ids=cur, past_key_values=past, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
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
        a = tiny(input_ids=prompts, past_key_values=growing_cache(tiny.config), use_cache=True)
        b = tiny(input_ids=prompts, past_key_values=DynamicCache(config=tiny.config),
                 use_cache=True)
        nxt = a.logits[:, -1].argmax(-1, keepdim=True)
        a2 = tiny(input_ids=nxt, past_key_values=a.past_key_values, use_cache=True)
        b2 = tiny(input_ids=nxt, past_key_values=b.past_key_values, use_cache=True)
    torch.testing.assert_close(a2.logits, b2.logits, rtol=1e-5, atol=1e-5)
