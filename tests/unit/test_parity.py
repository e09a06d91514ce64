"""Parity of the hand-written core with the libraries it stands in for.

tunelab computes its training loss itself (logits only at output positions, training/loop.py)
and renders prompts with its own templates (catalog/templates.py) rather than calling
transformers for either. These tests pin both to what transformers computes from the same
inputs, so a change in either library, or in ours, that makes them part shows up here.
"""

from __future__ import annotations

import pytest

from tunelab.catalog import CATALOG
from tunelab.catalog.tiny import TinyRandomSource
from tunelab.data import Example


# -- the loss ---------------------------------------------------------------------------------
def _labels(batch, items):
    """transformers' labels for the same batch: each output token, -100 everywhere else (the
    prompt and the padding), so its loss counts the output tokens only, as ours does."""
    import torch

    labels = torch.full_like(batch.input_ids, -100)
    for r, it in enumerate(items):
        p = len(it.prompt_ids)
        labels[r, p: p + len(it.output_ids)] = torch.tensor(it.output_ids)
    return labels


@pytest.mark.parametrize("system", [None, "Answer with a number."])
def test_output_only_loss_equals_transformers_loss(tiny_base, system):
    """Mean loss over the output tokens of a padded batch of unequal examples: ours (the LM head
    only where an output token is predicted) against the model's own forward pass with
    ``labels`` (-100 on prompt and padding), in fp32."""
    import torch

    from tunelab.data.batches import collate, tokenize_example
    from tunelab.training.loop import output_loss_sum

    model = tiny_base.model
    assert next(model.parameters()).dtype == torch.float32
    examples = [Example("add 2 and 3", "5", system), Example("what is 12 plus 30?", "42", system),
                Example("x", "a much longer output than the others", system)]
    items = [tokenize_example(tiny_base.tokenizer, tiny_base.template, e) for e in examples]
    assert len({it.length for it in items}) == len(items)  # unequal: the batch is padded
    batch = collate(items, tiny_base.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = output_loss_sum(model, batch).item() / batch.n_tokens
        theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       labels=_labels(batch, items)).loss.item()
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert batch.n_tokens == sum(len(it.output_ids) for it in items)


# -- chat templates ---------------------------------------------------------------------------
# The catalog's real base models whose weights are installed here: their tokenizers, made from
# the model's own files (a GGUF carries the original chat template), are the reference. The
# tiny random model's tokenizer is built in code and has no template to compare with; a base
# model whose package is not installed (gemma-3-270m is optional) is left out, not skipped.
REAL = [s for s in CATALOG.values()
        if not isinstance(s.source, TinyRandomSource) and s.source.available()]

CONVERSATIONS = [
    ([("user", "Hello")], None),
    ([("user", "Translate: cat")], "You translate English to French."),
    ([("user", "2+2?"), ("model", "4"), ("user", "and 3+3?")], None),
    ([("user", "first"), ("model", "one"), ("user", "second")], "Be brief.\nVery brief."),
    ([("user", "  spaces around  \n")], None),
]


def _messages(turns, system):
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": "user" if r == "user" else "assistant", "content": t}
                   for r, t in turns]


@pytest.fixture(scope="module", params=REAL, ids=[s.id for s in REAL])
def real_tokenizer(request):
    from transformers import AutoTokenizer

    from tunelab.catalog import materialize
    from tunelab.config import Settings

    # the user's model cache (converted once), as tests/unit/test_real_model.py uses it
    path = materialize(request.param, Settings().models_dir)
    return request.param, AutoTokenizer.from_pretrained(path)


@pytest.mark.real_model
@pytest.mark.parametrize(("turns", "system"), CONVERSATIONS)
def test_builtin_template_equals_the_tokenizers_chat_template(real_tokenizer, turns, system):
    """The prompt tunelab renders is the text, and the tokens, that the model's own chat
    template gives for the same turns (a system prompt or none: then the template's default)."""
    from tunelab.data.batches import encode_prompt

    spec, tok = real_tokenizer
    assert tok.chat_template, f"{spec.id}'s tokenizer carries no chat template"
    msgs = _messages(turns, system)
    want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    rendered = spec.template.render(turns, system)
    # a template with ``bos`` adds the BOS token as a token, not as text (Gemma's writes it)
    assert (tok.bos_token + rendered if spec.template.bos else rendered) == want
    want_ids = tok(want, add_special_tokens=False)["input_ids"]
    assert encode_prompt(tok, spec.template, turns, system) == want_ids


def test_the_default_base_model_is_compared():
    """The default base model's package is a dependency of the test install: the template test
    above must never silently compare nothing."""
    assert "smollm2-135m-instruct" in [s.id for s in REAL]
