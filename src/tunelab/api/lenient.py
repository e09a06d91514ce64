"""The route class of every API router, ``LenientJSONRoute``: what happens to a request
before FastAPI reads its body, in this order.

1. Credentials: a route that depends on ``current_principal`` checks the caller first, so an
   anonymous or unauthorized caller is answered 401/403 before a byte of its body is read
   (or a multipart upload spooled to disk).
2. The body limit: the route's own (``UPLOAD_LIMIT`` for uploads; else the app's
   ``max_request_bytes``), enforced by ``api/bounds.py`` as the body is read.
3. Generation routes take their turn at the ``GenerationGate`` (``api/serving.py``), held until
   the whole answer, streamed or not, is sent.
4. Lenient JSON: Google's front end tolerated trailing commas (its own sample create body has
   ``"epoch_count":5,}``), and curl users often forget ``Content-Type``. Both are repaired
   before FastAPI parses the body, so the schemas (and OpenAPI) stay exact; the parsing, and
   the repair, run in a worker thread (a body of megabytes must not stall the event loop).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from tunelab.api.bounds import BODY_KEY, UPLOAD_HINT, UPLOAD_LIMIT
from tunelab.api.deps import PRINCIPAL_KEY, authorize_request, current_principal
from tunelab.api.errors import documented_errors
from tunelab.api.serving import ReleaseAfter
from tunelab.data.parse import load_json

# Route names (FastAPI's ``name``) with limits or gates of their own.
UPLOAD_ROUTES = frozenset({"upload_file", "preview_dataset"})
GENERATION_ROUTES = frozenset({
    "models.generateContent", "tunedModels.generateContent",
    "models.streamGenerateContent", "tunedModels.streamGenerateContent",
    "vertex.endpoints.generateContent", "vertex.endpoints.streamGenerateContent",
})
# Errors of particular routes, beyond those every route of its kind has (``error_codes``).
ROUTE_ERRORS: dict[str, set[int]] = {
    "create_tuned_model": {404, 409, 429},  # unknown base model or file; id taken; quotas
    "upload_file": {429},  # max_files
    "create_api_key": {429},  # max_api_keys
    "create_permission": {404, 409},  # unknown grantee; already shared with them
    "transfer_ownership": {404},  # unknown new owner
    # a damaged adapter, manifest or checkpoint (DATA_LOSS)
    "tunedModels.generateContent": {500},
    "tunedModels.streamGenerateContent": {500},
    "get_epochs": {500},
    "select_epoch": {500},
    "vertex.createTuningJob": {404, 409, 429},  # as create_tuned_model
    "vertex.endpoints.generateContent": {500},
    "vertex.endpoints.streamGenerateContent": {500},
}


def strip_trailing_commas(text: str) -> str:
    """Remove commas directly before ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_str = esc = False
    pending: list[str] = []  # a comma and the whitespace after it, held back
    for ch in text:
        if in_str:
            out.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if pending:
            if ch.isspace():
                pending.append(ch)
                continue
            if ch in "}]":
                out.extend(pending[1:])
            else:
                out.extend(pending)
            pending = []
        if ch == ",":
            pending = [ch]
            continue
        out.append(ch)
        if ch == '"':
            in_str = True
    out.extend(pending)
    return "".join(out)


def loads_lenient(raw: bytes) -> Any:
    """The JSON value of ``raw``, forgiving trailing commas; else the original error. The
    repair is tried only when the first error is right after a comma: an error anywhere else
    cannot be a trailing comma (one before it would have been the first error), so a large
    invalid body costs one parse, not a repair as well."""
    try:
        return load_json(raw)
    except json.JSONDecodeError as first:
        if not first.doc[:first.pos].rstrip().endswith(","):
            raise
        try:
            return load_json(strip_trailing_commas(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            raise first from None


class LenientJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await run_in_threadpool(loads_lenient, await self.body())
        return self._json


def _guarded(route: APIRoute) -> bool:
    return any(d.call is current_principal for d in route.dependant.dependencies)


def error_codes(route: APIRoute) -> set[int]:
    """The error codes ``route`` can answer, for its OpenAPI entry (the fuzz test checks that
    no other code comes back). 500 is listed only as DATA_LOSS: any other 500 is a bug."""
    codes = set(ROUTE_ERRORS.get(route.name, ()))
    if _guarded(route):
        # bad key; no or bad token; scope or role; throttled; storage full (API keys record
        # their last use, so any call may write)
        codes |= {400, 401, 403, 429, 503}
    if route.param_convertors:
        codes.add(404)
    if route.body_field is not None:
        codes |= {400, 413}
    if route.dependant.query_params:
        codes.add(400)
    return codes


class LenientJSONRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        super().__init__(path, endpoint, **kwargs)
        extra = dict(self.openapi_extra or {})
        extra["responses"] = {**documented_errors(error_codes(self)),
                              **extra.get("responses", {})}
        self.openapi_extra = extra

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        guarded = _guarded(self)
        upload = self.name in UPLOAD_ROUTES
        gated = self.name in GENERATION_ROUTES

        async def lenient_handler(request: Request) -> Response:
            scope = request.scope
            if guarded:
                scope[PRINCIPAL_KEY] = await run_in_threadpool(authorize_request, request)
            body = scope.get(BODY_KEY)
            if upload and body is not None:
                body.limit, body.hint = min(body.limit, UPLOAD_LIMIT), UPLOAD_HINT
            ctype = request.headers.get("content-type", "")
            if request.method in ("POST", "PATCH", "PUT") and (
                not ctype or ctype.startswith("application/x-www-form-urlencoded")
            ):
                # curl -d sends form encoding; a JSON API means JSON.
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                scope = {**scope, "headers": headers}
            lenient = LenientJSONRequest(scope, request.receive)
            if not gated:
                return await handler(lenient)
            slot = await request.app.state.generation_gate.enter()
            try:
                response = await handler(lenient)
            except BaseException:
                slot.release()
                raise
            return ReleaseAfter(response, slot)  # type: ignore[return-value]

        return lenient_handler
