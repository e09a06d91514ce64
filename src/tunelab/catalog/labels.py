"""A tuned classifier answers with one of its labels.

A model tuned on classification examples (a few short outputs, each repeated: ``check_balance``,
``lost_card``, …) still writes its answer a token at a time, and on an input unlike its
training examples it can write a label that does not exist: the quality benchmark's 12-way
``intent`` task at 20 examples answered ``convert_rate``, ``swap_rates``, ``loan_rate`` — a
quarter of its 100 test answers were none of the 12 labels (docs/quality.md). Such an answer is
always wrong, and a program reading the model's answers cannot use it.

So where a tuned model's training outputs are labels (``answer_labels``), the trainer records
them in its manifest (``answer_labels``), and an answer that is not one of them is replaced by
the label the model itself finds most likely after the prompt (``most_likely_labels``: the sum
of the log-probabilities of the label's tokens and of the end of the turn; every label is
laid after its prompt in one row and attends to the prompt and to itself, so one pass scores
every label of many prompts). An answer
that is a label is kept as it is, so a model that answers well is unchanged. Every path that
answers with a tuned model does this alike: ``generateContent`` and its stream, ``tunelab
eval`` and the compare page (``inference/generate.py``) and the validation scores that choose
the epoch (``training/evaluate.py``), so the scores a user reads are those of the answers the
model serves. A response whose answer was replaced says so (``answerLabel`` in the
generateContent response).

The rule is strict, as a label set wrongly found would turn a right new value into a wrong old
one: at most ``MAX_ANSWER_LABELS`` distinct outputs of at most ``LABEL_WORDS`` words, at least
half of them repeated, few seen only once (an estimate of how often a new input has a label
never seen: outputs seen once / examples, at most ``MAX_UNSEEN_SHARE``), at most half written
(as words) in their own input (extraction copies its answer from the input; a classifier's
input names its label now and then: "is my phone still under warranty" → `warranty`), and,
where validation examples are given, every one of their outputs among the labels.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunelab.catalog.greedy import (
    CACHE_BYTES,
    CHOICE_CHUNK,
    answer_batches,
    cache_bytes_per_token,
    head_logits,
)
from tunelab.catalog.kv_cache import cache_of, with_cache

MAX_ANSWER_LABELS = 50
LABEL_WORDS = 4
LABEL_CHARS = 64
MAX_UNSEEN_SHARE = 0.25
MAX_COPIED_SHARE = 0.5

# Tokens of one pass of label rows (the prompts and their labels' tokens): a few hundred rows'
# worth keep a pass's activations to a few tens of MB on the default model. A row's mask is
# its width squared, so rows wider than MASKED_WIDTH (a long prompt) read a cache instead.
ROW_TOKENS = 4_096
MASKED_WIDTH = 2_048


def answer_labels(inputs: Sequence[str], outputs: Sequence[str],
                  validation_outputs: Sequence[str] = ()) -> list[str] | None:
    """The labels a classifier tuned on (``inputs``, ``outputs``) answers with, sorted; None
    where the outputs are not a closed set of labels (module docstring)."""
    n = len(outputs)
    stripped = [o.strip() for o in outputs]
    counts = Counter(stripped)
    labels = sorted(counts)
    if n == 0 or not 2 <= len(labels) <= MAX_ANSWER_LABELS:
        return None
    if any(not label or len(label) > LABEL_CHARS or len(label.split()) > LABEL_WORDS
           for label in labels):
        return None
    once = sum(1 for c in counts.values() if c == 1)
    if 2 * (len(labels) - once) < len(labels) or once > MAX_UNSEEN_SHARE * n:
        return None
    copied = sum(1 for text, out in zip(inputs, stripped, strict=True)
                 if re.search(rf"(?<!\w){re.escape(out.lower())}(?!\w)", text.lower()))
    if copied > MAX_COPIED_SHARE * n:
        return None
    if any(o.strip() not in counts for o in validation_outputs):
        return None
    return labels


def labels_note(labels: Sequence[str]) -> str:
    """The choice in one line, for the CLI and the Studio."""
    shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
    return (f"a classifier: the training outputs are {len(labels)} labels ({shown}); an answer "
            "that is none of them is replaced by the label the model finds most likely.")


def unreachable_note(labels: Sequence[str] | None, expected: Sequence[str]) -> str | None:
    """Where test outputs are none of a classifier's labels (an open set taken for one, such
    as cities → countries tested on other countries), how many: its answers can never be right
    on them. None where every expected output is a label, or for a model without labels."""
    if not labels:
        return None
    missing = [e.strip() for e in expected if not is_label(e, labels)]
    if not missing:
        return None
    distinct = list(dict.fromkeys(missing))
    shown = ", ".join(distinct[:4]) + (", …" if len(distinct) > 4 else "")
    return (f"{len(missing)} of the {len(expected)} expected outputs are none of its "
            f"{len(labels)} labels ({shown}); it answers with its labels, so it cannot be "
            "right on them.")


def is_label(answer: str, labels: Sequence[str]) -> bool:
    return answer.strip() in labels


def labels_to_end_at(labels: Sequence[str] | None, label_ids: Sequence[list[int]] | None,
                     budget: int) -> tuple[str, ...]:
    """The labels an answer of at most ``budget`` tokens may end at as soon as it can no longer
    be one of them (``stopping.Reply``): all of them where at least one fits the budget, as
    ``answers_as_labels`` then replaces such an answer; none where none fits (the answer is
    kept as written, so it is decoded whole)."""
    if not labels or not label_ids or not any(len(ids) - 1 <= budget for ids in label_ids):
        return ()
    return tuple(labels)


def answers_as_labels(model: Any, prompts: Sequence[list[int]], answers: list[str],
                      labels: Sequence[str], label_ids: Sequence[list[int]], device: Any,
                      budgets: Sequence[int] | None = None) -> list[str | None]:
    """``answers`` (to ``prompts``) that are none of ``labels`` replaced in place by the label
    the model finds most likely after their prompt, among the labels that fit the answer's
    budget of tokens (``budgets``; none fits: the answer is kept); for each answer, what it was
    where it was replaced, else None. The one rule every answering path follows. The answers
    to replace are scored together (``most_likely_labels``), those with the same labels fitting
    their budget in one call."""
    replaced: list[str | None] = [None] * len(answers)
    by_fits: dict[tuple[int, ...], list[int]] = {}
    for i, answer in enumerate(answers):
        if is_label(answer, labels):
            continue
        fits = tuple(k for k, ids in enumerate(label_ids)
                     if budgets is None or len(ids) - 1 <= budgets[i])
        if fits:
            by_fits.setdefault(fits, []).append(i)
    for fits, rows in by_fits.items():
        chosen = most_likely_labels(model, [prompts[i] for i in rows],
                                    [label_ids[k] for k in fits], device)
        for i, c in zip(rows, chosen, strict=True):
            replaced[i], answers[i] = answers[i], labels[fits[c]]
    return replaced


def most_likely_labels(model: Any, prompts: Sequence[list[int]],
                       label_ids: Sequence[list[int]], device: Any,
                       cache_bytes: int = CACHE_BYTES, masked_width: int = MASKED_WIDTH
                       ) -> list[int]:
    """For each prompt (token ids), the index of the label (each label's output tokens, the end
    of the turn included) that ``model`` gives the highest log-probability after it. The caller
    chooses the grad mode.

    Where the model's attention takes a mask of its own (``_reads_masks``) and the rows are at
    most ``masked_width`` tokens, each prompt is one row followed by every label's tokens, each
    label attending to the prompt and to itself alone (as if it followed the prompt alone: the
    same positions), and several prompts' rows are one pass (at most ``ROW_TOKENS`` tokens).
    Otherwise the prompts are run in one pass (padded on the left, as ``greedy.py`` decodes
    them) and a second pass reads their keys and values with one row per (prompt, label)
    pair; each such row holds a copy of its prompt's keys and values, so a pass takes as many
    prompts as keep that within ``cache_bytes`` (a prompt whose labels alone would not fit
    takes them a share at a time). The most likely label is the same either way, up to
    rounding. One prompt at a time, each with a row per label, a validation scoring of 33
    answers that were none of a 12-way classifier's labels (an untuned model's) took 7.7 s,
    most of it copying each prompt's keys and values for every label; laid out in rows, 3.5 s
    (docs/quality.md)."""
    if not prompts:
        return []
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = lm.get_decoder()
    width = max(len(ids) for ids in label_ids) - 1  # a label's last token predicts nothing
    tail = sum(len(ids) - 1 for ids in label_ids)
    masked = (_reads_masks(lm.config)
              and max(len(p) for p in prompts) + tail <= masked_width)
    per_token = cache_bytes_per_token(lm.config)
    # a (prompt, label) row of the cache holds the prompt and the label's tokens
    groups = (_row_groups([len(p) + tail for p in prompts]) if masked else
              answer_batches([len(p) for p in prompts], width, lm.config, len(label_ids),
                             cache_bytes))
    best: list[int] = []
    for group in groups:
        chosen = [prompts[i] for i in group]
        scores = (_masked_scores(lm, decoder, chosen, label_ids, device) if masked else
                  _cached_scores(lm, decoder, chosen, label_ids, width,
                                 per_token * len(group), cache_bytes, device))
        best += [max(range(len(label_ids)), key=row.__getitem__) for row in scores]
    return best


def _row_groups(widths: Sequence[int]) -> list[list[int]]:
    """Rows of ``widths`` tokens in their order, cut into passes of at most ``ROW_TOKENS``
    (padded to the pass's widest row; at least one row each)."""
    groups: list[list[int]] = []
    widest = 0
    for i, n in enumerate(widths):
        if groups and (len(groups[-1]) + 1) * max(widest, n) <= ROW_TOKENS:
            groups[-1].append(i)
            widest = max(widest, n)
        else:
            groups.append([i])
            widest = n
    return groups


# The model types whose decoders take a prepared mask as given, as ``_masks`` makes it (one
# for every layer, or one per kind of layer where the config names its layers' kinds); checked
# against each model's own forward pass (tests/unit/test_labels.py). Any other model reads the
# labels from a cache, which every decoder takes.
MASKED_MODEL_TYPES = ("llama", "gemma3_text")


# The attention implementations that apply a mask they are given as given: transformers' own,
# and any that registers itself here (the trainer's, which falls back to SDPA with the mask it
# is given: training/segment_attention.py).
_MASK_READERS = {"sdpa", "eager"}


def reads_masks_as_sdpa(implementation: str) -> None:
    """Declare that the attention implementation named ``implementation`` applies a mask it is
    given as SDPA does, so a model using it lays its labels out in rows (``_masks``)."""
    _MASK_READERS.add(implementation)


def _reads_masks(config: Any) -> bool:
    """Whether the model reads a mask it is given as given (``_masks``): a model type of
    ``MASKED_MODEL_TYPES``, an attention implementation of ``_MASK_READERS``, and layers of full
    attention or a sliding window only."""
    text = getattr(config, "text_config", None) or config
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    return (getattr(text, "model_type", None) in MASKED_MODEL_TYPES
            and impl in _MASK_READERS
            and kinds <= {"full_attention", "sliding_attention"})


def _masks(config: Any, allowed: Any, positions: Any) -> Any:
    """The attention mask to hand the decoder for rows whose query ``i`` may attend to key ``j``
    where ``allowed[b, i, j]`` (tokens at ``positions``): one mask, or one per kind of layer
    where the config names its layers' kinds (a sliding window's layers see no further back
    than their window); boolean, or added to the scores for eager attention."""
    import torch

    eager = getattr(config, "_attn_implementation", None) == "eager"
    text = getattr(config, "text_config", None) or config

    def form(mask: Any) -> Any:
        mask = mask[:, None]
        if not eager:
            return mask
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(
            ~mask, torch.finfo(torch.float32).min)

    kinds = getattr(text, "layer_types", None)
    if kinds is None:
        return form(allowed)
    masks = {"full_attention": form(allowed)}
    if "sliding_attention" in kinds:
        window = getattr(text, "sliding_window", None)
        near = allowed if not window else allowed & (
            positions[:, :, None] - positions[:, None, :] < window)
        masks["sliding_attention"] = form(near)
    return masks


def _masked_scores(lm: Any, decoder: Any, prompts: list[list[int]],
                   label_ids: Sequence[list[int]], device: Any) -> list[list[float]]:
    """Each prompt's log-probability of each label, one row per prompt (``most_likely_labels``):
    the prompt, then each label's tokens but its last, attending to the prompt and to their own
    label's earlier tokens; a row's padding attends to itself alone (a query with nothing to
    attend to would make NaNs that its keys' zero weights would still carry)."""
    import torch

    tail = sum(len(ids) - 1 for ids in label_ids)
    width = max(len(p) for p in prompts) + tail
    rows = len(prompts)
    ids = torch.zeros((rows, width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(rows, 1, 1)
    picks: list[tuple[int, int, int, int]] = []  # (row, position read, target, label)
    for b, prompt in enumerate(prompts):
        n = len(prompt)
        ids[b, :n] = torch.tensor(prompt)
        positions[b, :n] = torch.arange(n)
        allowed[b, :n, :n] = torch.ones((n, n), dtype=torch.bool).tril()
        at = n
        for k, label in enumerate(label_ids):
            m = len(label) - 1
            picks.append((b, n - 1, label[0], k))  # the prompt's last predicts its first
            if m:
                ids[b, at:at + m] = torch.tensor(label[:-1])
                positions[b, at:at + m] = torch.arange(n, n + m)
                allowed[b, at:at + m, :n] = True
                allowed[b, at:at + m, at:at + m] = torch.ones((m, m), dtype=torch.bool).tril()
                picks += [(b, at + j, label[j + 1], k) for j in range(m)]
            at += m
    ids, positions, allowed = ids.to(device), positions.to(device), allowed.to(device)
    hidden = decoder(input_ids=ids, position_ids=positions, use_cache=False,
                     attention_mask=_masks(lm.config, allowed, positions)).last_hidden_state
    # each position read once, however many labels it predicts a token of
    read = sorted({(b, at) for b, at, _, _ in picks})
    index = {key: i for i, key in enumerate(read)}
    vectors = hidden[[b for b, _ in read], [at for _, at in read]]
    return _log_prob_sums(lm, vectors, [(index[(b, at)], t, b, k) for b, at, t, k in picks],
                          len(prompts), len(label_ids))


def _log_prob_sums(lm: Any, vectors: Any, picks: Sequence[tuple[int, int, int, int]],
                   prompts: int, labels: int) -> list[list[float]]:
    """Each prompt's sum of its labels' token log-probabilities: ``picks`` are (the hidden
    state of ``vectors`` that predicts a token, the token, its prompt, its label); the logits
    are made ``CHOICE_CHUNK`` hidden states at a time."""
    import torch

    where = torch.tensor([v for v, _, _, _ in picks], device=vectors.device)
    target = torch.tensor([t for _, t, _, _ in picks], device=vectors.device)
    logp = torch.empty(len(picks), device=vectors.device)
    for i in range(0, vectors.shape[0], CHOICE_CHUNK):
        ls = torch.log_softmax(head_logits(lm, vectors[i:i + CHOICE_CHUNK]), dim=-1)
        inside = (where >= i) & (where < i + CHOICE_CHUNK)
        logp[inside] = ls[where[inside] - i, target[inside]]
    scores = [[0.0] * labels for _ in range(prompts)]
    for (_, _, b, k), value in zip(picks, logp.tolist(), strict=True):
        scores[b][k] += value
    return scores


def _cached_scores(lm: Any, decoder: Any, prompts: list[list[int]],
                  label_ids: Sequence[list[int]], width: int, row_bytes: int,
                  cache_bytes: int, device: Any) -> list[list[float]]:
    """Each prompt's log-probability of each label (``most_likely_labels``); ``row_bytes``:
    the cache's bytes per position of one row for every prompt (a label's share of a pass)."""
    import copy

    import torch
    from transformers import DynamicCache

    widest = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (widest - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (widest - len(p)) + [1] * len(p) for p in prompts],
                        device=device)
    first = decoder(input_ids=ids, attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True,
                    **with_cache(decoder, DynamicCache(config=lm.config)))
    last = first.last_hidden_state[:, -1]  # predicts every label's first token
    per_share = max(1, cache_bytes // max(1, (widest + width) * row_bytes))
    shares = [list(range(k, min(len(label_ids), k + per_share)))
              for k in range(0, len(label_ids), per_share)]
    scores: list[list[float]] = [[] for _ in prompts]
    for n, share in enumerate(shares):
        hidden = None
        if width > 0:
            cache = cache_of(first)
            if n < len(shares) - 1:  # the prompts' cache serves the next share too
                cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(share))
            rows = len(prompts) * len(share)
            tokens = torch.tensor([list(label_ids[k][:-1]) + [0] * (width + 1 - len(label_ids[k]))
                                   for _ in prompts for k in share], device=device)
            at = (torch.tensor([len(p) for p in prompts], device=device)[:, None]
                  + torch.arange(width, device=device)).repeat_interleave(len(share), dim=0)
            hidden = decoder(input_ids=tokens, position_ids=at, use_cache=True,
                             attention_mask=torch.cat([mask.repeat_interleave(len(share), 0),
                                                       mask.new_ones((rows, width))], dim=-1),
                             **with_cache(decoder, cache)).last_hidden_state
        # the hidden state before each label token: the prompt's last, then the label's own
        vectors, picks = [], []
        for b in range(len(prompts)):
            for j, k in enumerate(share):
                row = b * len(share) + j
                for t, token in enumerate(label_ids[k]):
                    picks.append((len(vectors), token, b, j))
                    vectors.append(last[b] if t == 0 else hidden[row, t - 1])
        sums = _log_prob_sums(lm, torch.stack(vectors), picks, len(prompts), len(share))
        for b in range(len(prompts)):
            scores[b] += sums[b]
    return scores
