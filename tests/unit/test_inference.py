"""Generation on the tiny model: greedy determinism, sampling settings, stop sequences,
streaming, adapters and the adapter LRU."""

from __future__ import annotations

import pytest

from tunelab.data import Example
from tunelab.errors import InvalidArgument
from tunelab.inference import GenerationConfig, Generator
from tunelab.training import Hyperparameters, train

PROMPT = [("user", "hello there")]


@pytest.fixture(scope="module")
def gen(tiny_serving_base):
    return Generator(tiny_serving_base)


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    """Two adapters tuned to answer 'yes' / 'no' to everything."""
    out = {}
    for word in ("yes", "no"):
        exs = [Example(f"question {i}", word) for i in range(20)]
        d = tmp_path_factory.mktemp(word)
        train(tiny_base, exs, Hyperparameters(epoch_count=15, learning_rate=0.02), d)
        out[word] = d / "adapter"
    return out


def test_greedy_is_deterministic_and_bounded(gen):
    cfg = GenerationConfig(max_output_tokens=12)
    a, b = gen.generate(PROMPT, None, cfg), gen.generate(PROMPT, None, cfg)
    assert a.text == b.text
    c = a.candidates[0]
    assert c.token_count <= 12
    assert c.finish_reason in ("STOP", "MAX_TOKENS")
    assert a.prompt_token_count == gen.count_tokens(PROMPT)


def test_stream_concatenates_to_generate(gen):
    cfg = GenerationConfig(max_output_tokens=20)
    chunks = list(gen.stream(PROMPT, None, cfg))
    assert "".join(c.text for c in chunks) == gen.generate(PROMPT, None, cfg).text
    assert chunks[-1].finish_reason is not None
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_sampling_is_seeded(gen):
    cfg = GenerationConfig(temperature=1.0, top_k=50, top_p=0.9, seed=7, max_output_tokens=15)
    assert gen.generate(PROMPT, None, cfg).text == gen.generate(PROMPT, None, cfg).text
    two = gen.generate(
        PROMPT,
        None,
        GenerationConfig(temperature=1.5, seed=1, candidate_count=2, max_output_tokens=15),
    )
    assert len(two.candidates) == 2


def test_tuned_adapter_answers_and_stop_sequences_cut(gen, adapters):
    yes = gen.generate(
        [("user", "question 3")], None, GenerationConfig(max_output_tokens=10), adapters["yes"]
    )
    assert yes.text == "yes" and yes.candidates[0].finish_reason == "STOP"
    no = gen.generate(
        [("user", "question 3")], None, GenerationConfig(max_output_tokens=10), adapters["no"]
    )
    assert no.text == "no"
    cut = gen.generate(
        [("user", "question 3")], None, GenerationConfig(stop_sequences=("s",)), adapters["yes"]
    )
    assert cut.text == "ye" and cut.candidates[0].finish_reason == "STOP"
    # the base model (no adapter) is unchanged by the loaded adapters
    base = gen.generate([("user", "question 3")], None, GenerationConfig(max_output_tokens=10))
    assert base.text not in ("yes", "no")


def test_adapter_lru_evicts_by_bytes(tiny_serving_base, adapters):
    size = (adapters["yes"] / "adapter_model.safetensors").stat().st_size
    g = Generator(tiny_serving_base, adapter_cache_bytes=int(size * 1.5))
    cfg = GenerationConfig(max_output_tokens=4)
    g.generate([("user", "question 1")], None, cfg, adapters["yes"])
    assert g.cached_adapters == 1
    assert g.generate([("user", "question 1")], None, cfg, adapters["no"]).text == "no"
    assert g.cached_adapters == 1  # "yes" was evicted to stay within budget
    assert g.generate([("user", "question 1")], None, cfg, adapters["yes"]).text == "yes"


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (GenerationConfig(temperature=3.0), "temperature"),
        (GenerationConfig(top_p=0.0), "topP"),
        (GenerationConfig(top_k=0), "topK"),
        (GenerationConfig(max_output_tokens=0), "maxOutputTokens"),
        (GenerationConfig(candidate_count=9), "candidateCount"),
    ],
)
def test_bad_generation_config(gen, cfg, fragment):
    with pytest.raises(InvalidArgument) as e:
        gen.generate(PROMPT, None, cfg)
    assert fragment in e.value.message


def test_prompt_errors(gen, tiny_serving_base):
    with pytest.raises(InvalidArgument, match="role 'user'"):
        gen.generate([("user", "hi"), ("model", "hello")])
    with pytest.raises(InvalidArgument, match="at least one user message"):
        gen.generate([])
    too_long = "x" * (tiny_serving_base.spec.context_length + 10)
    with pytest.raises(InvalidArgument, match="Shorten the prompt"):
        gen.generate([("user", too_long)])


