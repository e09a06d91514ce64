"""The FastAPI application: ``create_app(settings)``.

Opening the app opens the store (applying migrations). Base models are loaded lazily, once
per process, by the serving pool. Routes live under ``/v1beta`` and, as aliases, ``/v1``
(google-genai's default version).
"""

from __future__ import annotations

from fastapi import FastAPI

from tunelab import __version__
from tunelab.api import errors
from tunelab.api.export import router as export_router
from tunelab.api.gemini.epochs import router as epochs_router
from tunelab.api.gemini.evaluations import router as evaluations_router
from tunelab.api.gemini.permissions import router as permissions_router
from tunelab.api.gemini.routes import router as gemini_router
from tunelab.api.keys import router as keys_router
from tunelab.api.oauth import router as oauth_router
from tunelab.api.serving import ServingPool
from tunelab.api.vertex import routes as vertex
from tunelab.auth.accounts import Accounts
from tunelab.config import Settings
from tunelab.jobs.service import TuningService
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
    errors.install(app)
    # before the Gemini routes: GET /tunedModels/{id} would take "{id}:export" as an id
    app.include_router(export_router, prefix="/v1beta")
    app.include_router(gemini_router, prefix="/v1beta")
    app.include_router(gemini_router, prefix="/v1")
    app.include_router(permissions_router, prefix="/v1beta")
    app.include_router(keys_router, prefix="/v1beta")
    app.include_router(oauth_router)
    app.include_router(epochs_router, prefix="/v1beta")
    app.include_router(epochs_router, prefix="/v1")
    app.include_router(evaluations_router, prefix="/v1beta")
    for prefix in vertex.PREFIXES:  # google-genai with vertexai=True (api/vertex/)
        app.include_router(vertex.router, prefix=prefix)
    studio.mount(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok"}

    return app
