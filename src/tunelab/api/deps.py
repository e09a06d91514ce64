"""Dependencies shared by the routes.

``current_principal`` puts authentication in front of every route: every route takes
``principal: Principal = Depends(current_principal)``, which checks the caller's credential
against the route's rule in ``auth/rules.py`` (API key allowed? which OAuth scopes?).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from tunelab.auth.accounts import Accounts
from tunelab.auth.authenticate import authenticate
from tunelab.auth.principal import Principal
from tunelab.auth.rules import Rule, rule_named

PRINCIPAL_KEY = "tunelab.principal"  # set by the API's route class before the body is read
__all__ = ["Principal", "authorize", "authorize_request", "client_address", "current_principal",
           "rule_for", "strict_client"]


def credentials_of(request: Request) -> tuple[str | None, str | None]:
    """(bearer token, API key) as sent; either may be None."""
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() or None if auth[:7].lower() == "bearer " else None
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key") or None
    return bearer, key


def client_address(request: Request) -> str | None:
    """The client's address: the peer's, or behind a reverse proxy its ``X-Forwarded-For``
    (uvicorn trusts it from the proxies in ``FORWARDED_ALLOW_IPS``, by default this machine)."""
    return request.client.host if request.client else None


def _route_name(request: Request) -> str:
    return getattr(request.scope.get("route"), "name", "") or ""


def rule_for(request: Request) -> Rule:
    """The rule of the route that matched ``request`` (``auth/rules.py``)."""
    return rule_named(_route_name(request))


def authorize(request: Request, accounts: Accounts, rule: Rule) -> Principal:
    """The caller who sent ``request``, if ``rule`` lets them (else 400/401/403/429)."""
    bearer, key = credentials_of(request)
    return authenticate(accounts, rule, bearer=bearer, key=key,
                        address=client_address(request), method=_route_name(request))


def authorize_request(request: Request) -> Principal:
    """The authenticated caller, allowed by the route's rule (else 400/401/403). Blocking:
    it looks the credential up in the store."""
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
