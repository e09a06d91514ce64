"""Scoring answers against expected outputs, and the per-epoch evaluation of a training run.

Training loss on a few dozen examples says little about answers to new inputs, so at the end of
every epoch the trainer scores the model on the validation examples (``data/split.py``):

- **validation loss**: mean cross-entropy on the expected output tokens, as in training;
- **greedy answers**, scored by **exact match** (after trimming whitespace) and **token F1**
  (the overlap of answer and expected words, as in SQuAD), and for **label-like** outputs (few
  distinct outputs, e.g. ``positive``/``negative``) by **accuracy** with a per-label
  **confusion** count.

The score that picks the best epoch (``metric_for``) is accuracy for labels, exact match for
**short values** (nearly every output at most three words: a date, an amount, a name, a code)
and for **structured** outputs (every one holds the same pieces of format in order, a JSON
object's keys, a template's field labels: ``catalog/stopping.py`` ``output_pieces``), token
F1 for other free text. A value is right or wrong: token F1 gives ``2021-03-04`` 0.8 of
the credit for ``2021-03-03`` and ``268.3 mi`` half of it for ``267.8 mi``, so it would rank a
model that gets no date right near one that gets most of them. A structured answer is right or
wrong too, and its format's words weigh in token F1 as much as its values: two models that
answered 60 ingredient lines → ``{"quantity": …, "unit": …, "ingredient": …}`` right 26 and 29
times out of 40 both scored 0.990. The base model is scored once on
the same examples, so every number has its baseline.

Evaluation is bounded (at most ``MAX_VALIDATION`` examples; answers at most as long as the
longest expected output plus ``ANSWER_MARGIN_TOKENS``) and deterministic (greedy decoding, no
dropout, and the RNG state is saved and restored around it), so it never changes what training
computes: a run resumed from a checkpoint still equals an uninterrupted one.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.catalog.copying import copy_source, top_candidates
from tunelab.catalog.greedy import (
    answer_batches,
    cache_bytes_per_token,
    greedy_answers,
    start_from_choices,
    states_before_last,
)
from tunelab.catalog.kv_cache import Prefilled, pass_cache
from tunelab.catalog.labels import answers_as_labels, labels_to_end_at
from tunelab.catalog.stopping import NO_RULES, AnswerRules, Reply, end_token_ids, output_pieces
from tunelab.data.batches import collate, label_token_ids, pack, tokenize_example
from tunelab.data.examples import Example
from tunelab.data.split import MAX_VALIDATION

# Outputs are "labels" when there are at most this many distinct ones and each repeats on
# average (distinct ≤ half the examples): 2-10 classes, not free text that happens to repeat.
MAX_LABELS = 10
# Outputs are "short values" when at least this share of them is at most SHORT_VALUE_WORDS
# words long (split on whitespace): "2021-03-03", "267.8 mi", "Anna Berg".
SHORT_VALUE_WORDS = 3
SHORT_VALUE_SHARE = 0.9
# The metrics (what ``Scores.score`` is), and their names on the wire and in words.
ACCURACY, EXACT_MATCH, TOKEN_F1 = "accuracy", "exact_match", "token_f1"
_WIRE = {ACCURACY: "accuracy", EXACT_MATCH: "exactMatch", TOKEN_F1: "tokenF1"}
_WORDS = {ACCURACY: "accuracy", EXACT_MATCH: "exact match", TOKEN_F1: "token F1"}
# Extra tokens an answer may run past the longest expected output before it is cut: a wrong
# answer is usually visible in a few tokens, and generation is the slow part of evaluation.
ANSWER_MARGIN_TOKENS = 8
# Wrong answers kept per epoch, for a user to read what the model gets wrong.
MAX_WRONG_SHOWN = 3
OTHER_LABEL = "(other)"

_WORD = re.compile(r"\w+|[^\w\s]")


def is_label_like(outputs: Sequence[str]) -> bool:
    """Whether ``outputs`` look like class labels (few distinct values, each repeated)."""
    distinct = {o.strip() for o in outputs}
    return 1 < len(distinct) <= MAX_LABELS and len(distinct) * 2 <= len(outputs)


def is_short_value(outputs: Sequence[str]) -> bool:
    """Whether ``outputs`` are short values (nearly all at most ``SHORT_VALUE_WORDS`` words)."""
    short = sum(len(o.split()) <= SHORT_VALUE_WORDS for o in outputs)
    return bool(outputs) and short >= SHORT_VALUE_SHARE * len(outputs)


def metric_for(outputs: Sequence[str]) -> str:
    """The score that ranks epochs and models on examples with these expected ``outputs``:
    accuracy for labels, exact match for short values and structured outputs, else token F1
    (module docstring)."""
    if is_label_like(outputs):
        return ACCURACY
    return EXACT_MATCH if is_short_value(outputs) or output_pieces(outputs) else TOKEN_F1


def metric_wire(metric: str) -> str:
    """The metric as the API names it: ``accuracy``, ``exactMatch`` or ``tokenF1``."""
    return _WIRE.get(metric, _WIRE[TOKEN_F1])


def metric_words(metric: str) -> str:
    """The metric in words, for the CLI and messages: ``accuracy``, ``exact match``,
    ``token F1``."""
    return _WORDS.get(metric, _WORDS[TOKEN_F1])


_NOTES = {
    ACCURACY: "Accuracy ranks them: the outputs are labels, and an answer counts only when it "
              "is the expected label.",
    EXACT_MATCH: "Exact match ranks them: the outputs are short values or share a fixed format, "
                 "where a near miss is a miss (token F1, beside it, gives partial credit).",
    TOKEN_F1: "Token F1 ranks them: the outputs are free text, and it counts the words an answer "
              "shares with the expected output (exact match, beside it, wants the whole output).",
}


def metric_note(metric: str) -> str:
    """Why this metric ranks the epochs and the models, in one sentence: the one wording the
    CLI's tables and the API (``metricNote``, which the Studio shows) give."""
    return _NOTES.get(metric, _NOTES[TOKEN_F1])


