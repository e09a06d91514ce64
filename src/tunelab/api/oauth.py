"""tunelab as its own OAuth 2.0 authorization server (RFC 6749), so Google's client
libraries work with ``Credentials(token_uri=<tunelab>/oauth2/token, …)``.

``POST /oauth2/token`` (form-encoded, as google-auth sends it) with the grants ``password``
(people: CLI, scripts), ``refresh_token`` (google-auth's automatic refresh) and
``client_credentials`` (service accounts). Client credentials may come in the form or as HTTP
Basic. ``POST /oauth2/revoke`` (RFC 7009) ends a token. Errors are RFC 6749 §5.2 JSON
(``{"error": "invalid_grant", "error_description": …}``), which google-auth turns into a
``RefreshError``. Too many attempts (per user or client, and per client address; see
``auth/throttle.py``) are 429 ``{"error": "rate_limit_exceeded", …}`` with ``Retry-After``, in
the same shape (RFC 6749 defines no code for it; this is the one Google's token endpoint uses).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tunelab.api.deps import client_address
from tunelab.auth.accounts import PUBLIC_CLIENT, Accounts, OAuthError
from tunelab.auth.errors import TooManyAttempts

router = APIRouter(tags=["oauth2"])
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object",
            "required": ["grant_type"],
            "properties": {
                "grant_type": {"type": "string",
                               "enum": ["password", "refresh_token", "client_credentials"]},
                "username": {"type": "string"}, "password": {"type": "string"},
                "refresh_token": {"type": "string"}, "scope": {"type": "string"},
                "client_id": {"type": "string"}, "client_secret": {"type": "string"},
            }}}},
    }
}


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def _basic(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(auth[6:].strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    cid, _, secret = raw.partition(":")
    return unquote_plus(cid), unquote_plus(secret)


def _error(e: OAuthError) -> JSONResponse:
    return JSONResponse({"error": e.error, "error_description": e.description},
                        status_code=e.status, headers=NO_STORE)


@router.post("/oauth2/token", openapi_extra=_FORM_DOC)
async def token(request: Request) -> JSONResponse:
    """Issue an access token (and, for ``password``, a refresh token)."""
    accounts: Accounts = request.app.state.accounts
    f = await _form(request)
    basic = _basic(request)
    client_id = basic[0] if basic else f.get("client_id", "")
    client_secret = basic[1] if basic else f.get("client_secret")
    grant = f.get("grant_type", "")
    address = client_address(request)
    try:
        if grant == "password":
            await run_in_threadpool(accounts.check_client, client_id, client_secret,
                                    address=address)
            if not f.get("username") or not f.get("password"):
                raise OAuthError("invalid_request", "username and password are required.")
            out = await run_in_threadpool(accounts.password_grant, f["username"],
                                          f["password"], f.get("scope"),
                                          client_id or PUBLIC_CLIENT, address=address)
        elif grant == "refresh_token":
            await run_in_threadpool(accounts.check_client, client_id, client_secret,
                                    address=address)
            if not f.get("refresh_token"):
                raise OAuthError("invalid_request", "refresh_token is required.")
            out = await run_in_threadpool(accounts.refresh_grant, f["refresh_token"],
                                          f.get("scope"), client_id, address=address)
        elif grant == "client_credentials":
            out = await run_in_threadpool(accounts.client_credentials_grant, client_id,
                                          client_secret or "", f.get("scope"), address=address)
        else:
            raise OAuthError("unsupported_grant_type",
                             "grant_type must be password, refresh_token or client_credentials.")
    except OAuthError as e:
        return _error(e)
    except TooManyAttempts as e:
        return JSONResponse({"error": "rate_limit_exceeded", "error_description": e.message},
                            status_code=429, headers={**NO_STORE, **e.headers})
    return JSONResponse(out, headers=NO_STORE)


@router.post("/oauth2/revoke", openapi_extra={"requestBody": {"content": {
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "token": {"type": "string"}}}}}}})
async def revoke(request: Request) -> JSONResponse:
    """Revoke an access or refresh token (a refresh token takes its access tokens along).
    Answers 200 whether or not the token was known, as RFC 7009 asks."""
    accounts: Accounts = request.app.state.accounts
    f = await _form(request)
    tok = f.get("token") or request.query_params.get("token") or ""
    if tok:
        await run_in_threadpool(accounts.revoke_token, tok)
    return JSONResponse({}, headers=NO_STORE)
