"""The OpenAI fine-tuning API's routes: files, fine-tuning jobs (events, checkpoints, cancel),
models, chat completions and completions. Each translates HTTP ⇄ calls of the same tuning
service, store and generators as the Gemini routes (``api/gemini/routes.py``); names are
translated in ``convert.py``, errors shaped in ``errors.py``, credentials and dispatch in
``route.py``. Mounted at ``/v1`` and ``/openai/v1``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from tunelab.api.bounds import read_upload
from tunelab.api.gemini.generation import _thread_stream
from tunelab.api.openai import convert
from tunelab.api.openai import schemas as s
from tunelab.api.openai.errors import ModelNotFound, OpenAIInvalid, error_body
from tunelab.api.openai.route import OpenAIRoute, openai_principal, required_role
from tunelab.auth.principal import Principal
from tunelab.auth.rules import READER
from tunelab.catalog import BaseModelSpec, list_base_models
from tunelab.errors import (
    DataLoss,
    DatasetError,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    TunelabError,
)
from tunelab.inference.generate import GenerationConfig
from tunelab.jobs.requests import TuningRequest
from tunelab.models import TunedModels
from tunelab.parameters import MAX_DISPLAY_NAME
from tunelab.store import TunedModelRow

router = APIRouter(route_class=OpenAIRoute)
Auth = Annotated[Principal, Depends(openai_principal)]
LIST_PAGE = 1000  # rows per store query when a cursor list is assembled
MAX_STOPS = 4  # OpenAI's limit on stop sequences


# ------------------------------------------------------------------------------ helpers
def _base_spec(request: Request, name: str) -> BaseModelSpec:
    """A catalog model by id (``tiny-random`` or ``models/tiny-random``); never a path."""
    key = name.removeprefix("models/")
    specs = list_base_models(request.app.state.settings.extra_models)
    for spec in specs:
        if spec.id == key:
            return spec
    known = ", ".join(x.id for x in specs)
    raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it. "
                        f"Base models: {known}; fine-tuned models are named ft:… (list them "
                        "with GET /v1/models).")


def _recommended_lr(request: Request, row: TunedModelRow) -> float:
    try:
        return _base_spec(request, row.base_model).recommended_learning_rate
    except ModelNotFound:  # the base model left the catalog since: report the rate as is
        return row.learning_rate


def _models(request: Request) -> TunedModels:
    return request.app.state.models


def _tuned(request: Request, principal: Principal, model_id: str, what: str,
           role: str | None = None) -> TunedModelRow:
    """The tuned model, if the caller has the route's role on it (else 404 naming ``what``,
    as if it did not exist; 403 for a role too low)."""
    try:
        return _models(request).get(model_id, principal.owner, role or required_role(request))
    except NotFound:
        if what.startswith(convert.JOB_PREFIX):
            raise NotFound(f"No fine-tuning job '{what}' is visible to you; list your jobs "
                           "with GET /v1/fine_tuning/jobs.") from None
        raise ModelNotFound(f"The model '{what}' does not exist or you do not have access "
                            "to it; list your models with GET /v1/models.") from None


def _job_out(request: Request, row: TunedModelRow) -> s.Job:
    models = _models(request)
    return convert.job_out(row, models.job_of(row.id), _recommended_lr(request, row),
                           request.app.state.settings.seed, models.trained_tokens(row))


def _visible(request: Request, principal: Principal) -> list[TunedModelRow]:
    """Every tuned model the caller owns or may read, newest first."""
    return _models(request).list_all(principal.owner)


def _limit(value: int | None, default: int, most: int) -> int:
    if value is None:
        return default
    if not 1 <= value <= most:
        raise OpenAIInvalid(f"limit must be from 1 to {most}, got {value}.", "limit")
    return value


def _epochs_by_last_step(request: Request, row: TunedModelRow) -> tuple[dict[int, int], set[int]]:
    """({last step of an epoch: epoch}, epochs with a checkpoint on disk)."""
    models = _models(request)
    ends = {snap.epoch: snap.step for snap in models.snapshots(row.id)}
    return {step: epoch for epoch, step in ends.items()}, models.finished_epochs(row.id)


# -------------------------------------------------------------------------------- files
@router.post("/files", response_model=s.FileObject, name="openai.files.create")
async def create_file(
    request: Request,
    principal: Auth,
    file: Annotated[UploadFile, File(description="JSONL (also CSV or JSON), at most 4 MB.")],
    purpose: Annotated[str, Form()],
) -> s.FileObject:
    """Upload training or validation data. It is parsed at once (every problem reported);
    chat (``messages``) and prompt/completion records are both read. One valid example is
    enough here (a validation file may be small); a training file's minimum is checked when
    a job is created on it."""
    if purpose != "fine-tune":
        raise OpenAIInvalid(f"purpose '{purpose}' is not supported: tunelab keeps training "
                            "data only; upload it with purpose='fine-tune'.", "purpose")
    data = await read_upload(file)
    row = await run_in_threadpool(
        _models(request).upload, principal.owner, data, file.filename or "",
        file.content_type or "", None, None, None, 1)
    return convert.file_out(row)


@router.get("/files", response_model=s.ListOf, name="openai.files.list")
def list_files(
    request: Request,
    principal: Auth,
    purpose: str | None = None,
    limit: Annotated[int | None, Query()] = None,
    after: str | None = None,
    order: str = "desc",
) -> s.ListOf:
    """Your uploads (the Gemini API's files too), newest first unless ``order=asc``."""
    if order not in ("asc", "desc"):
        raise OpenAIInvalid(f"order must be 'asc' or 'desc', got '{order}'.", "order")
    rows = []
    token = None
    while purpose in (None, "fine-tune"):
        page = _models(request).list_files(principal.owner, LIST_PAGE, token)
        rows += page.items
        token = page.next_token
        if not token:
            break
    files = [convert.file_out(r) for r in rows]
    if order == "asc":
        files.reverse()
    return convert.page(files, after, _limit(limit, 10000, 10000))


def _file_row(request: Request, principal: Principal, file_id: str):
    try:
        return _models(request).get_file(convert.upload_id_of(file_id), principal.owner)
    except NotFound:
        error = NotFound(f"No such file: '{file_id}'. List your files with GET /v1/files.")
        error.param = "file_id"  # type: ignore[attr-defined]
        raise error from None


@router.get("/files/{file_id}", response_model=s.FileObject, name="openai.files.retrieve")
def retrieve_file(file_id: str, request: Request, principal: Auth) -> s.FileObject:
    return convert.file_out(_file_row(request, principal, file_id))


@router.get("/files/{file_id}/content", name="openai.files.content")
def file_content(file_id: str, request: Request, principal: Auth) -> Response:
    """The bytes as uploaded, as a download (never rendered by a browser: the type is the
    client's claim, and the Studio shares this origin)."""
    row = _file_row(request, principal, file_id)
    path = convert.original_of(request.app.state.settings.artifacts_dir, row)
    if path is None:
        raise DataLoss(f"The bytes of {file_id} are missing on the server (its parsed "
                       "examples are kept); upload the file again.")
    return Response(path.read_bytes(), media_type="application/octet-stream", headers={
        "Content-Disposition": "attachment", "X-Content-Type-Options": "nosniff"})


@router.delete("/files/{file_id}", response_model=s.Deleted, name="openai.files.delete")
def delete_file(file_id: str, request: Request, principal: Auth) -> s.Deleted:
    """Delete an upload (jobs created from it keep their own copy of the examples)."""
    row = _file_row(request, principal, file_id)
    _models(request).delete_file(row.id, principal.owner)
    return s.Deleted(id=convert.file_id(row.id), object="file")


# --------------------------------------------------------------------------------- jobs
def _hyperparameters(body: s.JobCreate) -> s.HyperparametersIn:
    """``hyperparameters``, or (OpenAI's newer form) ``method.supervised.hyperparameters``."""
    hp = body.hyperparameters
    if body.method is not None:
        if body.method.type != "supervised":
            raise OpenAIInvalid(
                f"method.type '{body.method.type}' is not supported: tunelab tunes with the "
                "supervised method (LoRA on your examples).", "method.type")
        inner = body.method.supervised.hyperparameters if body.method.supervised else None
        if inner is not None and hp is not None:
            raise OpenAIInvalid("Give the hyperparameters in method.supervised.hyperparameters "
                                "or in hyperparameters, not both.", "hyperparameters")
        hp = inner or hp
    return hp or s.HyperparametersIn()


def _number(value: Any) -> Any:
    return None if value == "auto" else value


_HP_NAMES = {"epochCount": "n_epochs", "batchSize": "batch_size",
             "learningRateMultiplier": "learning_rate_multiplier"}


@router.post("/fine_tuning/jobs", response_model=s.Job, name="openai.jobs.create")
def create_job(body: s.JobCreate, request: Request, principal: Auth) -> s.Job:
    """Queue a fine-tuning job on an uploaded file: a tuned model (``tunedModels/{id}`` in
    the Gemini API) whose ``fine_tuned_model`` is ``ft:{base}:{suffix}:{id}`` once tuned."""
    from tunelab.training import Hyperparameters

    if convert.parse_model(body.model) is not None:
        raise OpenAIInvalid(
            f"Tuning a fine-tuned model ('{body.model}') again is not supported yet; give its "
            "base model and include the earlier examples.", "model")
    spec = _base_spec(request, body.model)
    hp = _hyperparameters(body)
    chosen = Hyperparameters(_number(hp.n_epochs), _number(hp.batch_size), None,
                             _number(hp.learning_rate_multiplier))
    problems = [f"hyperparameters.{_HP_NAMES.get(p.field, p.field)} {p.message}"
                for p in chosen.problems()]
    if problems:
        raise OpenAIInvalid("Invalid hyperparameters: " + "; ".join(problems) + ".",
                            "hyperparameters")
    if body.suffix is not None and not 1 <= len(body.suffix) <= MAX_DISPLAY_NAME:
        # the suffix is the tuned model's display name: its limit (OpenAI's is the same)
        raise OpenAIInvalid(f"suffix is {len(body.suffix)} characters; give 1 to "
                            f"{MAX_DISPLAY_NAME}.", "suffix")
    for field in ("training_file", "validation_file"):
        name = getattr(body, field)
        if name is not None:
            try:
                _models(request).get_file(convert.upload_id_of(name), principal.owner)
            except NotFound:
                raise NotFound(f"{field} '{name}' is not one of your files; upload it with "
                               "POST /v1/files (purpose 'fine-tune').") from None
    req = TuningRequest(
        owner=principal.owner, base_model=spec.name, source_tuned_model=None,
        tuned_model_id=None, display_name=body.suffix, description=None, temperature=None,
        top_p=None, top_k=None, examples=None,
        file="files/" + convert.upload_id_of(body.training_file),
        epoch_count=chosen.epoch_count, batch_size=chosen.batch_size, learning_rate=None,
        learning_rate_multiplier=chosen.learning_rate_multiplier,
        validation_file=("files/" + convert.upload_id_of(body.validation_file)
                         if body.validation_file else None),
        seed=body.seed,
    )
    try:
        submitted = _models(request).create(req, request.app.state.pool.example_token_counter)
    except DatasetError as e:
        e.param = "training_file"  # type: ignore[attr-defined]
        raise
    return _job_out(request, _models(request).row(submitted.model_id))


@router.get("/fine_tuning/jobs", response_model=s.ListOf, name="openai.jobs.list")
def list_jobs(
    request: Request,
    principal: Auth,
    after: str | None = None,
    limit: Annotated[int | None, Query()] = None,
) -> s.ListOf:
    """Fine-tuning jobs you own or that are shared with you (every tuned model, however it
    was created), newest first."""
    jobs = [_job_out(request, row) for row in _visible(request, principal)]
    return convert.page(jobs, after, _limit(limit, 20, 1000))


@router.get("/fine_tuning/jobs/{job_id}", response_model=s.Job, name="openai.jobs.retrieve")
def retrieve_job(job_id: str, request: Request, principal: Auth) -> s.Job:
    row = _tuned(request, principal, convert.model_id_of_job(job_id), job_id)
    return _job_out(request, row)


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=s.Job,
             name="openai.jobs.cancel")
