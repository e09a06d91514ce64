"""Vertex AI's tuning routes, as google-genai calls them with ``vertexai=True``:
``{v1,v1beta1}/projects/{project}/locations/{location}/tuningJobs`` (create, list, get,
``:cancel``) and the tuned model's ``endpoints/{id}:generateContent`` /
``:streamGenerateContent`` / ``:countTokens``.

Each route translates to the calls the Gemini routes make (the tuned-model service,
``models/service.py``: create, get, list, cancel; the same generation functions), so the two
protocols share one set of models, jobs, permissions and scope rules (``auth/rules.py``).
Any project and location work (they only echo back in the names), unless the operator pins
them (``TUNELAB_VERTEX_PROJECT`` / ``TUNELAB_VERTEX_LOCATION``): then another is answered as
Vertex answers a project or location the caller cannot use.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tunelab.api.deps import Principal, current_principal
from tunelab.api.gemini import generation
from tunelab.api.gemini import routes as gemini
from tunelab.api.gemini import schemas as gs
from tunelab.api.lenient import LenientJSONRoute
from tunelab.api.vertex import convert
from tunelab.api.vertex import schemas as v
from tunelab.errors import InvalidArgument, NotFound, PermissionDenied
from tunelab.jobs.requests import TuningRequest
from tunelab.store import TunedModelRow

Auth = Annotated[Principal, Depends(current_principal)]


def served_here(project: str, location: str, request: Request, principal: Auth) -> None:
    """The project and location the operator pinned, if any: another is Vertex's 403 for a
    resource the caller may not use (or that does not exist), saying which this server
    serves. Checked after the credentials, as Vertex does (401 comes first)."""
    settings = request.app.state.settings
    pinned = {"project": settings.vertex_project, "location": settings.vertex_location}
    if all(v is None or v == given for v, given in zip(pinned.values(), (project, location),
                                                         strict=True)):
        return
    serves = " in ".join(f"{k} '{v}'" for k, v in pinned.items() if v is not None)
    client = ", ".join(f"{k}={v!r}" for k, v in pinned.items() if v is not None)
    raise PermissionDenied(
        f"Permission denied on resource '{convert.parent(project, location)}' (or it may not "
        f"exist): this tunelab server serves {serves} only. Create the client with "
        f"genai.Client(vertexai=True, {client}, ...).")


router = APIRouter(route_class=LenientJSONRoute, dependencies=[Depends(served_here)])
EXCLUDE_NONE = {"response_model_exclude_none": True}
TAGS = ["vertex"]


def _job(request: Request, principal: Principal, project: str, location: str,
         job_id: str) -> TunedModelRow:
    """The job's tuned model, if the caller's role on it is what the route's rule needs;
    missing or not theirs is the Vertex resource's 404."""
    try:
        return gemini._model(request, principal, job_id)
    except NotFound:
        raise NotFound(
            f"Tuning job '{convert.parent(project, location)}/tuningJobs/{job_id}' was not "
            f"found. List your tuning jobs with GET …/{convert.parent(project, location)}"
            "/tuningJobs."
        ) from None


def _out(request: Request, row: TunedModelRow, project: str, location: str) -> v.TuningJob:
    models = gemini._models(request)
    job = models.job_of(row.id)
    op = models.operation(job.operation) if job is not None else None
    return convert.tuning_job_out(row, job, op, project, location)


@router.post("/tuningJobs", response_model=v.TuningJob, tags=TAGS, name="vertex.createTuningJob",
             **EXCLUDE_NONE)
def create_tuning_job(project: str, location: str, body: v.TuningJobIn, request: Request,
                      principal: Auth) -> v.TuningJob:
    """Create a tuning job (a tuned model, tuned by the queue's workers) from an uploaded
    dataset ('files/ID') or one in a bucket (gs://, s3://, through the artifact store);
    answers the job, state JOB_STATE_PENDING."""
    spec = body.supervised_tuning_spec or v.SupervisedTuningSpecIn()
    hp = spec.hyper_parameters or v.SupervisedHyperParametersIn()
    unknown = [*(body.model_extra or {}),
               *(f"supervisedTuningSpec.{k}" for k in spec.model_extra or {}),
               *(f"supervisedTuningSpec.hyperParameters.{k}" for k in hp.model_extra or {})]
    if unknown:
        raise InvalidArgument(
            f"tunelab does not support {', '.join(unknown)} in a tuning job: it runs "
            "supervised tuning of a base model (baseModel, tunedModelDisplayName, description, "
            "supervisedTuningSpec with trainingDatasetUri, validationDatasetUri and "
            "hyperParameters epochCount, learningRateMultiplier or learningRate, batchSize, "
            "adapterSize). Leave the others out (docs/sdks.md)."
        )
    if body.pre_tuned_model is not None:
        raise InvalidArgument(
            "Tuning on top of a tuned model (preTunedModel) is not supported yet: give the "
            "base model as baseModel and tune on the earlier examples and the new ones "
            "together."
        )
    lora_rank = convert.adapter_rank(hp.adapter_size)
    training = convert.dataset_file(spec.training_dataset_uri,
                                    "supervisedTuningSpec.trainingDatasetUri")
    if training is None:
        raise InvalidArgument(
            "supervisedTuningSpec.trainingDatasetUri is required: upload the training data "
            "(POST /v1beta/files) and pass its name, e.g. "
            "training_dataset=types.TuningDataset(gcs_uri='files/ID') (docs/sdks.md)."
        )
    req = TuningRequest(
        owner=principal.owner,
        base_model=convert.base_model_name(body.base_model),
        source_tuned_model=None,
        tuned_model_id=None,
        display_name=body.tuned_model_display_name,
        description=body.description,
        temperature=None,
        top_p=None,
        top_k=None,
        examples=None,
        file=training,
        epoch_count=hp.epoch_count,
        batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        validation_file=convert.dataset_file(spec.validation_dataset_uri,
                                             "supervisedTuningSpec.validationDatasetUri"),
        lora_rank=lora_rank,
    )
    models = gemini._models(request)
    submitted = models.create(req, gemini._pool(request).example_token_counter)
    row = models.row(submitted.model_id)
    return _out(request, row, project, location)


