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
of the log-probabilities of the label's tokens and of the end of the turn; the prompt is run
once, and every label is one row of a second pass that reads its keys and values). An answer
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

from tunelab.catalog.greedy import CHOICE_CHUNK, head_logits
from tunelab.catalog.kv_cache import cache_of, with_cache

MAX_ANSWER_LABELS = 50
LABEL_WORDS = 4
LABEL_CHARS = 64
MAX_UNSEEN_SHARE = 0.25
MAX_COPIED_SHARE = 0.5


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
    where it was replaced, else None. The one rule every answering path follows."""
    replaced: list[str | None] = [None] * len(answers)
    for i, answer in enumerate(answers):
        if is_label(answer, labels):
            continue
        fits = [k for k, ids in enumerate(label_ids)
                if budgets is None or len(ids) - 1 <= budgets[i]]
        if not fits:
            continue
        k = fits[most_likely_labels(model, [prompts[i]], [label_ids[k] for k in fits],
                                    device)[0]]
        replaced[i], answers[i] = answer, labels[k]
    return replaced


def most_likely_labels(model: Any, prompts: Sequence[list[int]],
                       label_ids: Sequence[list[int]], device: Any) -> list[int]:
    """For each prompt (token ids), the index of the label (each label's output tokens, the end
    of the turn included) that ``model`` gives the highest log-probability after it. The prompt
    is run once and its keys and values serve every label's row. The caller chooses the grad
    mode."""
    import torch
    from transformers import DynamicCache

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = lm.get_decoder()
    rows = len(label_ids)
    width = max(len(ids) for ids in label_ids) - 1  # a label's last token predicts nothing
    targets = torch.tensor([t for ids in label_ids for t in ids], device=device)
    best = []
    for prompt in prompts:
        first = decoder(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True,
                        **with_cache(decoder, DynamicCache(config=lm.config)))
        picked = [first.last_hidden_state[0, -1:].expand(rows, -1)]  # predicts every label's 1st
        if width > 0:
            cache = cache_of(first)
            cache.batch_repeat_interleave(rows)
            ids = torch.tensor([list(ids[:-1]) + [0] * (width + 1 - len(ids))
                                for ids in label_ids], device=device)
            at = torch.arange(len(prompt), len(prompt) + width, device=device)
            picked.append(decoder(input_ids=ids, position_ids=at.expand(rows, -1),
                                  use_cache=True, **with_cache(decoder, cache)).last_hidden_state)
        # the hidden state before each label token: the prompt's last, then the label's own
        hidden = torch.cat([picked[0][:, None], *picked[1:]], dim=1)
        at_rows = [r for r, ids in enumerate(label_ids) for _ in ids]
        at_cols = [j for ids in label_ids for j in range(len(ids))]
        chosen = hidden[at_rows, at_cols]
        parts = []
        for i in range(0, len(targets), CHOICE_CHUNK):
            logits = head_logits(lm, chosen[i:i + CHOICE_CHUNK])  # soft cap as its forward
            parts.append(torch.log_softmax(logits, dim=-1).gather(
                -1, targets[i:i + CHOICE_CHUNK, None])[:, 0])
        logp = torch.cat(parts)
        scores, at_ = [], 0
        for ids in label_ids:
            scores.append(float(logp[at_:at_ + len(ids)].sum()))
            at_ += len(ids)
        best.append(max(range(rows), key=scores.__getitem__))
    return best