def test_multi_turn_and_system_follow_the_template(gen, tiny_serving_base):
    turns = [("user", "a"), ("model", "b"), ("user", "c")]
    text = tiny_serving_base.template.render(turns, "sys")
    assert text == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    )
    assert gen.count_tokens(turns, "sys") == len(tiny_serving_base.encode(text))


def test_a_shared_system_prompt_is_tuned_in_and_used_by_default(tiny_base, tiny_serving_base,
                                                                tmp_path):
    """Chat-format data with one system prompt: the examples are tokenized with it, the manifest
    records it, and generation without a systemInstruction uses it (one given still wins)."""
    from tunelab.data.batches import tokenize_example

    system = "Answer with one word."
    exs = [Example(f"question {i}", "yes", system) for i in range(20)]
    tok = tokenize_example(tiny_base.tokenizer, tiny_base.template, exs[0])
    with_system = tiny_base.template.render([("user", "question 0")], system)
    assert tok.prompt_ids == tiny_base.encode(with_system)
    result = train(tiny_base, exs, Hyperparameters(epoch_count=1, learning_rate=0.02), tmp_path)
    assert result.manifest["system_instruction"] == system
    gen = Generator(tiny_serving_base)
    adapter = tmp_path / "adapter"
    assert gen.count_tokens(PROMPT, None, adapter) == gen.count_tokens(PROMPT, system)
    assert gen.count_tokens(PROMPT, "x", adapter) == gen.count_tokens(PROMPT, "x")
    assert gen.count_tokens(PROMPT, None, adapter) > gen.count_tokens(PROMPT)
    cfg = GenerationConfig(max_output_tokens=3)
    by_default = gen.generate(PROMPT, None, cfg, adapter)
    assert by_default.prompt_token_count == gen.count_tokens(PROMPT, system)


