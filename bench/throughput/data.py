"""The workload every contender trains on: the same examples as the same token sequences.

The examples are a "sentence → JSON" task generated in code from a seed (nothing to download):
a sentence states one to eight facts about a person and the output is those facts as a JSON
object, so examples range from short to about four times as long and batches need padding
unless sorted by length. The driver tokenizes them once, with tunelab's own tokenizer and
template (``tokenize_example``), and writes the token sequences to a file that every contender's
process reads; each contender then reports a fingerprint of the sequences it actually trained on,
step by step, and the driver refuses to compare runs whose fingerprints differ.

Every contender trains the same examples together in the same steps: tunelab's own draw of each
epoch's batches (``batch_plan``, the trainer's ``plan_batches``). With 25 steps at a constant
rate the held-out loss of one model on one data set changed up to 8× between two draws of the
batches (docs/performance.md, "Held-out loss"), so contenders that drew their own batches were
compared on their luck as much as on how they train.

A held-out set of the same task (``heldout_examples``: another seed, and no input that is also a
training input) is tokenized the same way and stored with the workload: every contender's
trained adapter is scored on it alike (``heldout.py``), so the losses the benchmark compares do
not depend on how each contender batched its training steps.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from tunelab.data import Example

T = TypeVar("T")

_NAMES = ["Alice", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
          "Kemi", "Luca", "Mira", "Nils", "Omar", "Priya"]
_CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Pune", "Quito", "Porto", "Accra", "Hanoi"]
_TEAMS = ["red", "blue", "green", "ops", "research", "design"]
_LANGUAGES = ["French", "Yoruba", "Japanese", "Spanish", "Norwegian", "Marathi", "Portuguese"]
# added to the training seed for the held-out stream, so the two streams differ for every seed
HELDOUT_SEED_OFFSET = 1_000_003


def _facts(r: random.Random, name: str) -> list[tuple[str, object, str]]:
    """Every fact the generator can state: (JSON key, JSON value, the words that state it)."""
    age = r.randint(18, 90)
    city = r.choice(_CITIES)
    team = r.choice(_TEAMS)
    joined = f"20{r.randint(10, 25)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
    email = f"{name.lower()}{r.randint(1, 999)}@example.org"
    phone = f"+{r.randint(1, 99)} {r.randint(100, 999)} {r.randint(1000, 9999)}"
    score = round(r.uniform(0, 100), 1)
    active = r.random() < 0.5
    language = r.choice(_LANGUAGES)
    return [
        ("age", age, f"is {age} years old"),
        ("city", city, f"lives in {city}"),
        ("team", team, f"works on the {team} team"),
        ("joined", joined, f"joined on {joined}"),
        ("email", email, f"can be reached at {email}"),
        ("phone", phone, f"has the phone number {phone}"),
        ("score", score, f"scored {score} in the last review"),
        ("active", active, "is active" if active else "is no longer active"),
        ("language", language, f"speaks {language}"),
    ]


def _generate(seed: int) -> Iterator[Example]:
    """The task's examples, an endless stream that is the same for the same seed everywhere."""
    r = random.Random(seed)
    while True:
        name = r.choice(_NAMES)
        facts = r.sample(_facts(r, name), r.randint(1, 8))
        words = [w for _, _, w in facts]
        said = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        record = {"name": name, **{key: value for key, value, _ in facts}}
        yield Example(
            f"Extract the person's details from this sentence as JSON: {name} {said}.",
            json.dumps(record, ensure_ascii=False),
        )


def sentence_to_json_examples(n: int, seed: int) -> list[Example]:
    """``n`` examples of the task, the same for the same ``(n, seed)`` on every machine."""
    return list(itertools.islice(_generate(seed), n))


def heldout_examples(n: int, seed: int, training: Iterable[Example]) -> list[Example]:
    """``n`` examples from another stream than the training one, none with an input that is a
    training input or repeats an earlier held-out one (short sentences such as "Luca lives in
    Oslo." come up more than once), so the score is on sentences no contender trained on."""
    seen = {e.text_input for e in training}
    out: list[Example] = []
    for example in _generate(seed + HELDOUT_SEED_OFFSET):
        if len(out) == n:
            break
        if example.text_input not in seen:
            seen.add(example.text_input)
            out.append(example)
    return out


