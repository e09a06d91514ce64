"""Every error leaves the service here, in Google's JSON shape:
``{"error": {"code": <http>, "message": "...", "status": "<RPC STATUS>"}}``.

``tunelab.errors.TunelabError`` subclasses carry their own status; request validation
errors become INVALID_ARGUMENT with the field named; unknown routes NOT_FOUND; a method a
path does not have 405 with ``Allow``; anything unexpected INTERNAL without a stack trace
(logged on the server), on a connection that stays usable.

An error answered before the client has sent all of its body (credentials refused first, a
body over the limit) says ``Connection: close``, so the server need not read the rest.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunelab.api.bounds import BODY_KEY
from tunelab.errors import DatasetError, Problem, TunelabError
from tunelab.fsutil import storage_fault

log = logging.getLogger("tunelab.api")

# ``/v1beta/models/X:embedContent`` and other model methods tunelab does not serve
_MODEL_METHOD = re.compile(r"^/(v1|v1beta)/((?:tunedModels|models)/[^/:]+):(\w+)$")
SERVED_METHODS = "generateContent, streamGenerateContent and countTokens"
_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# The OpenAPI document's error answers (``documented_errors``); every operation of the API's
# route class lists the codes ``api/lenient.py:error_codes`` derives for it.
ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA = {
    "title": "Error",
    "description": "Google's error shape, for every error of the API.",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "status"],
        "properties": {
            "code": {"type": "integer", "description": "The HTTP status code."},
            "message": {"type": "string", "description": "What was wrong and what to do."},
            "status": {"type": "string", "description": "The google.rpc code name."},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }},
}
_WHY = {
    400: "INVALID_ARGUMENT (or FAILED_PRECONDITION): a field or parameter is wrong, or the API "
         "key is not valid; the message names it.",
    401: "UNAUTHENTICATED: no credentials, or the token is invalid or expired.",
    403: "PERMISSION_DENIED: an API key where an OAuth token is needed, a token without the "
         "needed scope, or a role on the tuned model that is too low.",
    404: "NOT_FOUND: no such resource, or none you may see.",
    409: "ALREADY_EXISTS: the name is taken.",
    413: "INVALID_ARGUMENT: the request body is over this method's limit (refused unread).",
    429: "RESOURCE_EXHAUSTED: a quota, or too many wrong credentials from this address; see "
         "Retry-After where sent.",
    500: "DATA_LOSS: a stored file of the tuned model (adapter, manifest, checkpoint) is "
         "damaged; the message says what to do.",
    503: "UNAVAILABLE: the generation queue is full, or the server's storage is full or "
         "read-only; retry after Retry-After seconds.",
}


def documented_errors(codes: set[int]) -> dict[str, dict]:
    """OpenAPI responses for the error ``codes``, each with the ``Error`` schema."""
    return {
        str(c): {"description": _WHY[c],
                 "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}
        for c in sorted(codes)
    }


def error_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    err: dict = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def _closing(scope: Scope, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``Connection: close`` when the request's body was not read to its end
    (the client may still be sending it)."""
    out = dict(headers or {})
    body = scope.get(BODY_KEY)
    if body is not None and body.unread:
        out["Connection"] = "close"
    return out


def error_response(exc: TunelabError, scope: Scope | None = None) -> JSONResponse:
    details = getattr(exc, "details", None)  # e.g. google.rpc.ErrorInfo (auth errors)
    if isinstance(exc, DatasetError):
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": violation_field(p), "description": p.message}
                    for p in exc.problems
                ],
            }
        ]
    headers = getattr(exc, "headers", None)  # e.g. Retry-After
    return JSONResponse(
        error_body(exc.http_code, exc.status, exc.message, details), status_code=exc.http_code,
        headers=_closing(scope, headers) if scope is not None else headers,
    )


_WIRE_FIELD = {"text_input": "textInput"}
_COLUMN = {"text_input": "inputColumn", "output": "outputColumn"}


def violation_field(p: Problem) -> str:
    """Where a dataset problem is, as a field path a client can act on without reading the
    message: ``examples[4].output`` (the 5th example, 0-based as in the request), ``examples[4]``
    (the whole example), ``inputColumn`` / ``outputColumn`` (no such column: choose one, as the
    upload's form fields of those names do), else the place it names (the file)."""
    if p.row is not None:
        name = _WIRE_FIELD.get(p.field, p.field)
        return f"examples[{p.row - 1}]" + (f".{name}" if name else "")
    return _COLUMN.get(p.field) or p.field or p.location


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def _json_position(doc: object, pos: object) -> str:
    if not isinstance(doc, str) or not isinstance(pos, int):
        return ""
    line = doc.count("\n", 0, pos) + 1
    return f" (line {line}, column {pos - (doc.rfind(chr(10), 0, pos) + 1) + 1})"