def token_f1(answer: str, expected: str) -> float:
    """F1 of the answer's words against the expected words (case-insensitive bag of words)."""
    a, e = _WORD.findall(answer.lower()), _WORD.findall(expected.lower())
    if not a or not e:
        return float(a == e)
    common = sum((Counter(a) & Counter(e)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(e)
    return 2 * precision * recall / (precision + recall)


@dataclass
class Scores:
    """Scores of answers against expected outputs. ``score`` is the number that ranks epochs
    and models: ``accuracy``, ``exact_match`` or ``token_f1`` (``metric_for``)."""

    count: int
    metric: str  # "accuracy" | "exact_match" | "token_f1"
    exact_match: float
    score: float
    accuracy: float | None = None
    token_f1: float | None = None
    confusion: list[dict] | None = None  # [{"expected", "predicted", "count"}]

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def score_answers(expected: Sequence[str], answers: Sequence[str], metric: str) -> Scores:
    """Score ``answers`` (one per expected output); ``metric``: see ``metric_for``."""
    n = len(expected)
    exact = [a.strip() == e.strip() for a, e in zip(answers, expected, strict=True)]
    em = sum(exact) / n if n else 0.0
    if metric == ACCURACY:
        known = {e.strip() for e in expected}
        pairs = Counter(
            (e.strip(), a.strip() if a.strip() in known else OTHER_LABEL)
            for a, e in zip(answers, expected, strict=True)
        )
        confusion = [{"expected": e, "predicted": p, "count": c}
                     for (e, p), c in sorted(pairs.items())]
        return Scores(n, ACCURACY, em, em, accuracy=em, confusion=confusion)
    f1 = sum(token_f1(a, e) for a, e in zip(answers, expected, strict=True)) / n if n else 0.0
    if metric == EXACT_MATCH:
        return Scores(n, EXACT_MATCH, em, em, token_f1=f1)
    return Scores(n, TOKEN_F1, em, f1, token_f1=f1)


def wrong_answers(examples: Sequence[Example], answers: Sequence[str],
                  limit: int = MAX_WRONG_SHOWN) -> list[dict]:
    """The first ``limit`` answers that are not exactly the expected output."""
    out = []
    for ex, a in zip(examples, answers, strict=True):
        if a.strip() != ex.output.strip():
            out.append({"text_input": ex.text_input, "expected": ex.output, "answer": a})
            if len(out) == limit:
                break
    return out


@dataclass
class Evaluation:
    """One scoring of a model on the validation examples (``epoch`` 0: the base model)."""

    epoch: int
    validation_loss: float
    scores: Scores
    wrong: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "validation_loss": self.validation_loss,
                **self.scores.to_dict(), "wrong": self.wrong, "seconds": self.seconds}


# The validation loss pass's batches hold at most this many tokens (``Evaluator._loss_groups``);
# its logits (output tokens × vocabulary × 4 bytes) are made at most this many bytes at a time.
LOSS_PASS_TOKENS = 8_192
LOSS_PASS_LOGIT_BYTES = 32 * 2**20


class Evaluator:
    """Scores the model being trained on the validation examples, inside the training
    process. It generates with the training model itself (its LoRA layers active), under
    ``torch.no_grad`` rather than inference mode: tensors made in inference mode could not
    take part in the training steps that follow."""

    def __init__(self, base: Any, validation: list[Example], metric: str,
                 packed: bool = False, share_prefix: bool = False,
                 labels: Sequence[str] | None = None, rules: AnswerRules = NO_RULES):
        """``metric``: what the answers are scored by (``metric_for``). ``packed``: the loss
        pass lays each group of examples in one row, as the trainer does where its model
        attends by example (``data/batches.py`` ``pack``); with ``share_prefix``, their
        common prefix once. Else each example has a padded row. ``labels``: a classifier's
        labels (``catalog/labels.py``): an answer that is none of them is replaced by the
        most likely one, as the tuned model's served answers are. ``rules``: how the tuned
        model's answers are decoded (``catalog/stopping.py`` ``AnswerRules``), as served."""
        self.base = base
        self.rules = rules
        self.labels = list(labels) if labels else None
        self.examples = validation[:MAX_VALIDATION]
        self.metric = metric
        self.packed, self.share_prefix = packed, share_prefix
        tok = base.tokenizer
        self.tokenized = [tokenize_example(tok, base.template, ex) for ex in self.examples]
        self.max_new_tokens = max((len(t.output_ids) for t in self.tokenized), default=0) + (
            ANSWER_MARGIN_TOKENS)
        self.end_ids = end_token_ids(tok, base.template)
        # each label's tokens, counted once for every epoch's scoring
        self.label_ids = self.labels and label_token_ids(tok, base.template, self.labels)

    def evaluate(self, model: Any, epoch: int,
                 on_progress: Callable[[int, int], None] | None = None) -> Evaluation:
        """Validation loss and scored greedy answers of ``model`` (in eval mode meanwhile;
        the caller's train/eval mode and the RNG state are restored afterwards)."""
        import torch

        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                loss, answers = self.score(model, on_progress)
        finally:
            model.train(was_training)
        scores = score_answers([ex.output for ex in self.examples], answers, self.metric)
        return Evaluation(epoch, loss, scores, wrong_answers(self.examples, answers),
                          time.perf_counter() - t0)

    def score(self, model: Any, on_progress: Callable[[int, int], None] | None = None
              ) -> tuple[float, list[str]]:
        """The validation loss and every example's greedy answer.

        The pass that computes the loss feeds each expected output and so also shows the
        model's next-token choice after every prefix of it. Greedy decoding would produce
        exactly those choices as long as each earlier one matched the expected token; so
        where the choices run to the end of an answer (the end marker, or the answer budget)
        before the first mismatch, that answer is known without generating it — a model
        that has learnt its task answers most validation examples so. Only the rest are
        generated, and not from their start: the choices up to the first mismatch, and the
        mismatch itself (greedy's choice after a prefix greedy also chose), are the start of
        the greedy answer, so decoding goes on from there. A model that has nearly learnt its
        task mostly errs late in an answer (one field of a JSON object): on the throughput
        benchmark's data after one epoch, the one example left differed at its 46th of 52
        tokens, and answering it from the start took 3.6 s. (The loss pass and generation
        batch the examples differently, so in bf16 a near-tie may go the other way:
        docs/evaluation.md.)
        """
        import torch.nn.functional as F

        from tunelab.training.loop import output_logit_chunks

        if on_progress is not None:  # scoring begins (the loss pass takes a second or two)
            on_progress(0, len(self.examples))
        total, tokens = 0.0, 0
        pad = self.base.tokenizer.pad_token_id
        answers: list[str | None] = []
        started: list[Reply] = []  # each answer as far as the loss pass determines it
        kept: list[Prefilled | None] = []  # each undecided answer's keys and values so far
        config = self.base.model.config
        per_token = cache_bytes_per_token(config)
        for items in self._loss_groups():
            batch = self._batch(items, pad).to(self.base.device)
            chosen: list[tuple[list[float], list[int]]] = []  # greedy's candidates
            # the pass's keys and values, to decode on from (its prompts not computed again):
            # the pass's and those kept from earlier passes within PASS_CACHE_BYTES
            held = sum(len(k.tokens) for k in kept if k is not None)
            cache = pass_cache(config, batch.input_ids.numel() + held, per_token)
            for logits, targets in output_logit_chunks(model, batch, LOSS_PASS_LOGIT_BYTES,
                                                       cache):
                total += float(F.cross_entropy(logits, targets, reduction="sum"))
                chosen += top_candidates(logits)
                del logits
            tokens += len(batch.targets)
            at = 0
            for it in items:
                n = len(it.output_ids)
                # the prompt's words, as a served answer to it reads them (Generator.answers)
                source = copy_source([("user", self.examples[len(started)].text_input)])
                reply = start_from_choices(self._reply(len(it.prompt_ids), source),
                                           it.output_ids, chosen[at:at + n])
                started.append(reply)
                answers.append(reply.text() if reply.done else None)
                kept.append(None if reply.done else _states_before_last(
                    cache, batch, at, it, reply))
                at += n
            del cache
        if on_progress is not None:
            on_progress(sum(a is not None for a in answers), len(self.examples))
        todo = [i for i, a in enumerate(answers) if a is None]
        # a row's cache: its prompt and its answer, what the loss pass gave it included
        # (never more than the budget), as Generator.answers sizes its batches
        prompts = [self.tokenized[r].prompt_ids for r in todo]
        for group in answer_batches([len(p) for p in prompts], self.max_new_tokens,
                                    self.base.model.config):
            rows = [todo[g] for g in group]
            for r, a in zip(rows, greedy_answers(
                    model, [prompts[g] for g in group], [started[r] for r in rows], pad,
                    self.base.device, [kept[r] for r in rows]), strict=True):
                answers[r] = a
                kept[r] = None  # decoded: its keys and values can go
            if on_progress is not None:
                on_progress(sum(a is not None for a in answers), len(self.examples))
        done = [a or "" for a in answers]
        if self.labels:  # as the served model answers (catalog/labels.py)
            prompts = [t.prompt_ids for t in self.tokenized]
            answers_as_labels(model, prompts, done, self.labels, self.label_ids,
                              self.base.device, [self._budget(len(p)) for p in prompts])
        return total / max(tokens, 1), done

    def _loss_groups(self) -> list[list[Any]]:
        """The examples in order, cut into the loss pass's batches of at most
        ``LOSS_PASS_TOKENS`` (at least one example each). A forward pass has a fixed cost
        besides its tokens (a tenth of a second on the default model on a CPU), so the
        validation examples of a short task are one pass; the logits are made a chunk at a
        time within it (``LOSS_PASS_LOGIT_BYTES``), whatever the vocabulary's size."""
        groups: list[list[Any]] = []
        length = 0
        for it in self.tokenized:
            if groups and length + it.length <= LOSS_PASS_TOKENS:
                groups[-1].append(it)
                length += it.length
            else:
                groups.append([it])
                length = it.length
        return groups

    def _batch(self, items: Sequence[Any], pad: int) -> Any:
        """The loss pass's batch, its targets in the examples' order: one packed row (the
        training step's layout: no padding, the prefix computed once), else padded rows."""
        if self.packed:
            batch = pack(items, pad, float("inf"), self.share_prefix)
            if len(batch.segments) == 1:  # one row holds the examples in their order
                return batch
        return collate(items, pad)

    def _budget(self, prompt_length: int) -> int:
        """How many tokens an answer to a prompt this long may have: the answer budget, within
        the model's context."""
        return max(0, min(self.max_new_tokens, self.base.spec.context_length - prompt_length))

    def _reply(self, prompt_length: int, source: str) -> Reply:
        """An answer stopped as served answers are (catalog/stopping.py), to a prompt whose
        text is ``source`` (its words preferred among near-equal tokens, catalog/copying.py)."""
        budget = self._budget(prompt_length)
        return Reply(self.base.tokenizer, self.end_ids, [self.base.template.end], budget,
                     self.rules, source, labels_to_end_at(self.labels, self.label_ids, budget))


def _states_before_last(cache: Any, batch: Any, at: int, item: Any, reply: Reply
                        ) -> Prefilled | None:
    """``greedy.states_before_last`` for ``item``'s undecided ``reply`` in the loss pass's
    ``batch`` (``at``: where its targets begin). In a packed row the shared prefix
    (``batch.prefix``) is at the row's start and the rest of the example where its first
    target is predicted from (``data/batches.py``); a padded row holds it from its start."""
    if cache is None or not item.output_ids:
        return None
    row, last = int(batch.predict_rows[at]), int(batch.predict_cols[at])
    prefix = batch.prefix
    start = last - (len(item.prompt_ids) - 1 - prefix)  # the column of its token `prefix`
    columns = [j if j < prefix else start + j - prefix for j in range(item.length - 1)]
    if min(columns) < 0 or max(columns) >= batch.input_ids.shape[1]:
        return None
    return states_before_last(cache, row, columns, batch.input_ids[row, columns].tolist(),
                              len(item.prompt_ids), reply)


def advice_of(evaluation: dict) -> Any:
    """The best-epoch advice from a run's evaluation record (None before any epoch)."""
    from tunelab.training.advice import advise_from_scores

    epochs = evaluation.get("epochs") or []
    base = evaluation.get("baseline") or {}
    return advise_from_scores([e["score"] for e in epochs], base.get("score"),
                              evaluation["metric"], evaluation["example_count"])


# ---- comparing models on a test file (``tunelab eval``, ``:evaluate``) -----------------------

# Examples with differing answers listed side by side, at most.
MAX_DIFFERENCES = 20


def answer_budget(tokenizer: Any, template: Any, examples: Sequence[Example]) -> int:
    """Tokens an answer may take: the longest expected output plus a small margin."""
    longest = max((len(tokenizer(ex.output + template.end, add_special_tokens=False)
                       ["input_ids"]) for ex in examples), default=0)
    return longest + ANSWER_MARGIN_TOKENS


@dataclass
class Answerer:
    """A model ``compare`` scores: its name, its greedy answer to one example, and where it
    can, its answers to many examples at once (``many(examples, on_progress, often_right)``,
    progress as the number answered so far; ``often_right``: whether its first answers were
    right, so that reading answers off the expected outputs pays): a local model answers up to
    32 at a time (``Generator.answers``), a served one through one request per example."""

    name: str
    one: Callable[[Example], str]
    many: Callable[[Sequence[Example], Callable[[int], None], bool], list[str]] | None = None
    # a base model asked as this tuned model is, and with which of its rules, in words
    # (inference/manifest.py answer_rules_of)
    asked_as: str | None = None
    asked_with: str | None = None


def generator_answerer(name: str, generator: Any, adapter: Any,
                       examples: Sequence[Example], asked_as: Any = None) -> Answerer:
    """A model loaded in this process: ``generator`` (an ``inference.Generator``) with
    ``adapter`` (a tuned model's adapter folder, or None for the base model), answering at most
    the longest expected output of ``examples`` plus ``ANSWER_MARGIN_TOKENS`` tokens, greedily
    and stopped as served answers are; one example alone (timed: a served answer's latency),
    many together (up to 32 a batch), the answers their expected outputs already decide read
    from one pass (``Generator.answers``). ``asked_as``: for a base model compared with a tuned
    model that keeps rules, that model (``inference/manifest.py`` ``AskedAs``): the base is
    asked with its rules."""
    rules_of = asked_as.adapter if asked_as is not None else None
    budget = answer_budget(generator.base.tokenizer, generator.base.template, examples)

    def requests(exs: Sequence[Example]) -> list:
        return [([("user", ex.text_input)], ex.system) for ex in exs]

    def one(ex: Example) -> str:
        return generator.answers(requests([ex]), budget, adapter, rules_of=rules_of)[0]

    def many(exs: Sequence[Example], progress: Callable[[int], None] | None = None,
             often_right: bool = False) -> list[str]:
        # Reading the answers off the expected outputs costs a forward pass per batch, and a
        # model that gets them wrong from the first tokens (a base model) gains nothing by it:
        # on 47 test examples its answers took 35.7 s so against 27.2 s decoded; a tuned model
        # right on four in five of them, 21.0 s against 36.2 s (docs/evaluation.md).
        return generator.answers(requests(exs), budget, adapter, progress,
                                 expected=[ex.output for ex in exs] if often_right else None,
                                 rules_of=rules_of)

    if asked_as is None:
        return Answerer(name, one, many)
    return Answerer(name, one, many, asked_as.name, asked_as.words)


# Examples a model that answers many at once also answers alone, one by one, to time a single
# answer (its mean latency as served); they are the first examples of the file.
LATENCY_SAMPLE = 3


def compare(
    examples: Sequence[Example],
    answerers: Sequence[Answerer],
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Answer every example with every model and score them on one scale.

    Returns ``{"metric", "example_count", "results": [{"model", scores…, "mean_latency_ms",
    "asked_as", "asked_with" (a base model asked as that tuned model is, with those of its
    rules, where it was)}],
    "differences": [{"text_input", "expected", "answers": [{"model", "text"}]}],
    "differing_count"}``; differences are the examples where the models' answers are not all
    the same (at most ``MAX_DIFFERENCES`` are listed, those the first model answers wrongly
    first, then the rest, each in the examples' order). ``mean_latency_ms`` is the mean time of
    one answer asked alone: over every example for a model answered one at a time, over the
    first ``LATENCY_SAMPLE`` for one that answers the rest together.
    """
    examples = list(examples)
    metric = metric_for([ex.output for ex in examples])
    results, all_answers = [], []
    for model in answerers:
        name = model.name
        alone = examples if model.many is None else examples[:LATENCY_SAMPLE]
        answers, seconds = [], 0.0
        for ex in alone:
            t0 = time.perf_counter()
            answers.append(model.one(ex))
            seconds += time.perf_counter() - t0
            if on_progress is not None:
                on_progress(name, len(answers), len(examples))
        if len(answers) < len(examples) and model.many is not None:
            done = len(answers)

            def progress(n: int, name: str = name, done: int = done) -> None:
                if on_progress is not None:
                    on_progress(name, done + n, len(examples))

            first = score_answers([ex.output for ex in examples[:done]], answers, EXACT_MATCH)
            answers += model.many(examples[done:], progress, first.exact_match >= 0.5)
        scores = score_answers([ex.output for ex in examples], answers, metric)
        results.append({"model": name, **scores.to_dict(),
                        "mean_latency_ms": 1000 * seconds / max(len(alone), 1),
                        **({"asked_as": model.asked_as, "asked_with": model.asked_with}
                           if model.asked_as else {})})
        all_answers.append(answers)
    differing = [i for i in range(len(examples))
                 if len({a[i].strip() for a in all_answers}) > 1]
    # The first model's misses first, each part in the file's order: where a tuned model is
    # compared with its base, nearly every example differs (the base is wrong), and the few
    # the tuned model gets wrong are what the list is read for.
    if all_answers:
        differing.sort(key=lambda i: all_answers[0][i].strip() == examples[i].output.strip())
    differences = [
        {"text_input": examples[i].text_input, "expected": examples[i].output,
         "answers": [{"model": m.name, "text": a[i]}
                     for m, a in zip(answerers, all_answers, strict=True)]}
        for i in differing[:MAX_DIFFERENCES]
    ]
    return {"metric": metric, "example_count": len(examples),
            "results": results, "differences": differences, "differing_count": len(differing)}