def cancel_job(job_id: str, request: Request, principal: Auth) -> s.Job:
    """Stop the job within one step (at once if it has not started). A job stopped while
    running keeps the parameters learned so far as its model, and its finished epochs'
    checkpoints, as in the Gemini API."""
    row = _tuned(request, principal, convert.model_id_of_job(job_id), job_id)
    models = _models(request)
    status = convert.status_of(row, models.job_of(row.id))
    if status not in ("queued", "running"):
        raise FailedPrecondition(f"{job_id} has already ended (status {status}); there is "
                                 "nothing to cancel.")
    models.cancel(row.id)
    return _job_out(request, models.row(row.id))


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=s.ListOf,
            name="openai.jobs.events")
def list_events(
    job_id: str,
    request: Request,
    principal: Auth,
    after: str | None = None,
    limit: Annotated[int | None, Query()] = None,
) -> s.ListOf:
    """The job's events, newest first: one ``metrics`` event per step with its training
    loss, one per epoch checkpoint, and the start and end."""
    row = _tuned(request, principal, convert.model_id_of_job(job_id), job_id)
    _, have = _epochs_by_last_step(request, row)
    models = _models(request)
    events = convert.events_of(row, models.job_of(row.id), models.snapshots(row.id), have)
    events.reverse()
    return convert.page(events, after, _limit(limit, 20, 10000))


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=s.ListOf,
            name="openai.jobs.checkpoints")
