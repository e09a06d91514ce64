"""Dependencies shared by the routes.

``current_principal`` puts authentication in front of every route: every route takes
``principal: Principal = Depends(current_principal)``, which checks the caller's credential
against the route's rule in ``auth/rules.py`` (API key allowed? which OAuth scopes?).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from tunelab.auth.principal import Principal

LOCAL_OWNER = "local"
PRINCIPAL_KEY = "tunelab.principal"  # set by the API's route class before the body is read
__all__ = ["LOCAL_OWNER", "Principal", "authorize_request", "current_principal",
           "strict_client"]


def authorize_request(request: Request) -> Principal:
    """The authenticated caller, allowed by the route's rule (else 400/401/403). Blocking:
    it looks the credential up in the store."""
    from tunelab.auth.authenticate import authorize
    from tunelab.auth.rules import rule_for

    return authorize(request, request.app.state.accounts, rule_for(request))


async def current_principal(request: Request) -> Principal:
    """The caller. The API's route class (``api/lenient.py``) has already checked the
    credentials, before reading the body, and left the answer in the scope; a route of
    another class is checked here (fail closed)."""
    principal = request.scope.get(PRINCIPAL_KEY)
    if principal is None:
        principal = await run_in_threadpool(authorize_request, request)
    return principal


def strict_client(request: Request) -> bool:
    """google-api-core's operations client parses Operations strictly (unknown fields are
    errors), so tunelab's extension fields are left out for it. It identifies itself with
    ``gax/`` in ``x-goog-api-client``."""
    return "gax/" in request.headers.get("x-goog-api-client", "")