@dataclass(frozen=True)
class TokenSequence:
    """One example as tokens: the prompt's ids, then the output's ids (the loss is on these)."""

    prompt_ids: list[int]
    output_ids: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass(frozen=True)
class Workload:
    """What every contender trains on, and the held-out sequences every trained adapter is
    scored on; written by the driver, read by each contender and by the evaluation."""

    base_model: str  # catalog id or local path, as given
    model_path: str  # the Hugging Face folder tunelab loads (TRL and the plain loop load it too)
    examples: list[Example]
    sequences: list[TokenSequence]
    heldout_examples: list[Example]
    heldout: list[TokenSequence]

    def fingerprint(self, epochs: int, batch_size: int, seed: int) -> str:
        """The fingerprint of training ``epochs`` times on every sequence in the batches of
        ``batch_plan`` (see ``fingerprint``)."""
        rows = [(s.ids, len(s.prompt_ids)) for s in self.sequences]
        return fingerprint(planned_steps(rows, epochs, batch_size, seed))

    @property
    def tokens(self) -> int:
        return sum(len(s.ids) for s in self.sequences)

    @property
    def heldout_output_tokens(self) -> int:
        """The tokens the held-out loss is the mean over."""
        return sum(len(s.output_ids) for s in self.heldout)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "base_model": self.base_model,
            "model_path": self.model_path,
            "examples": _examples_dict(self.examples),
            "sequences": [asdict(s) for s in self.sequences],
            "heldout_examples": _examples_dict(self.heldout_examples),
            "heldout": [asdict(s) for s in self.heldout],
        }))

    @classmethod
    def load(cls, path: Path) -> Workload:
        d = json.loads(Path(path).read_text())
        return cls(
            d["base_model"],
            d["model_path"],
            [Example(e["text_input"], e["output"]) for e in d["examples"]],
            [TokenSequence(s["prompt_ids"], s["output_ids"]) for s in d["sequences"]],
            [Example(e["text_input"], e["output"]) for e in d["heldout_examples"]],
            [TokenSequence(s["prompt_ids"], s["output_ids"]) for s in d["heldout"]],
        )


def _examples_dict(examples: list[Example]) -> list[dict[str, str]]:
    return [{"text_input": e.text_input, "output": e.output} for e in examples]


def batch_plan(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (indices into the workload's sequences) of one epoch: tunelab's own draw
    (``tunelab.training.loop.plan_batches``), which every contender follows."""
    from tunelab.training.loop import plan_batches

    return plan_batches(count, batch_size, seed, epoch)


def planned_steps(items: Sequence[T], epochs: int, batch_size: int, seed: int) -> list[list[T]]:
    """``items`` (in the workload's order) as the steps of ``epochs`` epochs of ``batch_plan``,
    one list per step."""
    return [[items[i] for i in batch] for epoch in range(epochs)
            for batch in batch_plan(len(items), batch_size, seed, epoch)]


def fingerprint(steps: Iterable[Iterable[tuple[Sequence[int], int]]]) -> str:
    """A digest of the steps a contender trained, in order, each the rows it trained on together
    (token ids, how many of them are prompt; in any order within the step): equal digests mean
    the same token sequences with the loss on the same tokens, in the same steps."""
    keys = ["|".join(sorted(f"{prompt_len}:{','.join(map(str, ids))}" for ids, prompt_len in step))
            for step in steps]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def prepare(base_model: str, n: int, seed: int, heldout: int) -> Workload:
    """Generate ``n`` training and ``heldout`` held-out examples and tokenize both as tunelab
    does, without loading the weights."""
    from transformers import AutoTokenizer

    from tunelab.catalog import get_base_model, materialize
    from tunelab.catalog.templates import template_for_vocab
    from tunelab.config import Settings
    from tunelab.data.batches import tokenize_example

    settings = Settings()
    spec = get_base_model(base_model, settings.extra_models)
    path = materialize(spec, settings.models_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # load_base_model picks the template the same way
    template = spec.template or template_for_vocab(tokenizer.get_vocab())

    def tokenize(examples: list[Example]) -> list[TokenSequence]:
        tokenized = [tokenize_example(tokenizer, template, ex) for ex in examples]
        return [TokenSequence(list(t.prompt_ids), list(t.output_ids)) for t in tokenized]

    examples = sentence_to_json_examples(n, seed)
    held = heldout_examples(heldout, seed, examples)
    return Workload(base_model, str(path), examples, tokenize(examples), held, tokenize(held))