def list_checkpoints(
    job_id: str,
    request: Request,
    principal: Auth,
    after: str | None = None,
    limit: Annotated[int | None, Query()] = None,
) -> s.ListOf:
    """One checkpoint per finished epoch, newest first, each callable as a model."""
    row = _tuned(request, principal, convert.model_id_of_job(job_id), job_id)
    _, have = _epochs_by_last_step(request, row)
    models = _models(request)
    found = convert.checkpoints_of(row, models.snapshots(row.id), have,
                                   models.evaluation(row.id))
    found.reverse()
    return convert.page(found, after, _limit(limit, 10, 1000))


@router.api_route("/fine_tuning/{rest:path}", methods=["GET", "POST", "DELETE"],
                  name="openai.jobs.unsupported")
def unsupported_job_method(rest: str, request: Request, principal: Auth) -> None:
    """The rest of OpenAI's fine-tuning API (pause, resume, alpha graders, permissions):
    answered in OpenAI's shape, saying what tunelab offers instead."""
    raise NotFound(f"{request.method} /fine_tuning/{rest} is not served by tunelab: it offers "
                   "fine_tuning.jobs create, list, retrieve, cancel, list_events and "
                   "checkpoints.list (no pause or resume; see docs/sdks.md).")


# ------------------------------------------------------------------------------- models
def _model_out(name: str, row: TunedModelRow) -> s.Model:
    return s.Model(id=name, created=convert.unix(row.create_time) or 0, owned_by=row.owner)


