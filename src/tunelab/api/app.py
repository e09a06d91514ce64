"""The FastAPI application: ``create_app(settings)``.

Opening the app opens the store (applying migrations). Base models are loaded lazily, once
per process, by the serving pool. Routes live under ``/v1beta`` and, as aliases, ``/v1``
(google-genai's default version).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tunelab import __version__
from tunelab.api import errors, openai
from tunelab.api.account import router as account_router
from tunelab.api.bounds import BodyLimit
from tunelab.api.export import router as export_router
from tunelab.api.gemini.epochs import router as epochs_router
from tunelab.api.gemini.evaluations import router as evaluations_router
from tunelab.api.gemini.generation import router as generation_router
from tunelab.api.gemini.permissions import router as permissions_router
from tunelab.api.gemini.routes import router as gemini_router
from tunelab.api.keys import router as keys_router
from tunelab.api.oauth import router as oauth_router
from tunelab.api.serving import GenerationGate, ServingPool
from tunelab.api.vertex import routes as vertex
from tunelab.auth.accounts import Accounts
from tunelab.config import Settings
from tunelab.inference.prompt_check import PromptFormatStats
from tunelab.jobs.service import TuningService
from tunelab.models import TunedModels
from tunelab.store import Store
from tunelab.studio import routes as studio


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or Store.open(settings)
    app = FastAPI(
        title="tunelab",
        version=__version__,
        description="Self-hosted LoRA tuning that speaks the Gemini API tuning protocol "
        "(v1beta tunedModels). See docs/api.md.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.tuning = TuningService(settings, store)
    app.state.pool = ServingPool(settings)
    app.state.accounts = Accounts(store, settings)
    # every protocol's routes translate to this one owner of a tuned model's life
    app.state.models = TunedModels(settings, store, app.state.accounts, app.state.tuning)
    app.state.generation_gate = GenerationGate(settings.max_queued_generations)
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # outermost: sees all
    # before the Gemini routes: GET /tunedModels/{id} would take "{id}:export" as an id
    app.include_router(export_router, prefix="/v1beta")
    app.include_router(gemini_router, prefix="/v1beta")
    app.include_router(generation_router, prefix="/v1beta")
    openai.include(app)  # before the Gemini routes under /v1: see api/openai/route.py
    app.include_router(gemini_router, prefix="/v1")
    app.include_router(generation_router, prefix="/v1")
    app.include_router(permissions_router, prefix="/v1beta")
    app.include_router(keys_router, prefix="/v1beta")
    app.include_router(account_router, prefix="/v1beta")
    app.include_router(oauth_router)
    app.include_router(epochs_router, prefix="/v1beta")
    app.include_router(epochs_router, prefix="/v1")
    app.include_router(evaluations_router, prefix="/v1beta")
    for prefix in vertex.PREFIXES:  # google-genai with vertexai=True (api/vertex/)
        app.include_router(vertex.router, prefix=prefix)
    studio.mount(app)

    app.state.prompt_formats = PromptFormatStats()

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        # counts only (no model names): the endpoint needs no credentials
        return {"status": "ok", "promptFormat": app.state.prompt_formats.to_dict()}

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_real_errors(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# OAuth endpoints answer in RFC 6749's shape (api/oauth.py), except a body over the limit.
_OAUTH_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string"}, "error_description": {"type": "string"}}}
_OAUTH_ERRORS = {
    "/oauth2/token": {"400": "invalid_request, invalid_grant, unsupported_grant_type, "
                             "invalid_scope", "401": "invalid_client",
                      "429": "rate_limit_exceeded (see Retry-After)"},
}


def _with_real_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document lists 422 for every operation with parameters; tunelab never sends
    it (validation errors are 400 INVALID_ARGUMENT, as Google's). Each operation lists the
    errors it does send instead: the API's route class adds them (``api/lenient.py``), the
    OAuth endpoints are listed here."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = errors.ERROR_SCHEMA
    schemas["OAuthError"] = _OAUTH_ERROR
    oauth_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if path.startswith("/oauth2/"):
                responses.update(errors.documented_errors({413}))
                for code, what in _OAUTH_ERRORS.get(path, {}).items():
                    responses[code] = {"description": what, "content": oauth_ref}
    return doc
