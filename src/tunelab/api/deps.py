"""Dependencies shared by the routes.

``current_principal`` is the seam for authentication (next issue): every route takes
``principal: Principal = Depends(current_principal)`` and passes ``principal.owner`` to the
store, so replacing this one function puts auth in front of every route unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

LOCAL_OWNER = "local"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``owner`` is stored on everything they create."""

    owner: str
    scopes: frozenset[str] = frozenset({"*"})


def current_principal(request: Request) -> Principal:
    """For now: a single local owner (no authentication)."""
    return Principal(owner=LOCAL_OWNER)


def strict_client(request: Request) -> bool:
    """google-api-core's operations client parses Operations strictly (unknown fields are
    errors), so tunelab's extension fields are left out for it. It identifies itself with
    ``gax/`` in ``x-goog-api-client``."""
    return "gax/" in request.headers.get("x-goog-api-client", "")
