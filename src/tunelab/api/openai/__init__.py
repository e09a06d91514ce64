"""The OpenAI fine-tuning API, a second protocol over the same tuning service: files,
fine-tuning jobs, models, chat completions and completions under ``/v1`` (where OpenAI's SDKs
look), and under ``/openai/v1`` for HTTP clients that send no OpenAI sign (see ``route.py``
for how a ``/v1`` request is told to be OpenAI's or Gemini's).

The routes are left out of tunelab's OpenAPI document, which describes the Gemini protocol
and its error shape; OpenAI's own API reference describes these.
"""

from __future__ import annotations

from fastapi import FastAPI

PREFIXES = ("/v1", "/openai/v1")  # see route.py: UNAMBIGUOUS_PREFIX


def include(app: FastAPI) -> None:
    """Add the OpenAI routes; called before the Gemini routes are added under ``/v1``, so
    that on the paths both have, an OpenAI request is matched here first."""
    from tunelab.api.openai.routes import router

    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix, include_in_schema=False)
