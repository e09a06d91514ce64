"""A tiny, randomly initialised model built in code, for tests and pipeline checks.

It has a byte-level tokenizer (every UTF-8 byte is a token, plus the ChatML specials), so any
text round-trips, and a 2-layer Llama of a few hundred thousand parameters: a training step
takes milliseconds on a CPU. It produces gibberish until tuned; it exists so the whole
pipeline can be exercised without real weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.fsutil import atomic_dir

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
    )


@dataclass(frozen=True)
class TinyRandomSource:
    """Builds the tiny model into the cache folder on first use (deterministic: seed 0)."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    context_length: int = 512
    seed: int = 0

    def describe(self) -> str:
        return "built in code (random weights, for tests)"

    def available(self) -> bool:
        return True

    def materialize(self, cache_dir: Path) -> Path:
        marker = cache_dir / "tunelab-cache.json"
        if marker.exists():
            return cache_dir
        build_tiny_model(cache_dir, self)
        return cache_dir


def build_tiny_model(out_dir: Path, spec: TinyRandomSource | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinyRandomSource()
    tok = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.context_length,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        # Larger than the usual 0.02: with a 64-wide residual stream and tied embeddings, the
        # usual init caps logits near ±1, and then no adapter can fit anything.
        initializer_range=0.2,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "tunelab-cache.json").write_text(json.dumps({"source": "tiny-random"}))

    atomic_dir(out_dir, write)
    return out_dir
