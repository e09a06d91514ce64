"""A create request as the services read it (``TuningRequest``, translated from each
protocol's wire shape), what it answers (``Submitted``), the one error that names every
problem with it (``CreateRequestError``), and tuned-model ids (given: ``ID_RE``; else derived
from the display name)."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field

from tunelab.data import Example
from tunelab.errors import DatasetError, InvalidArgument, NotFound, Problem
from tunelab.ids import random_id
from tunelab.parameters import sentence

ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")

# What google-genai 1.47+ users add so tunings.tune() sends its examples (docs/sdks.md).
EXTRA_BODY_SNIPPET = (
    'types.HttpOptions(extra_body={"tuningTask": {"trainingData": {"examples": {"examples": '
    '[{"textInput": "...", "output": "..."}]}}}})'
)
NO_TRAINING_DATA = (
    "No training examples received: tuningTask.trainingData is missing. google-genai 1.47 "
    "and later drop the examples of client.tunings.tune() on the Gemini API path (a bug in "
    "the SDK). Send them with the request yourself: pass config=types.CreateTuningJobConfig("
    f"..., http_options={EXTRA_BODY_SNIPPET}) to tune(), or put that extra_body into the "
    "client's HttpOptions; or use Vertex mode, genai.Client(vertexai=True, ...), with an "
    "uploaded dataset (docs/sdks.md). Over REST, send "
    '"tuningTask": {"trainingData": {"examples": {"examples": [{"textInput": "...", '
    '"output": "..."}]}}}, or upload a file (POST /v1beta/files) and pass '
    '"trainingData": {"file": "files/ID"}.'
)


def derive_id(display_name: str | None) -> str:
    """``Sentence Translator`` → ``sentence-translator-u3b7m``; random when no usable name."""
    suffix = random_id(5)
    words = re.findall(r"[a-z0-9]+", (display_name or "").lower())
    stem = "-".join(words)[: 40 - len(suffix) - 1].strip("-")
    if not stem:  # no usable words: a random id that starts with a letter
        return secrets.choice(string.ascii_lowercase) + random_id(10)
    if not stem[0].isalpha():
        stem = f"m-{stem}"[: 40 - len(suffix) - 1].strip("-")
    return f"{stem}-{suffix}"


@dataclass
class TuningRequest:
    """A create request, translated from the wire."""

    owner: str
    base_model: str | None
    source_tuned_model: str | None
    tuned_model_id: str | None
    display_name: str | None
    description: str | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    examples: list[Example] | None  # inline examples
    file: str | None  # or "files/{id}"
    epoch_count: int | None
    batch_size: int | None
    learning_rate: float | None
    learning_rate_multiplier: float | None
    # tunelab extension (tuningTask.validationData): examples to score each epoch on, inline
    # or an uploaded file; without them 10% are held out from 40 examples on (data/split.py)
    validation_examples: list[Example] | None = None
    validation_file: str | None = None
    seed: int | None = None  # the run's seed (OpenAI's ``seed``); else the server's
    lora_rank: int | None = None  # Vertex's adapterSize; else chosen from the data
    # tunelab extension (hyperparameters.answerLabels): False lets a tuned classifier answer
    # in free text (catalog/labels.py); unset: its answers are its labels
    answer_labels: bool | None = None


@dataclass
class Submitted:
    model_id: str
    operation: str
    warnings: list[Problem]


@dataclass
class CreateRequestError(DatasetError):
    """Every problem with a create request in one answer: its fields' (``request_problems``,
    each naming its field) and its examples' (``problems``, by row). On the wire both are
    ``fieldViolations`` (``displayName``, ``examples[17].output``).

    With ``base_model_unknown`` the answer is NOT_FOUND (404), as the Gemini API answers a
    base model it does not have, and still names every other problem; the base model's comes
    first."""

    request_problems: list[Problem] = field(default_factory=list)
    base_model_unknown: bool = False

    def __post_init__(self) -> None:
        if self.base_model_unknown:
            self.status, self.http_code = NotFound.status, NotFound.http_code
        rows = self.problems
        parts = []
        if self.request_problems:
            parts.append("Invalid tuned model: "
                         + "; ".join(sentence(p) for p in self.request_problems) + ".")
            # a field's violation reads on its own, as Google's do ("displayName is 41
            # characters; …"), for a client that shows it away from the field
            self.request_problems = [Problem(sentence(p), field=p.field)
                                     for p in self.request_problems]
        if rows:
            n = len(rows)
            parts.append(f"The training data has {n} problem{'s' if n != 1 else ''}:\n"
                         + "\n".join(f"- {p}" for p in rows))
        self.problems = self.request_problems + rows
        InvalidArgument.__init__(self, "\n".join(parts))
