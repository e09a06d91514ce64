"""tunelab extension: score a tuned model, its base model and other models on test examples.

    POST /v1beta/tunedModels/{id}:evaluate
        {"testData": {"examples": {"examples": [{"textInput": "...", "output": "..."}]}}
                   | {"file": "files/ID"},
         "compareWith": ["models/BASE", "tunedModels/OTHER"]}      (default: the base model)
    → {"metric", "exampleCount", "results": [{"model", "score", "exactMatch", "accuracy" |
       "tokenF1", "meanLatencyMs", …}], "differences": [...], "differingCount"}

Answers are greedy and at most as long as the longest expected output plus a few tokens, and
at most ``MAX_VALIDATION`` examples are scored per request, so a request stays bounded on a
CPU. The caller needs read access to every tuned model named (as for generateContent).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.api.deps import Principal, current_principal
from tunelab.api.gemini import schemas as s
from tunelab.api.lenient import LenientJSONRoute
from tunelab.auth.rules import READER
from tunelab.data import Example
from tunelab.data.split import MAX_VALIDATION
from tunelab.errors import InvalidArgument
from tunelab.jobs.base_models import require_served_base_model
from tunelab.models import TunedModels

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]
MAX_COMPARE = 4  # other models per request: each answers every example


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class EvaluateRequest(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    test_data: s.DatasetIn = Field(description="Inline examples or an uploaded file.")
    compare_with: list[str] | None = Field(
        None, description="Other models to score: 'models/ID' or 'tunedModels/ID'. Default: "
        "the tuned model's base model; [] for the tuned model alone.")


class ModelScore(_Camel):
    model: str
    score: float = Field(description="accuracy for label-like outputs, exact match for short "
                         "values, else token F1 (the response's metric).")
    exact_match: float
    accuracy: float | None = None
    token_f1: float | None = None
    confusion: list[s.ConfusionCount] | None = None
    mean_latency_ms: float
    unreachable_note: str | None = Field(
        None, description="Only for a tuned classifier (it answers with its labels) tested on "
        "expected outputs that are none of them: how many, in one sentence (it cannot be right "
        "on those).")
    asked_as: str | None = Field(
        None, description="Only for a base model compared with a tuned model that keeps rules "
        "learnt from its data (a remembered system prompt, labels, an output shape): the tuned "
        "model it was asked as, with those rules, as the validation scores ask a base model.")
    asked_with: str | None = Field(
        None, description="With askedAs: those rules, in words.")


class Answer(_Camel):
    model: str
    text: str


class Difference(_Camel):
    text_input: str
    expected: str
    answers: list[Answer]


class EvaluateResponse(_Camel):
    metric: str
    metric_note: str = ""  # why that metric ranks the models, in one sentence
    example_count: int
    results: list[ModelScore]
    differences: list[Difference] = []
    differing_count: int = 0


def _models(request: Request) -> TunedModels:
    return request.app.state.models


def _target(request: Request, principal: Principal, name: str):
    """(generator, adapter) for 'models/ID' or 'tunedModels/ID' the caller may call."""
    pool = request.app.state.pool
    if name.startswith("tunedModels/"):
        models = _models(request)
        row = models.get(name.removeprefix("tunedModels/"), principal.owner, READER)
        return pool.generator(row.base_model), models.usable_adapter(row)
    if name.startswith("models/"):
        spec = require_served_base_model(name, request.app.state.settings.extra_models)
        return pool.generator(spec.name), None
    raise InvalidArgument(
        f"compareWith names '{name}'; name models as 'models/ID' or 'tunedModels/ID'.")


def _unreachable(adapter, examples: list[Example]) -> str | None:
    """For a tuned classifier, how many expected outputs are none of its labels."""
    from tunelab.catalog.labels import unreachable_note
    from tunelab.inference.manifest import served_facts

    return unreachable_note(served_facts(adapter).answer_labels, [ex.output for ex in examples])


@router.post("/tunedModels/{model_id}:evaluate", response_model=EvaluateResponse,
             tags=["tunedModels"], response_model_exclude_none=True,
             response_model_by_alias=True)
def evaluate_tuned_model(model_id: str, body: EvaluateRequest, request: Request,
                         principal: Auth) -> EvaluateResponse:
    """tunelab extension: the tuned model and others on the same test examples, one score
    scale (accuracy for labels, exact match for short values, else token F1), latency, and
    the answers that differ."""
    from tunelab.inference.manifest import answer_rules_of
    from tunelab.training.evaluate import compare, generator_answerer, metric_note, metric_wire

    data = body.test_data
    if (data.examples is None) == (data.file is None):
        raise InvalidArgument("testData needs examples or a file ('files/ID'), one of the two.")
    if data.file is not None:
        examples = _models(request).examples_of_file(data.file, principal.owner)
    else:
        examples = [Example(e.text_input or "", e.output) for e in data.examples.examples]
    if not examples:
        raise InvalidArgument("testData holds no examples; give at least one.")
    if len(examples) > MAX_VALIDATION:
        raise InvalidArgument(
            f"testData holds {len(examples)} examples; at most {MAX_VALIDATION} are scored per "
            "request. Split the file, or score a sample of it.")
    name = f"tunedModels/{model_id}"
    others = body.compare_with
    if others is None:
        others = [_models(request).get(model_id, principal.owner, READER).base_model]
    if len(others) > MAX_COMPARE:
        raise InvalidArgument(f"compareWith names {len(others)} models; at most {MAX_COMPARE}.")
    names = list(dict.fromkeys([name, *others]))
    targets = [(n, *_target(request, principal, n)) for n in names]

    # a base model is asked as the first tuned model is, as its validation scores ask it
    rules = answer_rules_of([(n, a) for n, _, a in targets])
    out = compare(examples, [
        generator_answerer(n, g, a, examples, asked_as=rules if a is None else None)
        for n, g, a in targets])
    notes = {n: _unreachable(a, examples) for n, _, a in targets}
    return EvaluateResponse(
        metric=metric_wire(out["metric"]),
        metric_note=metric_note(out["metric"]),
        example_count=out["example_count"],
        results=[ModelScore(**{k: v for k, v in r.items() if k != "confusion"},
                            confusion=[s.ConfusionCount(**c) for c in r.get("confusion") or []]
                            or None, unreachable_note=notes.get(r["model"]))
                 for r in out["results"]],
        differences=[Difference(text_input=d["text_input"], expected=d["expected"],
                                answers=[Answer(**a) for a in d["answers"]])
                     for d in out["differences"]],
        differing_count=out["differing_count"],
    )
