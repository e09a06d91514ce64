"""The Gemini API's base models and generation: list and get the base models, and
``generateContent``, ``streamGenerateContent`` (server-sent events or one JSON array) and
``countTokens`` on a base or a tuned model. A tuned model is reached through the tuned-model
service (``routes.py``'s helpers, with the caller's role); generators come from the serving
pool (``api/serving.py``), whose admission gate the route class applies.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunelab.api.deps import Principal
from tunelab.api.gemini import convert
from tunelab.api.gemini import schemas as s
from tunelab.api.gemini.routes import EXCLUDE_NONE, Auth, _model, _models, _page_size, _pool
from tunelab.api.lenient import LenientJSONRoute
from tunelab.catalog import BaseModelSpec, list_base_models
from tunelab.errors import NotFound
from tunelab.inference.prompt_check import format_note
from tunelab.jobs.base_models import served_base_model
from tunelab.paging import decode_token, encode_token

router = APIRouter(route_class=LenientJSONRoute)
GCR_REF = "#/components/schemas/GenerateContentResponse"


# ------------------------------------------------------------------------------ models
@router.get("/models", response_model=s.ListModelsResponse, tags=["models"], **EXCLUDE_NONE)
def list_models(
    request: Request,
    principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    page_size_: Annotated[int | None, Query(alias="page_size", include_in_schema=False)] = None,
    page_token_: Annotated[str | None, Query(alias="page_token", include_in_schema=False)] = None,
) -> s.ListModelsResponse:
    """The base model catalog (all tunable)."""
    size = _page_size(page_size or page_size_, 50)
    offset = decode_token(page_token or page_token_)
    specs = list_base_models(request.app.state.settings.extra_models)
    page = specs[offset : offset + size]
    more = offset + size < len(specs)
    return s.ListModelsResponse(
        models=[convert.model_out(x) for x in page] or None,
        next_page_token=encode_token(offset + size) if more else None,
    )


@router.get("/models/{model_id}", response_model=s.Model, tags=["models"], **EXCLUDE_NONE)
def get_model(model_id: str, request: Request, principal: Auth) -> s.Model:
    spec = _base_spec(request, model_id)
    return convert.model_out(spec)


def _base_spec(request: Request, model_id: str) -> BaseModelSpec:
    """The server's base model ``models/{model_id}`` (never a server folder)."""
    extra = request.app.state.settings.extra_models
    spec = served_base_model(model_id, extra)
    if spec is None:
        known = ", ".join(x.name for x in list_base_models(extra))
        raise NotFound(f"Model 'models/{model_id}' was not found. Known models: {known}.")
    return spec


# -------------------------------------------------------------------------- generation
def _target(request: Request, kind: str, model_id: str, principal: Principal):
    """(generator, adapter, defaults, model name) for a tuned or a base model."""
    pool = _pool(request)
    if kind == "tunedModels":
        row = _model(request, principal, model_id)
        adapter = _models(request).usable_adapter(row)
        gen = pool.generator(row.base_model)
        return gen, adapter, (row.temperature, row.top_p, row.top_k), f"tunedModels/{row.id}"
    spec = _base_spec(request, model_id)
    gen = pool.generator(spec.name)
    return gen, None, (spec.temperature, spec.top_p, spec.top_k), spec.name


def _usage(prompt: int, candidates: int | None) -> s.UsageMetadata:
    return s.UsageMetadata(
        prompt_token_count=prompt,
        candidates_token_count=candidates,
        total_token_count=prompt + (candidates or 0),
    )


def _format_note(request: Request, adapter, turns) -> s.PromptFormatNote | None:
    """A tuned model's note on a prompt that does not follow its training format, counted in
    the server's stats (``GET /healthz``)."""
    if adapter is None:
        return None
    note = format_note(adapter, turns)
    stats = getattr(request.app.state, "prompt_formats", None)
    if stats is not None:
        stats.record(note is not None)
    return s.PromptFormatNote(follows_training_format=False, message=note) if note else None


def _label_note(replaced: str | None) -> s.LabelNote | None:
    """The note on an answer that replaced a tuned classifier's answer outside its labels."""
    if replaced is None:
        return None
    return s.LabelNote(model_answer=replaced, message=(
        "The model is a classifier tuned on a fixed set of labels, and its own answer was none "
        "of them; the label it finds most likely is answered instead."))


def _generate(kind: str, model_id: str, body: s.GenerateContentRequest, request: Request,
              principal: Principal) -> s.GenerateContentResponse:
    gen, adapter, defaults, name = _target(request, kind, model_id, principal)
    cfg = convert.generation_config(body.generation_config, *defaults)
    turns = convert.turns_of(body.contents)
    res = gen.generate(turns, convert.system_of(body.system_instruction), cfg, adapter)
    n_out = sum(c.token_count for c in res.candidates)
    return s.GenerateContentResponse(
        candidates=[
            s.Candidate(
                content=s.Content(role="model", parts=[s.Part(text=c.text)]),
                finish_reason=c.finish_reason,
                index=i,
                answer_label=_label_note(c.replaced),
            )
            for i, c in enumerate(res.candidates)
        ],
        usage_metadata=_usage(res.prompt_token_count, n_out),
        model_version=name,
        prompt_format=_format_note(request, adapter, turns),
    )


