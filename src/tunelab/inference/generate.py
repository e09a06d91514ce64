"""Generation from a base model plus (optionally) a LoRA adapter.

The base model is loaded once per process; adapters are loaded on first use and kept in an
LRU cache bounded by bytes (an adapter of rank 8 on a 135M model is ~9 MB, so the default
512 MB budget keeps ~50 hot). Requests run one at a time on the shared model (a lock), and
generation is a plain token loop with a KV cache, so streaming, stop sequences and sampling
are all under our control.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.catalog.copying import copy_source, prefer_copies
from tunelab.catalog.greedy import (
    answer_batches,
    cache_bytes_per_token,
    choices_along,
    greedy_answers,
    pass_states,
    start_from_choices,
)
from tunelab.catalog.kv_cache import cache_of, growing_cache, pass_cache, with_cache
from tunelab.catalog.labels import answers_as_labels, is_label, labels_to_end_at
from tunelab.catalog.loading import LoadedBase
from tunelab.catalog.stopping import FINISHED, Reply, end_token_ids, refuse_off_format
from tunelab.catalog.templates import Turn
from tunelab.data.batches import encode_pieces, encode_prompt, label_token_ids
from tunelab.errors import InvalidArgument, NotFound
from tunelab.inference.manifest import served_facts
from tunelab.parameters import TunedModelSettings, problems, sentence


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings (Gemini's names). ``temperature`` 0 or None means greedy."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: tuple[str, ...] = ()
    candidate_count: int = 1
    seed: int | None = None

    def problems(self) -> list[str]:
        # the sampling limits are the tuned model's defaults' (tunelab/parameters.py)
        out = [sentence(p) for p in problems(TunedModelSettings, {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k})]
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            out.append(f"maxOutputTokens must be at least 1, got {self.max_output_tokens}")
        if not 1 <= self.candidate_count <= 8:
            out.append(f"candidateCount must be from 1 to 8, got {self.candidate_count}")
        if len(self.stop_sequences) > 5:
            out.append("at most 5 stopSequences are allowed")
        return out


@dataclass
class Candidate:
    text: str
    finish_reason: str  # "STOP" | "MAX_TOKENS"
    token_count: int
    # the model's own answer, where it was none of a tuned classifier's labels and the most
    # likely label was answered instead (catalog/labels.py)
    replaced: str | None = None


@dataclass
class GenerationResult:
    candidates: list[Candidate]
    prompt_token_count: int

    @property
    def text(self) -> str:
        return self.candidates[0].text


@dataclass
class Chunk:
    text: str
    finish_reason: str | None = None
    token_count: int = 0
    prompt_token_count: int = 0
    replaced: str | None = None  # as Candidate.replaced, on the last chunk


@dataclass
class _CacheEntry:
    name: str
    size: int


class Generator:
    """Serves one base model with any number of adapters."""

    def __init__(self, base: LoadedBase, adapter_cache_bytes: int = 512 * 1024 * 1024):
        self.base = base
        self.cache_bytes = adapter_cache_bytes
        self._peft: Any = None
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        self._end_ids = end_token_ids(base.tokenizer, base.template)

    # ---- adapters -------------------------------------------------------------------------
    def _adapter_key(self, path: Path) -> tuple[str, int]:
        weights = path / "adapter_model.safetensors"
        if not weights.exists():
            raise NotFound(f"No adapter weights at {path}.")
        st = weights.stat()
        key = hashlib.sha1(f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()
        return "a" + key[:16], st.st_size

    def _activate(self, adapter: Path | None):
        """Make ``adapter`` (or the bare base model) the active weights; returns the model."""
        if adapter is None:
            return self._peft if self._peft is not None else self.base.model
        from peft import PeftModel

        name, size = self._adapter_key(Path(adapter))
        if name in self._cache:
            self._cache.move_to_end(name)
        else:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.base.model, str(adapter), adapter_name=name
                )
                self._peft.eval()
            else:
                self._peft.load_adapter(str(adapter), adapter_name=name)
            self._cache[name] = _CacheEntry(name, size)
            self._evict(keep=name)
        self._peft.set_adapter(name)
        return self._peft

    @contextlib.contextmanager
    def _weights(self, adapter: Path | None) -> Iterator[Any]:
        """The model to run, for as long as the block runs: the lock held, inference mode,
        ``adapter`` active, or the bare base (every loaded adapter disabled) when it is None."""
        import torch

        with self._lock, torch.inference_mode():
            model = self._activate(adapter)
            if adapter is None and self._peft is not None:
                with model.disable_adapter():
                    yield model
            else:
                yield model

    def _evict(self, keep: str) -> None:
        while sum(e.size for e in self._cache.values()) > self.cache_bytes and len(self._cache) > 1:
            name, _ = next(iter(self._cache.items()))
            if name == keep:
                self._cache.move_to_end(name)
                continue
            self._cache.pop(name)
            self._peft.delete_adapter(name)

    @property
    def cached_adapters(self) -> int:
        return len(self._cache)

    # ---- prompts --------------------------------------------------------------------------
    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters one token can stand for: the longest entry of the vocabulary
        (special tokens included). Byte-level BPE vocabularies spell each byte as one
        character and SentencePiece spells a byte-fallback token as ``<0xAB>``, so an
        entry is never shorter than the text it encodes."""
        return max(1, max(len(t) for t in self.base.tokenizer.get_vocab()))

    @property
    def max_prompt_chars(self) -> int:
        """The longest prompt (characters of text, all turns and the system instruction) that
        could fit the context. A prompt fits only if it is at most ``context_length - 1``
        tokens, and N tokens cover at most N × ``max_token_chars`` characters; the chat
        template only adds characters. So a longer prompt cannot fit, and is refused without
        tokenizing it: tokenizing a 16 MiB prompt cost 28 s of CPU and 1.3 GB."""
        return (self.base.spec.context_length - 1) * self.max_token_chars

    def prompt_ids(self, turns: list[Turn], system: str | None) -> list[int]:
        if not turns:
            raise InvalidArgument("contents must hold at least one user message.")
        if turns[-1][0] != "user":
            raise InvalidArgument("The last message in contents must have role 'user'.")
        chars = sum(len(text) for _, text in turns) + len(system or "")
        if chars > self.max_prompt_chars:
            spec = self.base.spec
            raise InvalidArgument(
                f"The prompt is {chars:,} characters; models/{spec.id} reads at most "
                f"{spec.context_length - 1:,} tokens, which cover at most "
                f"{self.max_prompt_chars:,} characters. Shorten the prompt or the conversation."
            )
        return encode_prompt(self.base.tokenizer, self.base.template, turns, system)

    def count_tokens(self, turns: list[Turn], system: str | None = None,
                     adapter: Path | None = None) -> int:
        return len(self.prompt_ids(turns, self.system_for(adapter, system)))

    @staticmethod
    def system_for(adapter: Path | None, system: str | None) -> str | None:
        """The request's system instruction, else the one a tuned model's examples all shared
        (recorded in its manifest), so it answers as it was tuned to."""
        if system is not None or adapter is None:
            return system
        return served_facts(adapter).system_instruction

    # ---- generation -----------------------------------------------------------------------
    def generate(
        self,
        turns: list[Turn],
        system: str | None = None,
        config: GenerationConfig | None = None,
        adapter: Path | None = None,
    ) -> GenerationResult:
        config = config or GenerationConfig()
        candidates = []
        prompt_tokens = 0
        for i in range(config.candidate_count):
            text, reason, n, replaced = "", "STOP", 0, None
            for chunk in self._stream_one(turns, system, config, adapter, i):
                text += chunk.text
                prompt_tokens = chunk.prompt_token_count or prompt_tokens
                if chunk.finish_reason:
                    reason, n, replaced = chunk.finish_reason, chunk.token_count, chunk.replaced
            candidates.append(Candidate(text, reason, n, replaced))
        return GenerationResult(candidates, prompt_tokens)

    def answers(
        self,
        requests: Sequence[tuple[list[Turn], str | None]],
        max_output_tokens: int,
        adapter: Path | None = None,
        on_progress: Callable[[int], None] | None = None,
        expected: Sequence[str] | None = None,
        rules_of: Path | None = None,
    ) -> list[str]:
        """Greedy answers to many requests ((turns, system instruction) each), decoded
        together in batches (``catalog/greedy.py``: up to 32, fewer for long prompts): what
        ``generate`` with temperature 0 answers each, stopped the same way, at a fraction of
        the time. ``on_progress``: the number answered so far, after each batch. ``expected``
        (a test file's outputs, one per request): one pass reads greedy's choices along each
        expected output first (``choices_along``), so the answers a model gets right take no
        decoding, and the others are decoded on from their first mismatch. ``rules_of``:
        another tuned model's adapter whose recorded rules the answers keep instead of
        ``adapter``'s (its remembered system prompt, labels, pieces, copy rule and shape): a
        base model compared with a tuned model is asked as that model is, as the validation
        scores ask it (``training/evaluate.py``)."""

        if max_output_tokens < 1:
            raise InvalidArgument(f"maxOutputTokens must be at least 1, got {max_output_tokens}")
        limit = self.base.spec.context_length
        prompts, sources = [], []
        rules = adapter if rules_of is None else rules_of
        for turns, system in requests:
            sources.append(copy_source(turns))
            ids = self.prompt_ids(turns, self.system_for(rules, system))
            if len(ids) >= limit:
                start = turns[-1][1][:40]
                raise InvalidArgument(
                    f"The prompt that begins {start!r} is {len(ids)} tokens; this base model "
                    f"accepts at most {limit - 1}. Shorten the prompt.")
            prompts.append(ids)
        if expected is not None and len(expected) != len(requests):
            raise ValueError("expected needs one output per request")
        tok, template = self.base.tokenizer, self.base.template
        pad = tok.pad_token_id
        wanted = None if expected is None else [
            encode_pieces(tok, template.output_pieces(text)) for text in expected]
        facts = served_facts(rules)
        labels = facts.answer_labels  # a tuned classifier's (catalog/labels.py)
        label_ids = labels and label_token_ids(tok, template, labels)
        out: list[str] = []
        for group in answer_batches([len(p) for p in prompts], max_output_tokens,
                                    self.base.model.config):
            batch = [prompts[i] for i in group]
            budgets = [min(max_output_tokens, limit - len(prompts[i])) for i in group]
            # an answer replaced by a label is not shown: it ends once it cannot be one
            replies = [Reply(tok, self._end_ids, [template.end], budget, facts.rules,
                             sources[i], labels_to_end_at(labels, label_ids, budget))
                       for i, budget in zip(group, budgets, strict=True)]
            with self._weights(adapter) as model:
                kept = None
                if wanted is not None:  # no further than an answer may run
                    outputs = [wanted[i][:r.budget] for i, r in zip(group, replies, strict=True)]
                    # the pass's keys and values: the undecided answers go on from them
                    config = self.base.model.config
                    cache = pass_cache(config, len(batch) * max(
                        len(p) + len(o) for p, o in zip(batch, outputs, strict=True)),
                        cache_bytes_per_token(config))
                    chosen = choices_along(model, batch, outputs, pad, self.base.device, cache)
                    replies = [start_from_choices(r, o, c) for r, o, c
                               in zip(replies, outputs, chosen, strict=True)]
                    kept = pass_states(cache, batch, outputs, replies)
                    del cache
                answered = greedy_answers(model, batch, replies, pad, self.base.device, kept)
                if labels:
                    answers_as_labels(model, batch, answered, labels, label_ids,
                                      self.base.device, [r.budget for r in replies])
                out += answered
            if on_progress is not None:
                on_progress(len(out))
        return out

    def stream(
        self,
        turns: list[Turn],
        system: str | None = None,
        config: GenerationConfig | None = None,
        adapter: Path | None = None,
    ) -> Iterator[Chunk]:
        """Text chunks of the first candidate as they are generated; the last chunk carries
        ``finish_reason``."""
        yield from self._stream_one(turns, system, config or GenerationConfig(), adapter, 0)

    def _stream_one(
        self,
        turns: list[Turn],
        system: str | None,
        config: GenerationConfig,
        adapter: Path | None,
        index: int,
    ) -> Iterator[Chunk]:
        import torch

        problems = config.problems()
        if problems:
            raise InvalidArgument("Invalid generationConfig: " + "; ".join(problems) + ".")
        ids = self.prompt_ids(turns, self.system_for(adapter, system))
        limit = self.base.spec.context_length
        if len(ids) >= limit:
            raise InvalidArgument(
                f"The prompt is {len(ids)} tokens; this base model accepts at most {limit - 1}. "
                "Shorten the prompt or the conversation."
            )
        max_new = min(
            config.max_output_tokens or self.base.spec.output_token_limit, limit - len(ids)
        )
        user_stops = [s for s in config.stop_sequences if s]
        # Hold back text that could be the start of a stop sequence until it is decided.
        hold = max((len(s) for s in user_stops), default=1) - 1
        gen = None
        if config.temperature:
            gen = torch.Generator().manual_seed(
                (config.seed if config.seed is not None else torch.seed() % 2**31) + index
            )
        # stopped at the end token, the end-of-turn text, the caller's stop sequences or the
        # budget, as answers scored in training are (catalog/stopping.py)
        facts = served_facts(adapter)
        # greedy prefers, among near-equal tokens, the one that copies the prompt's words
        # (catalog/copying.py); a sampled answer is sampled from the model's probabilities
        reply = Reply(self.base.tokenizer, self._end_ids,
                      [*user_stops, self.base.template.end], max_new, facts.rules,
                      "" if config.temperature else copy_source(turns))
        # a tuned classifier's answer is known to be a label only once it is whole
        labels = facts.answer_labels  # a tuned classifier's (catalog/labels.py)
        with self._weights(adapter) as model:
            emitted = 0
            # never more room than the prompt and the answer's budget (catalog/kv_cache.py)
            past = growing_cache(model.config, len(ids) + max_new)
            cur = torch.tensor([ids], device=self.base.device)
            first = True
            while not reply.done:
                # logits_to_keep: the prompt's other logits are never read
                out = model(input_ids=cur, use_cache=True, logits_to_keep=1,
                            **with_cache(model, past))
                past = cache_of(out)
                logits = out.logits[0, -1].float()
                refuse_off_format(logits[None], [reply])  # its format whole, its shape kept
                prefer_copies(logits[None], [reply])  # greedy only: no words when sampled
                nxt = _sample(logits, config, gen)
                reply.add(nxt)
                if reply.done:
                    break
                cur = torch.tensor([[nxt]], device=self.base.device)
                if reply.incomplete or labels:
                    continue  # a character split across tokens, or a label not yet whole
                text = reply.text()
                safe = max(emitted, len(text) - hold)
                if safe > emitted:
                    yield Chunk(text[emitted:safe], prompt_token_count=len(ids) if first else 0)
                    first = False
                    emitted = safe
            text, reason, count, replaced = reply.text(), reply.reason, len(reply.ids), None
            if labels and not is_label(text, labels):
                answer = [text]
                label_ids = label_token_ids(self.base.tokenizer, self.base.template, labels)
                replaced = answers_as_labels(model, [ids], answer, labels, label_ids,
                                             self.base.device, [max_new])[0]
                if replaced is not None:
                    text, reason = answer[0], FINISHED
                    count = len(label_ids[labels.index(text)]) - 1  # its end of turn not counted
            yield Chunk(
                text[emitted:],
                finish_reason=reason,
                token_count=count,
                prompt_token_count=len(ids),
                replaced=replaced,
            )


def _sample(logits, config: GenerationConfig, gen) -> int:
    import torch

    if not config.temperature:
        return int(torch.argmax(logits))
    logits = logits / config.temperature
    if config.top_k:
        k = min(config.top_k, logits.shape[-1])
        kth = torch.topk(logits, k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    probs = torch.softmax(logits, dim=-1)
    if config.top_p is not None and config.top_p < 1:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < config.top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[idx[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))
