"""The base models a server offers over its APIs: its catalog and the models its operator
registered (``TUNELAB_EXTRA_MODELS``), each named ``models/ID`` (or ``ID``).

A name sent over the wire is looked up among these only. The CLI may also name a local
folder or ``.gguf`` file (``catalog.get_base_model``); a request must not reach the server's
files that way, nor learn whether a folder exists, so every API path that takes a base model
(create, import, evaluate's ``compareWith``, generation) looks it up here.
"""

from __future__ import annotations

from tunelab.catalog import BaseModelSpec, list_base_models
from tunelab.errors import NotFound


def served_base_model(name: str, extra: dict[str, str] | None) -> BaseModelSpec | None:
    """The server's base model named ``name`` ('models/ID' or 'ID'), else None; never a
    path."""
    key = name.removeprefix("models/")
    return next((s for s in list_base_models(extra) if s.id == key), None)


def unknown_base_model(name: str, extra: dict[str, str] | None) -> str:
    """What to say of a base model the server does not have: the ones it has."""
    known = ", ".join(f"models/{s.id}" for s in list_base_models(extra))
    return f"'{name}' is not a base model of this server; give one of {known}"


def require_served_base_model(name: str, extra: dict[str, str] | None) -> BaseModelSpec:
    """The server's base model named ``name``; ``NotFound`` (404) naming the ones it has."""
    spec = served_base_model(name, extra)
    if spec is None:
        raise NotFound(unknown_base_model(name, extra) + ".")
    return spec