async def _thread_stream(make: Callable[[], Iterator]) -> AsyncIterator:
    """Run a blocking iterator in one dedicated thread (the generator holds the model's lock
    across chunks, so it must stay in one thread) and hand its items to the event loop."""
    q: queue.Queue = queue.Queue()
    loop = asyncio.get_running_loop()

    def work() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(q.put_nowait, ("item", item))
            loop.call_soon_threadsafe(q.put_nowait, ("end", None))
        except BaseException as e:  # noqa: BLE001
            loop.call_soon_threadsafe(q.put_nowait, ("err", e))

    threading.Thread(target=work, daemon=True, name="generate").start()
    while True:
        while q.empty():
            await asyncio.sleep(0.005)
        kind, val = q.get_nowait()
        if kind == "end":
            return
        if kind == "err":
            raise val
        yield val


async def _stream(kind: str, model_id: str, body: s.GenerateContentRequest, request: Request,
                  principal: Principal, alt: str | None):
    gen, adapter, defaults, name = await run_in_threadpool(
        _target, request, kind, model_id, principal
    )
    cfg = convert.generation_config(body.generation_config, *defaults)
    turns = convert.turns_of(body.contents)
    system = convert.system_of(body.system_instruction)
    chunks = _thread_stream(lambda: gen.stream(turns, system, cfg, adapter))
    try:
        first = await chunks.__anext__()  # errors (bad config, prompt too long) as JSON errors
    except StopAsyncIteration:
        first = None
    prompt_tokens = [first.prompt_token_count if first else 0]
    note = _format_note(request, adapter, turns)

    def response(chunk) -> str:
        prompt_tokens[0] = chunk.prompt_token_count or prompt_tokens[0]
        out = s.GenerateContentResponse(
            candidates=[s.Candidate(
                content=s.Content(role="model", parts=[s.Part(text=chunk.text)]),
                finish_reason=chunk.finish_reason,
                index=0,
                answer_label=_label_note(chunk.replaced),
            )],
            usage_metadata=_usage(prompt_tokens[0],
                                  chunk.token_count if chunk.finish_reason else None),
            model_version=name,
            prompt_format=note if chunk.finish_reason else None,  # once, on the last chunk
        )
        return json.dumps(out.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False)

    async def body_iter() -> AsyncIterator[str]:
        items = [] if first is None else [first]

        async def all_chunks():
            for c in items:
                yield c
            async for c in chunks:
                yield c

        if alt == "sse":
            async for c in all_chunks():
                yield f"data: {response(c)}\r\n\r\n"
        else:
            sep = "["
            async for c in all_chunks():
                yield sep + response(c)
                sep = "\n,\r\n"
            yield "]" if sep != "[" else "[]"

    media = "text/event-stream" if alt == "sse" else "application/json"
    return StreamingResponse(body_iter(), media_type=media)


def _count(kind: str, model_id: str, body: s.CountTokensRequest, request: Request,
           principal: Principal) -> s.CountTokensResponse:
    pool = _pool(request)
    adapter = None
    if kind == "tunedModels":
        row = _model(request, principal, model_id)
        gen = pool.generator(row.base_model)
        adapter = _models(request).adapter_dir(row.id)  # its tuned-in system prompt counts
    else:
        gen = pool.generator(_base_spec(request, model_id).name)
    inner = body.generate_content_request
    contents = body.contents or (inner.contents if inner else [])
    system = convert.system_of(inner.system_instruction) if inner else None
    return s.CountTokensResponse(
        total_tokens=gen.count_tokens(convert.turns_of(contents), system, adapter))


for _kind, _tag in (("tunedModels", "tunedModels"), ("models", "models")):

    def _make(kind: str, tag: str) -> None:
        @router.post(
            f"/{kind}/{{model_id}}:generateContent", response_model=s.GenerateContentResponse,
            tags=[tag], name=f"{kind}.generateContent", **EXCLUDE_NONE,
        )
        def generate_content(
            model_id: str, body: s.GenerateContentRequest, request: Request, principal: Auth
        ) -> s.GenerateContentResponse:
            """Generate a reply. A tuned model's temperature/topP/topK are the defaults."""
            return _generate(kind, model_id, body, request, principal)

        @router.post(
            f"/{kind}/{{model_id}}:streamGenerateContent", tags=[tag],
            name=f"{kind}.streamGenerateContent",
            responses={200: {"content": {
                "text/event-stream": {"schema": {"$ref": GCR_REF}},
                "application/json": {"schema": {"type": "array", "items": {"$ref": GCR_REF}}},
            }, "description": "SSE events with alt=sse, otherwise one streamed JSON array."}},
        )
        async def stream_generate_content(
            model_id: str, body: s.GenerateContentRequest, request: Request, principal: Auth,
            alt: Annotated[str | None, Query(description="'sse' for server-sent events")] = None,
        ):
            """Stream a reply: server-sent events with ``alt=sse``, else a JSON array."""
            return await _stream(kind, model_id, body, request, principal, alt)

        @router.post(
            f"/{kind}/{{model_id}}:countTokens", response_model=s.CountTokensResponse,
            tags=[tag], name=f"{kind}.countTokens",
        )
        def count_tokens(
            model_id: str, body: s.CountTokensRequest, request: Request, principal: Auth
        ) -> s.CountTokensResponse:
            """Tokens of the prompt as the model sees it (its template applied)."""
            return _count(kind, model_id, body, request, principal)

    _make(_kind, _tag)
