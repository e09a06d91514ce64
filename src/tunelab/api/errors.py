"""Every error leaves the service here, in Google's JSON shape:
``{"error": {"code": <http>, "message": "...", "status": "<RPC STATUS>"}}``.

``tunelab.errors.TunelabError`` subclasses carry their own status; request validation
errors become INVALID_ARGUMENT with the field named; unknown routes NOT_FOUND; anything
unexpected INTERNAL without a stack trace (logged on the server).
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def error_body(code: int, status: str, message: str, details: list | None = None) -> dict:
    err: dict = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def error_response(exc: TunelabError) -> JSONResponse:
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
    return JSONResponse(
        error_body(exc.http_code, exc.status, exc.message, details), status_code=exc.http_code
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


def validation_message(exc: RequestValidationError) -> str:
    msgs = []
    for e in exc.errors():
        where = _loc(tuple(e.get("loc", ())))
        if e.get("type") == "extra_forbidden":
            msgs.append(
                f'Invalid JSON payload received. Unknown name "{where.rsplit(".", 1)[-1]}" '
                f"at '{where}': Cannot find field."
            )
        elif e.get("type") in ("json_invalid", "json_type"):
            msgs.append(f"Invalid JSON payload received. {e.get('msg')}: {e.get('ctx', '')}")
        elif e.get("type") == "missing":
            msgs.append(f"Missing required field '{where}'.")
        else:
            msgs.append(f"Invalid value at '{where}': {e.get('msg')}.")
    return " ".join(msgs) or "Invalid request."


def install(app: FastAPI) -> None:
    @app.exception_handler(TunelabError)
    async def _tunelab(_req: Request, exc: TunelabError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(400, "INVALID_ARGUMENT", validation_message(exc)), status_code=400
        )

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
        if code == 404 and exc.detail == "Not Found":
            msg = f"Method not found: {req.method} {req.url.path}."
        elif code == 405:
            msg = f"Method {req.method} is not allowed on {req.url.path}."
        else:
            msg = str(exc.detail)
        return JSONResponse(error_body(code, status, msg), status_code=code)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        fault = storage_fault(exc)  # a full or read-only disk: retryable, not a bug
        if fault is not None:
            log.warning("storage fault: %s", exc)
            return error_response(fault)
        log.exception("unexpected error")
        return JSONResponse(
            error_body(500, "INTERNAL", f"Internal error ({type(exc).__name__}); see server log."),
            status_code=500,
        )