@router.get("/models", response_model=s.ListOf, name="openai.models.list")
def list_models(request: Request, principal: Auth) -> s.ListOf:
    """The base models, then your fine-tuned models that are ready to call."""
    bases = [s.Model(id=x.id, created=0, owned_by="tunelab")
             for x in list_base_models(request.app.state.settings.extra_models)]
    tuned = [_model_out(convert.model_name(r), r) for r in _visible(request, principal)
             if r.state == "ACTIVE"]
    return s.ListOf(data=bases + tuned)


def _checkpoint_epoch(request: Request, row: TunedModelRow, step: int, name: str) -> int:
    by_step, have = _epochs_by_last_step(request, row)
    epoch = by_step.get(step)
    if epoch is None or epoch not in have:
        raise ModelNotFound(
            f"The model '{name}' does not exist: ftjob-{row.id} has no checkpoint at step "
            f"{step}; list them with GET /v1/fine_tuning/jobs/ftjob-{row.id}/checkpoints.")
    return epoch


@router.get("/models/{model}", response_model=s.Model, name="openai.models.retrieve")
def retrieve_model(model: str, request: Request, principal: Auth) -> s.Model:
    parsed = convert.parse_model(model)
    if parsed is None:
        return s.Model(id=_base_spec(request, model).id, created=0, owned_by="tunelab")
    model_id, step = parsed
    row = _tuned(request, principal, model_id, model)
    if step is not None:
        _checkpoint_epoch(request, row, step, model)
        return _model_out(convert.checkpoint_name(row, step), row)
    if row.state != "ACTIVE":
        raise ModelNotFound(f"The model '{model}' does not exist yet: its job ftjob-{row.id} "
                            "has not succeeded (GET /v1/fine_tuning/jobs/ftjob-"
                            f"{row.id} tells its status).")
    return _model_out(convert.model_name(row), row)


