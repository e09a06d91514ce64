"""The Studio's server side: its static page, and sign-in/out.

The page is plain HTML + JS modules under ``static/`` and talks to the public REST API
(``/v1beta``) with an OAuth access token, like any client. Signing in runs the OAuth password
grant; the refresh token is kept in an HttpOnly, SameSite=Strict cookie (scripts cannot read
it, other sites cannot send it), and ``GET /studio/session`` trades it for a short-lived access
token that the page's ``api.js`` sends as ``Authorization: Bearer``. State-changing Studio
endpoints also require the ``X-Tunelab-Studio`` header and a same-origin ``Origin``, which a
cross-site form cannot send (a second CSRF guard besides SameSite).

API keys have no endpoint in the Gemini protocol; the Studio manages them with tunelab's public
extension ``/v1beta/apiKeys`` (``api/keys.py``), with the same access token as everything else.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from tunelab.api.deps import client_address
from tunelab.api.errors import error_body
from tunelab.auth.errors import TooManyAttempts
from tunelab.errors import PermissionDenied, Unauthenticated

STATIC = Path(__file__).parent / "static"
COOKIE = "tunelab_studio"
CLIENT_ID = "tunelab-studio"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(include_in_schema=False)


class Login(BaseModel):
    username: str
    password: str


def _accounts(request: Request):
    return request.app.state.accounts


def _same_origin(request: Request) -> None:
    """CSRF guard for POST/DELETE: the custom header and, when sent, a same-origin Origin."""
    if request.headers.get("x-tunelab-studio") != "1":
        raise PermissionDenied("Studio requests must carry the X-Tunelab-Studio header.")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise PermissionDenied("Cross-site request refused.")


def _session_out(accounts, tokens: dict) -> dict:
    caller = accounts.check_access_token(tokens["access_token"])
    user = accounts.get_user(caller.user)
    return {
        "user": {"name": user.name, "displayName": user.name, "email": user.email,
                 # a one-time password: the page asks for a new one before anything else
                 "mustChangePassword": bool(user.must_change_password)},
        "accessToken": tokens["access_token"],
        "expiresIn": tokens.get("expires_in"),
        "authEnabled": True,
    }


def _refresh(request: Request) -> dict:
    from tunelab.auth.accounts import OAuthError

    rt = request.cookies.get(COOKIE)
    if not rt:
        raise Unauthenticated("Not signed in.")
    try:
        return _accounts(request).refresh_grant(rt, None, CLIENT_ID)
    except OAuthError as e:
        raise Unauthenticated(e.description) from None


def _user(request: Request) -> str:
    """The signed-in user, from the session cookie (for the Studio's own endpoints)."""
    accounts = _accounts(request)
    tokens = _refresh(request)
    user = accounts.check_access_token(tokens["access_token"]).user
    accounts.revoke_token(tokens["access_token"])
    return user


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/studio/", status_code=307)


@router.get("/studio")
def studio_no_slash() -> RedirectResponse:
    return RedirectResponse("/studio/", status_code=307)


@router.get("/studio/")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


@router.post("/studio/login")
async def login(body: Login, request: Request) -> JSONResponse:
    from tunelab.auth.accounts import OAuthError

    _same_origin(request)
    accounts = _accounts(request)
    try:
        tokens = await run_in_threadpool(
            accounts.password_grant, body.username, body.password, None, CLIENT_ID,
            address=client_address(request))
    except OAuthError as e:
        raise Unauthenticated(e.description) from None
    except TooManyAttempts as e:  # 429, "Try again in N seconds.", with Retry-After
        return JSONResponse(error_body(e.http_code, e.status, e.message, e.details),
                            status_code=e.http_code, headers={**NO_STORE, **e.headers})
    out = await run_in_threadpool(_session_out, accounts, tokens)
    resp = JSONResponse(out, headers=NO_STORE)
    resp.set_cookie(COOKIE, tokens["refresh_token"], httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/studio")
    return resp


@router.get("/studio/session")
async def session(request: Request) -> JSONResponse:
    """The signed-in user and a fresh access token; ``{"user": null}`` when signed out (a 200,
    so a first visit does not log a failed request in the browser's console)."""
    accounts = _accounts(request)
    try:
        tokens = await run_in_threadpool(_refresh, request)
    except Unauthenticated:
        resp = JSONResponse({"user": None, "authEnabled": True}, headers=NO_STORE)
        if request.cookies.get(COOKIE):
            resp.delete_cookie(COOKIE, path="/studio", httponly=True, samesite="strict")
        return resp
    return JSONResponse(await run_in_threadpool(_session_out, accounts, tokens),
                        headers=NO_STORE)


@router.post("/studio/logout")
async def logout(request: Request) -> JSONResponse:
    _same_origin(request)
    rt = request.cookies.get(COOKIE)
    if rt:
        await run_in_threadpool(_accounts(request).revoke_token, rt)
    resp = JSONResponse({}, headers=NO_STORE)
    resp.delete_cookie(COOKIE, path="/studio", httponly=True, samesite="strict")
    return resp


@router.get("/studio/limits")
def limits(request: Request) -> JSONResponse:
    """The limits and meanings of the fields the Studio's forms edit (display name,
    description, sampling defaults, hyperparameters), from the source the server checks
    against (``tunelab/parameters.py``), and ``datasetFile``: the largest dataset file an
    upload or a preview reads (the bound ``api/bounds.py`` puts on their bodies), so the page
    never re-types them. Public: they are what the API documents."""
    from tunelab.data.parse import MAX_FILE_BYTES
    from tunelab.parameters import studio_limits

    settings = request.app.state.settings
    limits = studio_limits(settings.max_description_chars)
    limits["datasetFile"] = {"maxBytes": MAX_FILE_BYTES,
                             "range": f"at most {MAX_FILE_BYTES / 2**20:g} MB",
                             "description": "The largest training or test data file the "
                                            "server reads; split a larger one."}
    return JSONResponse(limits, headers=NO_STORE)


def mount(app) -> None:
    """Add the Studio to an app: the routes above, the dataset preview and the static files."""
    from tunelab.studio.preview import router as preview_router

    app.include_router(router)
    app.include_router(preview_router)
    app.mount("/studio/static", StaticFiles(directory=STATIC), name="studio-static")