@router.get("/tuningJobs", response_model=v.ListTuningJobsResponse, tags=TAGS,
            name="vertex.listTuningJobs", **EXCLUDE_NONE)
def list_tuning_jobs(
    project: str,
    location: str,
    request: Request,
    principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    filter: Annotated[str | None, Query()] = None,  # noqa: A002
) -> v.ListTuningJobsResponse:
    """Tuning jobs of the models you own or that are shared with you, newest first: every
    tuned model, however it was created."""
    if filter:
        raise InvalidArgument(
            f"filter '{filter}' is not supported by tunelab's tuningJobs.list; list without "
            "a filter and select the jobs in your code."
        )
    page = gemini._models(request).list(
        principal.owner, "default", gemini._page_size(page_size, 50), page_token, None)
    return v.ListTuningJobsResponse(
        tuning_jobs=[_out(request, r, project, location) for r in page.items] or None,
        next_page_token=page.next_token,
    )


@router.get("/tuningJobs/{job_id}", response_model=v.TuningJob, tags=TAGS,
            name="vertex.getTuningJob", **EXCLUDE_NONE)
def get_tuning_job(project: str, location: str, job_id: str, request: Request,
                   principal: Auth) -> v.TuningJob:
    return _out(request, _job(request, principal, project, location, job_id), project,
                location)


@router.post("/tuningJobs/{job_id}:cancel", response_model=v.Empty, tags=TAGS,
             name="vertex.cancelTuningJob")
def cancel_tuning_job(project: str, location: str, job_id: str, request: Request,
                      principal: Auth) -> v.Empty:
    """Stop the job within one step; the model keeps the parameters learned so far and the
    job ends JOB_STATE_CANCELLED."""
    _job(request, principal, project, location, job_id)
    gemini._models(request).cancel(job_id)
    return v.Empty()


# ------------------------------------------------------------------ the tuned endpoint
@router.post("/endpoints/{endpoint_id}:generateContent",
             response_model=gs.GenerateContentResponse, tags=TAGS,
             name="vertex.endpoints.generateContent", **EXCLUDE_NONE)
def generate_content(project: str, location: str, endpoint_id: str,
                     body: gs.GenerateContentRequest, request: Request,
                     principal: Auth) -> gs.GenerateContentResponse:
    """Generate with the tuned model (its temperature/topP/topK are the defaults)."""
    return generation._generate("tunedModels", endpoint_id, body, request, principal)


@router.post("/endpoints/{endpoint_id}:streamGenerateContent", tags=TAGS,
             name="vertex.endpoints.streamGenerateContent",
             responses={200: {"content": {"text/event-stream": {
                 "schema": {"$ref": generation.GCR_REF}}},
                 "description": "SSE events with alt=sse, otherwise one streamed JSON array."}})
async def stream_generate_content(
    project: str, location: str, endpoint_id: str, body: gs.GenerateContentRequest,
    request: Request, principal: Auth,
    alt: Annotated[str | None, Query(description="'sse' for server-sent events")] = None,
):
    """Stream a reply: server-sent events with ``alt=sse`` (google-genai), else a JSON
    array."""
    return await generation._stream("tunedModels", endpoint_id, body, request, principal, alt)


@router.post("/endpoints/{endpoint_id}:countTokens", response_model=gs.CountTokensResponse,
             tags=TAGS, name="vertex.endpoints.countTokens")
def count_tokens(project: str, location: str, endpoint_id: str, body: gs.CountTokensRequest,
                 request: Request, principal: Auth) -> gs.CountTokensResponse:
    return generation._count("tunedModels", endpoint_id, body, request, principal)


PREFIXES = ("/v1/projects/{project}/locations/{location}",
            "/v1beta1/projects/{project}/locations/{location}")
