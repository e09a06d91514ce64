"""From a request's credentials to a ``Principal``, applying the endpoint's rule.

Order, as Google's front end: a bearer token wins over an API key when both are sent
(google-genai sends its placeholder key along with an ``Authorization`` header); an invalid
key is 400 API_KEY_INVALID, an invalid or expired token 401, no credential 401; then the
rule: an API key where only OAuth is accepted, or a token without a needed scope, is 403.
A client address that sent too many wrong keys or tokens gets 429 with ``Retry-After`` for a
while, whatever it sends (``auth/throttle.py``).

Reading the credentials out of an HTTP request is the API's part (``api/deps.py``).
"""

from __future__ import annotations

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


def authenticate(accounts: Accounts, rule: Rule, *, bearer: str | None, key: str | None,
                 address: str | None, method: str) -> Principal:
    """The caller of endpoint ``method`` (its route name, named in a 403) who sent ``bearer``
    or ``key`` from ``address``, if ``rule`` lets them call it."""
    if not bearer and not key:
        raise MissingCredentials()
    throttle = accounts.credential_throttle
    throttle.check(address)  # an address that sent too many wrong credentials waits first
    try:
        caller = accounts.check_access_token(bearer) if bearer else accounts.check_key(key)
    except (InvalidToken, ApiKeyInvalid):
        throttle.failed(address)
        raise
    if caller.via == "key" and not rule.key:
        raise InsufficientScopes(method)
    if caller.via == "token" and not satisfies(caller.scopes, rule.scopes):
        raise InsufficientScopes(method)
    return Principal(owner=caller.user, scopes=caller.scopes, via=caller.via)