@router.delete("/models/{model}", response_model=s.Deleted, name="openai.models.delete")
def delete_model(model: str, request: Request, principal: Auth) -> s.Deleted:
    """Delete a fine-tuned model: in tunelab the model and its job are one thing, so its job,
    checkpoints and weights go with it."""
    parsed = convert.parse_model(model)
    if parsed is None:
        _base_spec(request, model)
        raise PermissionDenied(f"'{model}' is a base model; only fine-tuned models (ft:…) "
                               "can be deleted.")
    model_id, step = parsed
    row = _tuned(request, principal, model_id, model)
    if step is not None:
        raise OpenAIInvalid(f"'{model}' is a checkpoint; delete its model "
                            f"'{convert.model_name(row)}' (its checkpoints go with it).",
                            "model")
    _models(request).delete(row.id)
    return s.Deleted(id=model, object="model")


# --------------------------------------------------------------------------- generation
class _Target:
    """What a ``model`` name calls: a generator, an adapter (None: the base model), the
    sampling defaults, and the system prompt the model was tuned with."""

    def __init__(self, gen: Any, adapter: Path | None, defaults: tuple, system: str | None,
                 name: str):
        self.gen, self.adapter, self.defaults = gen, adapter, defaults
        self.system, self.name = system, name


def _target(request: Request, principal: Principal, model: str) -> _Target:
    from tunelab.inference import Generator

    pool, models = request.app.state.pool, _models(request)
    parsed = convert.parse_model(model)
    if parsed is None:
        spec = _base_spec(request, model)
        return _Target(pool.generator(spec.name), None,
                       (spec.temperature, spec.top_p, spec.top_k), None, spec.id)
    model_id, step = parsed
    row = _tuned(request, principal, model_id, model, READER)
    defaults = (row.temperature, row.top_p, row.top_k)
    if step is None:
        adapter = models.usable_adapter(row)
        return _Target(pool.generator(row.base_model), adapter, defaults, None,
                       convert.model_name(row))
    epoch = _checkpoint_epoch(request, row, step, model)
    path = models.checkpoint_adapter(row, epoch, model)
    # a checkpoint answers with the system prompt its model was tuned with, as the model does
    system = Generator.system_for(models.adapter_dir(row.id), None)
    return _Target(pool.generator(row.base_model), path, defaults, system,
                   convert.checkpoint_name(row, step))


