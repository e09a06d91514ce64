"""From a request's credentials to a ``Principal``, applying the endpoint's rule.

Order, as Google's front end: a bearer token wins over an API key when both are sent
(google-genai sends its placeholder key along with an ``Authorization`` header); an invalid
key is 400 API_KEY_INVALID, an invalid or expired token 401, no credential 401; then the
rule: an API key where only OAuth is accepted, or a token without a needed scope, is 403.
A client address that sent too many wrong keys or tokens gets 429 with ``Retry-After`` for a
while, whatever it sends (``auth/throttle.py``).
"""

from __future__ import annotations

from fastapi import Request

from tunelab.auth.accounts import Accounts
from tunelab.auth.errors import (
    ApiKeyInvalid,
    InsufficientScopes,
    InvalidToken,
    MissingCredentials,
)
from tunelab.auth.principal import Principal
from tunelab.auth.rules import Rule
from tunelab.auth.scopes import satisfies


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


def authorize(request: Request, accounts: Accounts, rule: Rule) -> Principal:
    bearer, key = credentials_of(request)
    if not bearer and not key:
        raise MissingCredentials()
    address = client_address(request)
    throttle = accounts.credential_throttle
    throttle.check(address)  # an address that sent too many wrong credentials waits first
    try:
        caller = accounts.check_access_token(bearer) if bearer else accounts.check_key(key)
    except (InvalidToken, ApiKeyInvalid):
        throttle.failed(address)
        raise
    route = request.scope.get("route")
    method = getattr(route, "name", "") or ""
    if caller.via == "key" and not rule.key:
        raise InsufficientScopes(method)
    if caller.via == "token" and not satisfies(caller.scopes, rule.scopes):
        raise InsufficientScopes(method)
    return Principal(owner=caller.user, scopes=caller.scopes, via=caller.via)