def test_answers_many_at_once_are_the_greedy_answers_alone(models_dir, adapters):
    """``Generator.answers`` decodes up to 32 requests together (prompts of differing lengths,
    a system instruction on some); on an fp32 base each answer is the one ``generate`` gives
    that request alone, greedy with the same budget, with and without an adapter; the progress
    counts the requests answered after each batch."""
    from tunelab.catalog import get_base_model, load_base_model

    gen = Generator(load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32"))
    requests = [([("user", f"question {i} " + "and more words " * (i % 5))],
                 "Answer briefly." if i % 7 == 0 else None) for i in range(40)]
    cfg = GenerationConfig(temperature=0.0, max_output_tokens=9)
    for adapter in (None, adapters["yes"]):
        alone = [gen.generate(turns, system, cfg, adapter).text for turns, system in requests]
        seen: list[int] = []
        assert gen.answers(requests, 9, adapter, seen.append) == alone
        assert seen == [32, 40]
        if adapter is None:
            assert len(set(alone)) > 1  # the random model does answer differently


def test_a_batch_of_answers_caches_no_more_than_its_prompts_and_budget(models_dir,
                                                                     monkeypatch):
    """A batch's decoding cache is sized to its widest prompt and the answers' budget (the
    buffer doubled past it held 1.65 times that: the largest allocation of a tune), and the
    answers are those given alone."""
    from tunelab.catalog import get_base_model, greedy, load_base_model
    from tunelab.catalog.kv_cache import growing_cache

    gen = Generator(load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32"))
    made: list = []

    def spy(config, capacity=None):
        made.append((capacity, growing_cache(config, capacity)))
        return made[-1][1]

    monkeypatch.setattr(greedy, "growing_cache", spy)
    requests = [([("user", f"question {i} " + "and more words " * i)], None) for i in range(6)]
    cfg = GenerationConfig(temperature=0.0, max_output_tokens=7)
    alone = [gen.generate(turns, system, cfg, None).text for turns, system in requests]
    made.clear()
    assert gen.answers(requests, 7, None) == alone
    assert len(made) == 1
    capacity, cache = made[0]
    widest = max(gen.count_tokens(turns, system) for turns, system in requests)
    assert capacity == widest + 7
    layer = cache.layers[0]
    assert layer.key_buffer.shape[-2] == capacity >= layer.keys.shape[-2]


def test_answers_refuse_what_generate_refuses(gen, tiny_serving_base):
    too_long = "x" * (tiny_serving_base.spec.context_length + 10)
    with pytest.raises(InvalidArgument,
                       match="The prompt that begins 'xxx.* is .* tokens.*Shorten the prompt"):
        gen.answers([([("user", "hi")], None), ([("user", too_long)], None)], 5)
    with pytest.raises(InvalidArgument, match="maxOutputTokens must be at least 1"):
        gen.answers([([("user", "hi")], None)], 0)
    assert gen.answers([], 5) == []


def test_answers_read_from_the_expected_outputs_equal_the_decoded_ones(models_dir, adapters,
                                                                      monkeypatch):
    """Given the expected outputs (a test file's), ``answers`` reads greedy's choices along
    them in one pass: an answer they decide is not decoded, the others are decoded on from their
    first mismatch; on an fp32 base every answer is still the one ``generate`` gives alone."""
    from tunelab.catalog import get_base_model, greedy, load_base_model

    gen = Generator(load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 1, "fp32"))
    decode = greedy._decode
    decoded: list[list[int]] = []  # what each decoded answer went on from
    prefilled: list[bool] = []  # whether from the pass's keys and values (one token a row)

    def watched(model, prompts, replies, pad_id, device, ready=None):
        decoded.extend(list(r.ids) for r in replies)
        prefilled.append(ready is not None)
        return decode(model, prompts, replies, pad_id, device, ready)

    monkeypatch.setattr(greedy, "_decode", watched)
    requests = [([("user", f"question {i}" + " again" * (i % 3))], None) for i in range(18)]
    cfg = GenerationConfig(temperature=0.0, max_output_tokens=8)
    yes = adapters["yes"]
    alone = [gen.generate(turns, system, cfg, yes).text for turns, system in requests]
    assert alone.count("yes") >= 12  # tuned to say yes (to most of these)
    expected = [a if i % 3 else "no" for i, a in enumerate(alone)]  # 6 wrong
    assert gen.answers(requests, 8, yes, expected=expected) == alone
    # the wrong ones decoded, each from the pass's choices; the right ones (most) read off it
    assert 6 <= len(decoded) <= 18 - alone.count("yes") + 6 and all(ids for ids in decoded)
    assert prefilled and all(prefilled)  # their prompts not computed again
    # an expected output longer than the answer may run is read no further than that
    short = GenerationConfig(temperature=0.0, max_output_tokens=2)
    cut = [gen.generate(turns, system, short, yes).text for turns, system in requests[:4]]
    assert gen.answers(requests[:4], 2, yes, expected=["yes " * 3000] * 4) == cut
    decoded.clear()
    base_alone = [gen.generate(turns, system, cfg).text for turns, system in requests]
    noise = ["some words " * (i % 4) + "end" for i in range(18)]
    assert gen.answers(requests, 8, None, expected=noise) == base_alone
    assert len(decoded) == 18 - sum(a == e for a, e in zip(base_alone, noise, strict=True))
    assert all(prefilled)


def test_answer_batches_keep_the_cache_within_its_bound(tiny_serving_base):
    """Short prompts are answered up to 32 at a time; long ones in fewer rows, so that a
    batch's cache (its rows, each as long as its longest prompt plus the answer budget) stays
    within ``CACHE_BYTES``; every prompt once, in order."""
    from tunelab.catalog.greedy import (
        ANSWER_BATCH,
        CACHE_BYTES,
        answer_batches,
        cache_bytes_per_token,
    )

    config = tiny_serving_base.model.config
    per_token = cache_bytes_per_token(config)
    assert per_token == (config.num_hidden_layers * 2 * config.num_key_value_heads
                         * (config.hidden_size // config.num_attention_heads) * 4)
    assert answer_batches([10] * 70, 8, config) == [
        list(range(0, 32)), list(range(32, 64)), list(range(64, 70))]
    long = CACHE_BYTES // per_token // 4  # four rows of this fill the bound
    lengths = [10, 10, long, 10, 10, 10, long * 5, 10]
    batches = answer_batches(lengths, 8, config)
    assert [i for b in batches for i in b] == list(range(8))
    for b in batches:
        assert len(b) <= ANSWER_BATCH
        assert len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 8) * per_token <= CACHE_BYTES
    assert [6] in batches  # longer than the bound alone: a batch of its own
    assert answer_batches([], 8, config) == []


def test_a_base_model_is_asked_with_the_rules_of_the_first_tuned_model(tmp_path):
    """The rules a tuned model keeps are read from its manifest and said in words; a base
    model in a comparison takes those of the first tuned model, where it keeps any."""
    import json

    from tunelab.inference.manifest import answer_rules_of, rules_words

    def tuned(name: str, **facts) -> object:
        (tmp_path / name / "adapter").mkdir(parents=True)
        (tmp_path / name / "manifest.json").write_text(json.dumps(facts))
        return tmp_path / name / "adapter"

    classifier = tuned("c", answer_labels=["no", "yes"], system_instruction="Be brief.")
    dates = tuned("d", output_shape="9999-99-99", copies_prompt=True)
    free = tuned("f", answer_labels=None)
    assert rules_words(classifier) == "its system prompt and its 2 labels"
    assert rules_words(dates) == ("its outputs' fixed shape and its preference for the prompt's "
                                  "words")
    assert rules_words(free) is None and rules_words(None) is None
    assert answer_rules_of([("base", None), ("c", classifier), ("d", dates)]) == (
        "c", classifier, "its system prompt and its 2 labels")
    assert answer_rules_of([("d", dates), ("c", classifier)])[:2] == ("d", dates)
    # the first tuned model keeps none
    assert answer_rules_of([("f", free), ("c", classifier)]) is None
    assert answer_rules_of([("base", None), ("other", None)]) is None