# Request fields that would change the answer and that tunelab does not honour; refused.
_UNSUPPORTED = {
    "tools": "tool calls", "functions": "function calls", "logprobs": "log probabilities",
    "top_logprobs": "log probabilities", "logit_bias": "logit_bias",
    "frequency_penalty": "penalties", "presence_penalty": "penalties",
    "response_format": "structured output", "audio": "audio output",
    "echo": "echo", "best_of": "best_of", "suffix": "suffix (insertion)",
    "prediction": "predicted outputs",
}
_HARMLESS = {"tool_choice": ("none",), "response_format": ({"type": "text"},),
             "logprobs": (False, None), "frequency_penalty": (0, 0.0),
             "presence_penalty": (0, 0.0), "best_of": (1,), "echo": (False,),
             "logit_bias": ({},), "tools": ([],), "functions": ([],)}


def _refuse_unsupported(body: s._Sampling) -> None:
    for name, value in (body.model_extra or {}).items():
        if name in _UNSUPPORTED and value not in _HARMLESS.get(name, (None,)):
            raise OpenAIInvalid(f"'{name}' is not supported by tunelab ({_UNSUPPORTED[name]}); "
                                "leave it out.", name)


def _config(body: s._Sampling, max_tokens: int | None, defaults: tuple) -> GenerationConfig:
    """The request's sampling settings, the model's own defaults where it is silent."""
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    checks = [
        (body.temperature is not None and not 0 <= body.temperature <= 2, "temperature",
         f"temperature must be from 0 to 2, got {body.temperature}"),
        (body.top_p is not None and not 0 < body.top_p <= 1, "top_p",
         f"top_p must be above 0 and at most 1, got {body.top_p}"),
        (body.n is not None and not 1 <= body.n <= 8, "n", f"n must be from 1 to 8, got {body.n}"),
        (max_tokens is not None and max_tokens < 1, "max_tokens",
         f"max_tokens must be at least 1, got {max_tokens}"),
        (len(stops) > MAX_STOPS, "stop", f"at most {MAX_STOPS} stop sequences, got {len(stops)}"),
        (bool(body.stream) and (body.n or 1) > 1, "n",
         "stream answers one choice; leave n out (or 1) when streaming"),
    ]
    for bad, param, message in checks:
        if bad:
            raise OpenAIInvalid(message + ".", param)
    temperature, top_p, top_k = defaults
    return GenerationConfig(
        temperature=body.temperature if body.temperature is not None else temperature,
        top_p=body.top_p if body.top_p is not None else top_p, top_k=top_k,
        max_output_tokens=max_tokens, stop_sequences=tuple(stops),
        candidate_count=body.n or 1, seed=body.seed)


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "".join(p["text"] for p in content)
    raise OpenAIInvalid(f"{where} has no text; tunelab models read text only (give a string "
                        'or [{"type": "text", "text": "..."}] parts).', where)


def _conversation(messages: list[s.ChatMessage]) -> tuple[list[tuple[str, str]], str | None]:
    """(turns, system prompt): system and developer messages make the system prompt."""
    turns: list[tuple[str, str]] = []
    system: list[str] = []
    for i, m in enumerate(messages):
        text = _text_of(m.content, f"messages[{i}].content")
        if m.role in ("system", "developer"):
            system.append(text)
        elif m.role in ("user", "assistant"):
            turns.append(("user" if m.role == "user" else "model", text))
        else:
            raise OpenAIInvalid(f"messages[{i}].role '{m.role}' is not supported; use system, "
                                "developer, user or assistant.", f"messages[{i}].role")
    if not turns or turns[-1][0] != "user":
        raise OpenAIInvalid("The last message (other than system messages) must be the "
                            "user's: the model answers it.", "messages")
    return turns, "\n\n".join(system) if system else None


