"""Errors on the OpenAI routes, in OpenAI's shape:
``{"error": {"message": "...", "type": "...", "param": "...", "code": "..."}}``.

The routes raise the same ``TunelabError`` kinds as everywhere else (the tuning service and
the store raise them); only their shape changes here. The OpenAI SDKs pick the exception
class from the HTTP status (``BadRequestError``, ``AuthenticationError``,
``PermissionDeniedError``, ``NotFoundError``, ``RateLimitError``…) and show ``message``;
``param`` names the request field at fault where one is, ``code`` is a stable word a program
can test.
"""

from __future__ import annotations

import logging

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope

from tunelab.api.bounds import BODY_KEY
from tunelab.api.errors import validation_message
from tunelab.auth.errors import ApiKeyInvalid, InvalidToken, MissingCredentials
from tunelab.errors import DatasetError, InvalidArgument, QuotaExceeded, TunelabError
from tunelab.fsutil import storage_fault

log = logging.getLogger("tunelab.api")

# OpenAI's error types by HTTP status; anything else is a server_error.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIInvalid(InvalidArgument):
    """A request field OpenAI's API names (``param``) is wrong: 400 with that ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class ModelNotFound(TunelabError):
    """A ``model`` that is not a base model or a fine-tuned model the caller may use."""

    status = "NOT_FOUND"
    http_code = 404
    code = "model_not_found"
    param = "model"


def error_body(message: str, http_code: int, param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(http_code, "server_error"),
                      "param": param, "code": code}}


def _closing(scope: Scope | None, headers: dict[str, str] | None) -> dict[str, str]:
    """``Connection: close`` when the request's body was not read (credentials refused
    first, a body over the limit), so the server need not read the rest."""
    out = dict(headers or {})
    body = scope.get(BODY_KEY) if scope is not None else None
    if body is not None and body.unread:
        out["Connection"] = "close"
    return out


def _code_of(exc: TunelabError) -> tuple[int, str]:
    """(HTTP status, code word). An unknown or revoked key is 401 here, as OpenAI answers
    it (Google's protocol says 400 API_KEY_INVALID)."""
    if isinstance(exc, ApiKeyInvalid | InvalidToken | MissingCredentials):
        return 401, "invalid_api_key"
    if isinstance(exc, QuotaExceeded):
        return 429, "quota_exceeded"
    if isinstance(exc, DatasetError):
        return 400, "invalid_training_file"
    return exc.http_code, getattr(exc, "code", None) or exc.status.lower()


def openai_error(exc: Exception, scope: Scope | None = None) -> JSONResponse:
    """The OpenAI-shaped answer for any exception a route raised."""
    headers: dict[str, str] | None = None
    if isinstance(exc, TunelabError):
        status, code = _code_of(exc)
        message = exc.message
        if isinstance(exc, ApiKeyInvalid):
            message = ("Incorrect API key provided. Send a tunelab API key or OAuth access "
                       "token as the bearer (the OpenAI SDK's api_key); see docs/sdks.md.")
        elif isinstance(exc, MissingCredentials):
            message = ("You didn't provide an API key. Send 'Authorization: Bearer KEY' with "
                       "a tunelab API key or OAuth access token (the OpenAI SDK's api_key, or "
                       "the OPENAI_API_KEY variable); see docs/sdks.md.")
        body = error_body(message, status, getattr(exc, "param", None), code)
        headers = getattr(exc, "headers", None)  # e.g. Retry-After
    elif isinstance(exc, RequestValidationError):
        status = 400
        first = next(iter(exc.errors()), {})
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        body = error_body(validation_message(exc), 400, ".".join(loc) or None,
                          "invalid_request")
    elif isinstance(exc, HTTPException):  # a body over the limit (api/bounds.py)
        status = exc.status_code
        headers = dict(exc.headers or {})
        body = error_body(str(exc.detail), status, None,
                          "request_too_large" if status == 413 else None)
    else:
        fault = storage_fault(exc)  # a full or read-only disk: retryable, not a bug
        if fault is not None:
            log.warning("storage fault: %s", exc)
            return openai_error(fault, scope)
        log.error("unexpected error", exc_info=exc)
        status = 500
        body = error_body(f"Internal error ({type(exc).__name__}); see the server log. Retry; "
                          "if it persists, report it with the time.", 500, None, "internal")
    return JSONResponse(body, status_code=status, headers=_closing(scope, headers))
