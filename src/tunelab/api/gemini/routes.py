"""The Gemini tuning protocol's tuned-model routes: create, list, get, update, delete and
cancel tuned models, their operations, and uploaded files. Each translates HTTP ⇄ calls of the
tuned-model service (``models/service.py``); errors are raised as ``TunelabError`` and shaped
in ``api/errors.py``. Base models and generation (``generateContent``, streaming,
``countTokens``) are in ``generation.py``; epochs, evaluations and permissions have their own
modules. Mounted at ``/v1beta`` and ``/v1``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from tunelab.api.bounds import read_upload
from tunelab.api.deps import Principal, current_principal, rule_for, strict_client
from tunelab.api.gemini import convert
from tunelab.api.gemini import schemas as s
from tunelab.api.lenient import LenientJSONRoute
from tunelab.auth.rules import OWNER
from tunelab.errors import InvalidArgument, NotFound
from tunelab.jobs.requests import TuningRequest
from tunelab.models import TunedModels
from tunelab.store import TunedModelRow

router = APIRouter(route_class=LenientJSONRoute)

Auth = Annotated[Principal, Depends(current_principal)]
EXCLUDE_NONE = {"response_model_exclude_none": True}
MUTABLE = {
    "display_name": "display_name",
    "displayname": "display_name",
    "description": "description",
    "temperature": "temperature",
    "top_p": "top_p",
    "topp": "top_p",
    "top_k": "top_k",
    "topk": "top_k",
}


def _models(request: Request) -> TunedModels:
    return request.app.state.models


def _pool(request: Request):
    return request.app.state.pool


def _model(request: Request, principal: Principal, model_id: str) -> TunedModelRow:
    """The tuned model in the path, if the caller has the role the route's rule needs
    (none → 404 as if it did not exist; too low → 403)."""
    return _models(request).get(model_id, principal.owner, rule_for(request).role or OWNER)


def _tuned_model_out(request: Request, row: TunedModelRow) -> s.TunedModel:
    models = _models(request)
    return convert.tuned_model_out(row, models.snapshots(row.id), models.evaluation(row.id))


def _page_size(value: int | None, default: int) -> int:
    if value is None or value <= 0:
        return default
    return min(value, 1000)


# ------------------------------------------------------------------------ tuned models
@router.post("/tunedModels", response_model=s.Operation, tags=["tunedModels"], **EXCLUDE_NONE)
def create_tuned_model(
    body: s.TunedModelIn,
    request: Request,
    principal: Auth,
    tuned_model_id: Annotated[str | None, Query(alias="tunedModelId")] = None,
    tuned_model_id_: Annotated[
        str | None, Query(alias="tuned_model_id", include_in_schema=False)
    ] = None,
) -> s.Operation:
    """Create a tuned model: validates the examples and queues a tuning job; returns the
    long-running Operation ``tunedModels/{id}/operations/{op}``."""
    task = body.tuning_task
    data = task.training_data if task else None
    hp = (task.hyperparameters if task else None) or s.HyperparametersIn()
    examples = None
    if data is not None and data.examples is not None:
        examples = [convert.example_in(e) for e in data.examples.examples]
    vdata = task.validation_data if task else None
    validation = None
    if vdata is not None and vdata.examples is not None:
        validation = [convert.example_in(e) for e in vdata.examples.examples]
    req = TuningRequest(
        owner=principal.owner,
        base_model=body.base_model,
        source_tuned_model=body.tuned_model_source.tuned_model if body.tuned_model_source else None,
        tuned_model_id=tuned_model_id or tuned_model_id_,
        display_name=body.display_name,
        description=body.description,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        examples=examples,
        file=data.file if data is not None else None,
        epoch_count=hp.epoch_count,
        batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        answer_labels=hp.answer_labels,
        validation_examples=validation,
        validation_file=vdata.file if vdata is not None else None,
    )
    submitted = _models(request).create(req, _pool(request).example_token_counter)
    return _operation(request, submitted.operation)


@router.get(
    "/tunedModels", response_model=s.ListTunedModelsResponse, tags=["tunedModels"],
    **EXCLUDE_NONE,
)
def list_tuned_models(
    request: Request,
    principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    filter: Annotated[str | None, Query()] = None,  # noqa: A002
    page_size_: Annotated[int | None, Query(alias="page_size", include_in_schema=False)] = None,
    page_token_: Annotated[str | None, Query(alias="page_token", include_in_schema=False)] = None,
) -> s.ListTunedModelsResponse:
    """Tuned models you own or that are shared with you, newest first. ``filter``: words to
    find in displayName or description, and ``owner:me`` (yours), ``writers:me`` (you may
    change), ``readers:me`` (you may read) or ``readers:everyone`` (shared with everyone;
    excluded otherwise)."""
    words, mode = [], "default"
    modes = {"owner:me": "owner", "writers:me": "writers", "readers:me": "readers",
             "readers:everyone": "everyone"}
    for tok in (filter or "").split():
        if tok.lower() in modes:
            mode = modes[tok.lower()]
            continue
        words.append(tok)
    page = _models(request).list(
        principal.owner, mode, _page_size(page_size or page_size_, 10),
        page_token or page_token_, " ".join(words) or None,
    )
    return s.ListTunedModelsResponse(
        tuned_models=[_tuned_model_out(request, r) for r in page.items] or None,
        next_page_token=page.next_token,
    )


@router.get(
    "/tunedModels/{model_id}", response_model=s.TunedModel, tags=["tunedModels"], **EXCLUDE_NONE
)
def get_tuned_model(model_id: str, request: Request, principal: Auth) -> s.TunedModel:
    return _tuned_model_out(request, _model(request, principal, model_id))


@router.patch(
    "/tunedModels/{model_id}", response_model=s.TunedModel, tags=["tunedModels"], **EXCLUDE_NONE
)
def update_tuned_model(
    model_id: str,
    body: s.TunedModelIn,
    request: Request,
    principal: Auth,
    update_mask: Annotated[str | None, Query(alias="updateMask")] = None,
    update_mask_: Annotated[str | None, Query(alias="update_mask", include_in_schema=False)] = None,
) -> s.TunedModel:
    """Update displayName, description, temperature, topP, topK. Without ``updateMask`` the
    mutable fields present in the body are updated (google-genai sends no mask)."""
    _model(request, principal, model_id)
    mask = update_mask or update_mask_
    if mask:
        paths = [p.strip() for p in mask.split(",") if p.strip()]
    else:
        paths = [f for f in body.model_fields_set if f in MUTABLE.values()]
    fields: dict = {}
    bad = []
    for p in paths:
        key = MUTABLE.get(p.replace("-", "_").lower()) or MUTABLE.get(p.lower())
        if key is None:
            if p in ("reader_project_numbers", "readerProjectNumbers"):
                continue
            bad.append(p)
            continue
        fields[key] = getattr(body, key)
    if bad:
        raise InvalidArgument(
            f"updateMask names fields that cannot be updated: {', '.join(bad)}. Updatable: "
            "displayName, description, temperature, topP, topK."
        )
    return _tuned_model_out(request, _models(request).update(model_id, fields))


@router.delete("/tunedModels/{model_id}", response_model=s.Empty, tags=["tunedModels"])
def delete_tuned_model(model_id: str, request: Request, principal: Auth) -> s.Empty:
    """Delete a tuned model (a job still tuning it stops within one step)."""
    _model(request, principal, model_id)
    _models(request).delete(model_id)
    return s.Empty()


@router.post("/tunedModels/{model_id}:cancel", response_model=s.Empty, tags=["operations"])
def cancel_tuned_model(model_id: str, request: Request, principal: Auth) -> s.Empty:
    """google-genai's ``client.tunings.cancel``: cancel the model's tuning."""
    _model(request, principal, model_id)
    _models(request).cancel(model_id)
    return s.Empty()


# -------------------------------------------------------------------------- operations
def _op_model(request: Request, principal: Principal, model_id: str, op_id: str) -> None:
    """Access to an operation is access to its model; a missing one is reported as such."""
    try:
        _model(request, principal, model_id)
    except NotFound:
        raise NotFound(
            f"Operation 'tunedModels/{model_id}/operations/{op_id}' was not found."
        ) from None


def _operation(request: Request, name: str) -> s.Operation:
    """The caller's access to the operation's model is checked by the route."""
    models = _models(request)
    op = models.operation(name)
    model = models.row(op.tuned_model_id)
    return convert.operation_out(
        op, model, models.snapshots(model.id), models.queue_position(model.id),
        strict_client(request), models.evaluation(model.id),
    )


@router.get(
    "/tunedModels/{model_id}/operations", response_model=s.ListOperationsResponse,
    tags=["operations"], **EXCLUDE_NONE,
)
def list_operations(
    model_id: str,
    request: Request,
    principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    filter: Annotated[str | None, Query(include_in_schema=False)] = None,  # noqa: A002
) -> s.ListOperationsResponse:
    _model(request, principal, model_id)
    page = _models(request).operations(model_id, _page_size(page_size, 10), page_token)
    return s.ListOperationsResponse(
        operations=[_operation(request, op.name) for op in page.items] or None,
        next_page_token=page.next_token,
    )


@router.get(
    "/tunedModels/{model_id}/operations/{op_id}", response_model=s.Operation,
    tags=["operations"], **EXCLUDE_NONE,
)
def get_operation(model_id: str, op_id: str, request: Request, principal: Auth) -> s.Operation:
    _op_model(request, principal, model_id, op_id)
    return _operation(request, f"tunedModels/{model_id}/operations/{op_id}")


@router.post(
    "/tunedModels/{model_id}/operations/{op_id}:cancel", response_model=s.Empty,
    tags=["operations"],
)
def cancel_operation(model_id: str, op_id: str, request: Request, principal: Auth) -> s.Empty:
    """Cancel a tuning operation: it ends ``done`` with ``error.code`` 1 (CANCELLED); the
    model keeps the parameters learned so far (see docs/api.md)."""
    _op_model(request, principal, model_id, op_id)
    _models(request).cancel_operation(f"tunedModels/{model_id}/operations/{op_id}")
    return s.Empty()


# ------------------------------------------------------------------------------- files
@router.post("/files", response_model=s.File, tags=["files"], **EXCLUDE_NONE)
async def upload_file(
    request: Request,
    principal: Auth,
    file: Annotated[UploadFile, File(description="CSV, JSON or JSONL, at most 4 MB.")],
    display_name: Annotated[str | None, Form(alias="displayName")] = None,
    input_column: Annotated[str | None, Form(alias="inputColumn")] = None,
    output_column: Annotated[str | None, Form(alias="outputColumn")] = None,
) -> s.File:
    """tunelab extension: upload training data (multipart/form-data). The file is parsed at
    once (every problem reported); tune on it with ``trainingData: {"file": "files/ID"}``."""
    data = await read_upload(file)
    row = await run_in_threadpool(
        _models(request).upload, principal.owner, data, file.filename or "",
        file.content_type or "", display_name, input_column, output_column,
    )
    return convert.file_out(row)


@router.get("/files", response_model=s.ListFilesResponse, tags=["files"], **EXCLUDE_NONE)
def list_files(
    request: Request,
    principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> s.ListFilesResponse:
    page = _models(request).list_files(principal.owner, _page_size(page_size, 10), page_token)
    return s.ListFilesResponse(files=[convert.file_out(r) for r in page.items] or None,
                               next_page_token=page.next_token)


@router.get("/files/{file_id}", response_model=s.File, tags=["files"], **EXCLUDE_NONE)
def get_file(file_id: str, request: Request, principal: Auth) -> s.File:
    return convert.file_out(_models(request).get_file(file_id, principal.owner))


@router.delete("/files/{file_id}", response_model=s.Empty, tags=["files"])
def delete_file(file_id: str, request: Request, principal: Auth) -> s.Empty:
    _models(request).delete_file(file_id, principal.owner)
    return s.Empty()