_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(make: Callable, shape: Callable[[str, str | None], dict],
                  usage_chunk: Callable[[dict], dict] | None,
                  opening: dict | None) -> StreamingResponse:
    """Server-sent events of a generation: each chunk shaped by ``shape(text, finish)``,
    then the usage chunk (``stream_options.include_usage``) and ``[DONE]``. The first
    chunk is taken before answering, so a bad request is still an HTTP error; an error
    after that is sent as an ``error`` event, which the OpenAI SDKs raise."""
    chunks = _thread_stream(make)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None

    async def events() -> AsyncIterator[str]:
        if opening is not None:
            yield _sse(opening)
        prompt = completion = 0
        pending = [] if first is None else [first]
        try:
            while True:
                chunk = pending.pop() if pending else await chunks.__anext__()
                prompt = chunk.prompt_token_count or prompt
                if chunk.text:
                    yield _sse(shape(chunk.text, None))
                if chunk.finish_reason:
                    completion = chunk.token_count
                    yield _sse(shape("", _FINISH.get(chunk.finish_reason, "stop")))
        except StopAsyncIteration:
            pass
        except TunelabError as e:
            yield _sse(error_body(e.message, e.http_code, None, e.status.lower()))
            return
        if usage_chunk is not None:
            yield _sse(usage_chunk(_usage(prompt, completion)))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/chat/completions", name="openai.chat.completions")
async def chat_completions(body: s.ChatCompletionRequest, request: Request, principal: Auth):
    """Chat with a base model, a fine-tuned model (``ft:…``) or one of its epoch checkpoints
    (``ft:…:ckpt-step-N``); ``stream: true`` answers server-sent events."""
    _refuse_unsupported(body)
    turns, system = _conversation(body.messages)
    target = await run_in_threadpool(_target, request, principal, body.model)
    cfg = _config(body, body.max_completion_tokens or body.max_tokens, target.defaults)
    system = system if system is not None else target.system
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    head = {"id": cid, "created": created, "model": target.name, "system_fingerprint": None}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def shape(text: str, finish: str | None) -> dict:
            delta = {"content": text} if finish is None else {}
            return {**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        return await _stream(
            lambda: target.gen.stream(turns, system, cfg, target.adapter), shape,
            (lambda u: {**head, "object": "chat.completion.chunk", "choices": [],
                        "usage": u}) if include_usage else None,
            {**head, "object": "chat.completion.chunk", "choices": [{
                "index": 0, "delta": {"role": "assistant", "content": ""},
                "finish_reason": None, "logprobs": None}]})
    res = await run_in_threadpool(target.gen.generate, turns, system, cfg, target.adapter)
    return {**head, "object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": c.text, "refusal": None},
         "finish_reason": _FINISH.get(c.finish_reason, "stop"), "logprobs": None}
        for i, c in enumerate(res.candidates)],
        "usage": _usage(res.prompt_token_count, sum(c.token_count for c in res.candidates))}


COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for completions


@router.post("/completions", name="openai.completions")
async def completions(body: s.CompletionRequest, request: Request, principal: Auth):
    """Complete a prompt: the prompt is the user turn (as prompt/completion training data
    was tuned), the completion the model's answer. ``max_tokens`` defaults to 16, as at
    OpenAI; ``stream: true`` answers server-sent events."""
    _refuse_unsupported(body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts or (body.stream and len(prompts) > 1):
        raise OpenAIInvalid("Give one prompt (a string)" + (" when streaming" if prompts
                                                             else "") + ".", "prompt")
    target = await run_in_threadpool(_target, request, principal, body.model)
    cfg = _config(body, body.max_tokens or COMPLETIONS_MAX_TOKENS, target.defaults)
    cid, created = "cmpl-" + secrets.token_hex(12), int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": target.name,
            "system_fingerprint": None}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def shape(text: str, finish: str | None) -> dict:
            return {**head, "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                         "logprobs": None}]}

        return await _stream(
            lambda: target.gen.stream([("user", prompts[0])], target.system, cfg,
                                      target.adapter),
            shape, (lambda u: {**head, "choices": [], "usage": u}) if include_usage else None,
            None)
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for prompt in prompts:
        res = await run_in_threadpool(target.gen.generate, [("user", prompt)], target.system,
                                      cfg, target.adapter)
        prompt_tokens += res.prompt_token_count
        for c in res.candidates:
            completion_tokens += c.token_count
            choices.append({"index": len(choices), "text": c.text, "logprobs": None,
                            "finish_reason": _FINISH.get(c.finish_reason, "stop")})
    return {**head, "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}