def validation_message(exc: RequestValidationError, method: str = "", path: str = "") -> str:
    msgs = []
    for e in exc.errors():
        where = _loc(tuple(e.get("loc", ())))
        if e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
            msgs.append(f"The request body is empty; {method} {path} needs a JSON object "
                        "(see docs/api.md).")
        elif e.get("type") == "json_invalid":
            loc = tuple(e.get("loc", ()))
            why = (e.get("ctx") or {}).get("error", "not valid JSON")
            msgs.append(f"Invalid JSON payload received. {why}"
                        f"{_json_position(exc.body, loc[1] if len(loc) > 1 else None)}.")
        elif e.get("type") == "extra_forbidden":
            msgs.append(
                f'Invalid JSON payload received. Unknown name "{where.rsplit(".", 1)[-1]}" '
                f"at '{where}': Cannot find field."
            )
        elif e.get("type") == "json_type":
            msgs.append(f"Invalid JSON payload received. {e.get('msg')}: {e.get('ctx', '')}")
        elif e.get("type") == "missing":
            msgs.append(f"Missing required field '{where}'.")
        else:
            msgs.append(f"Invalid value at '{where}': {e.get('msg')}.")
    return " ".join(msgs) or "Invalid request."


class UnexpectedErrors:
    """ASGI middleware (innermost): an exception no handler knows becomes a 500 in the Google
    shape, and is not raised on. Starlette's own last-resort handler sends the same answer but
    then re-raises, and uvicorn closes the connection after logging it, so the client's next
    request on the same keep-alive connection failed too. If the answer had already started
    (a stream), the exception is raised on: closing the connection is the only honest way to
    end a half-sent answer."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            fault = storage_fault(exc)  # a full or read-only disk: retryable, not a bug
            if fault is not None and not started:
                log.warning("storage fault: %s", exc)
                await error_response(fault, scope)(scope, receive, send)
                return
            log.exception("unexpected error")
            if started:
                raise
            body = error_body(500, "INTERNAL", f"Internal error ({type(exc).__name__}); see the "
                              "server log. Retry; if it persists, report it with the time.")
            await JSONResponse(body, status_code=500, headers=_closing(scope))(scope, receive, send)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path`` (several routes may share one
    path, each with its own method, so one route's methods are not the answer)."""
    table = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [
            (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$"),
             sorted(m.upper() for m in ops))
            for p, ops in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = table
    out: set[str] = set()
    for pattern, methods in table:
        if pattern.match(path):
            out.update(methods)
    return sorted(out)


def _either(words: list[str]) -> str:
    if len(words) < 2:
        return words[0] if words else "another path"
    return ", ".join(words[:-1]) + " or " + words[-1]


def install(app: FastAPI) -> None:
    app.add_middleware(UnexpectedErrors)

    @app.exception_handler(TunelabError)
    async def _tunelab(req: Request, exc: TunelabError) -> JSONResponse:
        return error_response(exc, req.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError) -> JSONResponse:
        msg = validation_message(exc, req.method, req.url.path)
        return JSONResponse(error_body(400, "INVALID_ARGUMENT", msg), status_code=400,
                            headers=_closing(req.scope))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.status_code
        status = _HTTP_STATUS.get(code, "UNKNOWN")
        unserved = _MODEL_METHOD.match(req.url.path) if code in (404, 405) else None
        if unserved:
            # what the Gemini API answers for a method a model does not support
            version, model, method = unserved.groups()
            msg = (f"{model} is not found for API version {version}, or is not supported for "
                   f"{method}. tunelab's models support {SERVED_METHODS}; call ListModels to "
                   "see the models and their supportedGenerationMethods.")
            return JSONResponse(error_body(404, "NOT_FOUND", msg), status_code=404)
        headers = dict(exc.headers or {})
        if code == 404 and exc.detail == "Not Found":
            msg = f"Method not found: {req.method} {req.url.path}."
        elif code == 405:
            allowed = allowed_methods(req.app, req.url.path) or [
                m.strip() for m in headers.get("Allow", "").split(",") if m.strip()]
            headers["Allow"] = ", ".join(allowed)
            msg = (f"Method {req.method} is not allowed on {req.url.path}; use "
                   f"{_either(allowed)}.")
        else:
            msg = str(exc.detail)
        return JSONResponse(error_body(code, status, msg), status_code=code,
                            headers=_closing(req.scope, headers))
