"""The route class of the OpenAI routes: which protocol a ``/v1`` request speaks, who is
calling, and errors in OpenAI's shape.

Dispatch. ``/v1`` also carries the Gemini routes (aliases of ``/v1beta``), and four paths
exist in both protocols: ``/v1/models``, ``/v1/models/{id}``, ``/v1/files`` and
``/v1/files/{id}``. On those, a request is OpenAI's when it carries no Google sign and one
OpenAI sign (``speaks_openai``):

* Google signs: an ``x-goog-api-key`` header or ``key=`` parameter (google-genai and
  google-generativeai send their key so), or an ``x-goog-api-client`` header (every Google
  SDK sends it, in every mode, OAuth credentials included).
* OpenAI signs: an ``x-stainless-*`` header (sent by every official OpenAI SDK: Python,
  Node, Go, Java, .NET), an ``OpenAI-Organization`` / ``OpenAI-Project`` header, or a
  bearer credential that is a tunelab API key (``tlk_…``): OpenAI clients send their key as
  the bearer, and the Gemini protocol never accepts a key there.

Everything else (curl with an OAuth token, say) keeps the Gemini answer it had before. The
other OpenAI paths (``/v1/fine_tuning/…``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/files/{id}/content``) exist in one protocol only, and ``/openai/v1/…`` serves every
OpenAI route with no dispatch at all, for HTTP clients that send none of these signs.

Credentials. OpenAI clients send one bearer: a tunelab API key (``tlk_…``) counts as an API
key, anything else as an OAuth access token, and the route's ``Rule`` (``RULES`` below, the
same kinds of rule as ``auth/rules.py``) is applied by ``auth.authenticate.authorize``
before the body is read: an API key may list and call models and read jobs, and creating,
cancelling or deleting anything needs an OAuth token with the tuning scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from tunelab.api.bounds import BODY_KEY, UPLOAD_HINT, UPLOAD_LIMIT
from tunelab.api.deps import PRINCIPAL_KEY, authorize
from tunelab.api.lenient import LenientJSONRequest
from tunelab.api.openai.errors import openai_error
from tunelab.api.serving import GenerationSlot, ReleaseAfter
from tunelab.auth.errors import InsufficientScopes
from tunelab.auth.principal import Principal
from tunelab.auth.rules import OWNER, READER, WRITER, Rule
from tunelab.auth.scopes import GL, TUNING, TUNING_RO
from tunelab.auth.secrets import API_KEY
from tunelab.errors import PermissionDenied

# Paths that exist in both protocols under /v1 (route path templates, without the prefix).
CONTESTED = frozenset({"/models", "/models/{model}", "/files", "/files/{file_id}"})
UNAMBIGUOUS_PREFIX = "/openai/v1"
OPENAI_HEADERS = ("openai-organization", "openai-project")

_USE = frozenset({GL, TUNING, TUNING_RO})
_READ = frozenset({TUNING, TUNING_RO})
_WRITE = frozenset({TUNING})

# What each OpenAI route needs, by route name (see auth/rules.py for the fields).
RULES: dict[str, Rule] = {
    "openai.models.list": Rule(True, _USE, None, "list models"),
    "openai.models.retrieve": Rule(True, _USE, READER, "get a model"),
    "openai.models.delete": Rule(False, _WRITE, OWNER, "delete a fine-tuned model"),
    "openai.files.create": Rule(False, _WRITE, None, "upload training data"),
    "openai.files.list": Rule(True, _READ, None, "list your files"),
    "openai.files.retrieve": Rule(True, _READ, None, "get a file"),
    "openai.files.content": Rule(True, _READ, None, "download a file"),
    "openai.files.delete": Rule(False, _WRITE, None, "delete a file"),
    "openai.jobs.create": Rule(False, _WRITE, None, "create a fine-tuning job"),
    "openai.jobs.list": Rule(True, _READ, None, "list fine-tuning jobs"),
    "openai.jobs.retrieve": Rule(True, _READ, READER, "get a fine-tuning job"),
    "openai.jobs.cancel": Rule(False, _WRITE, WRITER, "cancel a fine-tuning job"),
    "openai.jobs.events": Rule(True, _READ, READER, "a job's events"),
    "openai.jobs.checkpoints": Rule(True, _READ, READER, "a job's checkpoints"),
    "openai.jobs.unsupported": Rule(True, _READ, None, "fine-tuning methods not served"),
    "openai.chat.completions": Rule(True, _USE, READER, "chat completions"),
    "openai.completions": Rule(True, _USE, READER, "completions"),
}
STRICTEST = Rule(False, _WRITE, OWNER, "unlisted endpoint")  # fail closed
UPLOAD_ROUTES = frozenset({"openai.files.create"})
GENERATION_ROUTES = frozenset({"openai.chat.completions", "openai.completions"})

_NEEDS_TOKEN = (
    "An API key may list and call models and read fine-tuning jobs and files; creating, "
    "cancelling or deleting fine-tuning jobs, files or models needs an OAuth access token "
    "with the tuning scope as the bearer (get one with `tunelab login` or POST /oauth2/token; "
    "see docs/sdks.md)."
)
_NEEDS_SCOPE = (
    "Your access token lacks the scope this needs ({what}): ask for a token with the tuning "
    "scope (tuning.readonly only reads; see docs/auth.md)."
)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def speaks_openai(scope: Scope) -> bool:
    """Whether a request on a path both protocols have is OpenAI's (see the module doc)."""
    headers = _headers(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    google = ("x-goog-api-key" in headers or "x-goog-api-client" in headers
              or any(p.split("=", 1)[0] == "key" for p in query.split("&")))
    if google:
        return False
    auth = headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return (any(k.startswith("x-stainless-") for k in headers)
            or any(k in headers for k in OPENAI_HEADERS)
            or bearer.startswith(API_KEY))


def _as_tunelab_credentials(request: Request) -> Request:
    """The request as ``authorize`` reads credentials: an API key sent as the bearer (how
    OpenAI clients send theirs) moves to ``x-goog-api-key``."""
    headers = request.scope["headers"]
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not bearer.startswith(API_KEY):
        return request
    moved = [(k, v) for k, v in headers if k not in (b"authorization", b"x-goog-api-key")]
    moved.append((b"x-goog-api-key", bearer.encode("latin-1")))
    return Request({**request.scope, "headers": moved})


def authorize_openai(request: Request) -> Principal:
    """The caller, allowed by the route's rule (blocking: it looks the credential up)."""
    route = request.scope.get("route")
    rule = RULES.get(getattr(route, "name", "") or "", STRICTEST)
    try:
        return authorize(_as_tunelab_credentials(request), request.app.state.accounts, rule)
    except InsufficientScopes:
        key = _as_tunelab_credentials(request) is not request
        error = PermissionDenied(_NEEDS_TOKEN if key else _NEEDS_SCOPE.format(what=rule.what))
        error.code = "insufficient_permissions"  # type: ignore[attr-defined]
        raise error from None


async def openai_principal(request: Request) -> Principal:
    """The caller: checked by ``OpenAIRoute`` before the body was read; a route of another
    class is checked here (fail closed)."""
    principal = request.scope.get(PRINCIPAL_KEY)
    if principal is None:
        principal = await run_in_threadpool(authorize_openai, request)
    return principal


def required_role(request: Request) -> str:
    """The least role on a tuned model the route needs (its rule; OWNER if unlisted)."""
    route = request.scope.get("route")
    return RULES.get(getattr(route, "name", "") or "", STRICTEST).role or OWNER


class OpenAIRoute(APIRoute):
    """Every OpenAI route: matched on a contested path only for OpenAI's requests; the
    caller checked before the body is read; uploads bounded as the Gemini upload is;
    completions take their turn at the generation gate; every error in OpenAI's shape."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        super().__init__(path, endpoint, **kwargs)
        # the router's own path (FastAPI adds the prefix when matching, or to the path)
        self.contested = path.removeprefix(UNAMBIGUOUS_PREFIX).removeprefix("/v1") in CONTESTED

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if (match != Match.NONE and self.contested
                and f"{UNAMBIGUOUS_PREFIX}/" not in scope["path"]
                and not speaks_openai(scope)):
            return Match.NONE, {}  # Gemini's request: the Gemini route matches it next
        return match, child_scope

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        upload = self.name in UPLOAD_ROUTES
        gated = self.name in GENERATION_ROUTES

        async def openai_handler(request: Request) -> Response:
            scope = request.scope
            slot: GenerationSlot | None = None
            try:
                scope[PRINCIPAL_KEY] = await run_in_threadpool(authorize_openai, request)
                body = scope.get(BODY_KEY)
                if upload and body is not None:
                    body.limit, body.hint = min(body.limit, UPLOAD_LIMIT), UPLOAD_HINT
                if gated:
                    slot = await request.app.state.generation_gate.enter()
                response = await handler(LenientJSONRequest(scope, request.receive))
            except Exception as exc:  # noqa: BLE001 - every error leaves in OpenAI's shape
                if slot is not None:
                    slot.release()
                return openai_error(exc, scope)
            except BaseException:  # cancelled (the client went away)
                if slot is not None:
                    slot.release()
                raise
            if slot is not None:
                return ReleaseAfter(response, slot)  # type: ignore[return-value]
            return response

        return openai_handler
