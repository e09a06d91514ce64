"""Dependencies shared by the routes.

``current_principal`` puts authentication in front of every route: every route takes
``principal: Principal = Depends(current_principal)``, which checks the caller's credential
against the route's rule in ``auth/rules.py`` (API key allowed? which OAuth scopes?).
"""

from __future__ import annotations

from fastapi import Request

from tunelab.auth.principal import Principal

LOCAL_OWNER = "local"
__all__ = ["LOCAL_OWNER", "Principal", "current_principal", "strict_client"]


def current_principal(request: Request) -> Principal:
    """The authenticated caller, allowed by the route's rule (else 400/401/403)."""
    from tunelab.auth.authenticate import authorize
    from tunelab.auth.rules import rule_for

    return authorize(request, request.app.state.accounts, rule_for(request))


def strict_client(request: Request) -> bool:
    """google-api-core's operations client parses Operations strictly (unknown fields are
    errors), so tunelab's extension fields are left out for it. It identifies itself with
    ``gax/`` in ``x-goog-api-client``."""
    return "gax/" in request.headers.get("x-goog-api-client", "")
