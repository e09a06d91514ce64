"""tunelab extension: API keys of the signed-in user, over the public REST API.

The Gemini protocol has no endpoint for keys (Google manages them in its console), but a
self-hosted service needs one that every client can use: the Studio's keys page, scripts and
``curl``. Managing credentials is account administration, so an API key can never call these
(403 "Request had insufficient authentication scopes."): only an OAuth token with the tuning
scope (or ``cloud-platform``) can. Secrets are returned once, at creation; only hashes are kept.

    GET    /v1beta/apiKeys          → {"apiKeys": [ApiKey]}   (revoked keys are left out)
    POST   /v1beta/apiKeys          {"displayName": "…"} → ApiKey with "keyString", once
    DELETE /v1beta/apiKeys/{id}     → {}                      (revokes; calls with it get 400)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from tunelab.api.deps import Principal, current_principal
from tunelab.api.gemini.schemas import _In, _Out
from tunelab.api.lenient import LenientJSONRoute
from tunelab.errors import InvalidArgument

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]
MAX_NAME = 100


class ApiKey(_Out):
    name: str = Field(description="apiKeys/{id}")
    display_name: str = ""
    key_hint: str = Field(description="The key's last 4 characters, to recognise it.")
    create_time: str | None = None
    last_use_time: str | None = Field(None, description="Updated at most once a minute.")
    key_string: str | None = Field(
        None, description="The secret; only in the answer that creates the key.")


class ApiKeyList(_Out):
    api_keys: list[ApiKey] | None = Field(
        None, description="Left out when there is none, as Google's list answers do.")


class NewApiKey(_In):
    display_name: str = Field("", description=f"What the key is for (at most {MAX_NAME} "
                              "characters).")


def _out(row, secret: str | None = None) -> ApiKey:
    from tunelab.api.gemini.convert import ts

    return ApiKey(name=f"apiKeys/{row.id}", display_name=row.name, key_hint=row.hint,
                  create_time=ts(row.create_time), last_use_time=ts(row.last_used),
                  key_string=secret)


@router.get("/apiKeys", response_model=ApiKeyList, tags=["apiKeys"],
            response_model_exclude_none=True, response_model_by_alias=True)
async def list_api_keys(request: Request, principal: Auth) -> ApiKeyList:
    """tunelab extension: your API keys that are not revoked (secrets are never shown again)."""
    rows = await run_in_threadpool(request.app.state.accounts.list_keys, principal.owner)
    return ApiKeyList(api_keys=[_out(r) for r in rows if not r.revoked] or None)


@router.post("/apiKeys", response_model=ApiKey, tags=["apiKeys"],
             response_model_exclude_none=True, response_model_by_alias=True)
async def create_api_key(body: NewApiKey, request: Request, principal: Auth) -> ApiKey:
    """tunelab extension: a new API key for your account; ``keyString`` is shown only here."""
    name = body.display_name.strip()
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"displayName is {len(name)} characters long; use at most "
                              f"{MAX_NAME}.")
    row, secret = await run_in_threadpool(request.app.state.accounts.create_key,
                                          principal.owner, name)
    return _out(row, secret)


@router.delete("/apiKeys/{key_id}", tags=["apiKeys"])
async def delete_api_key(key_id: str, request: Request, principal: Auth) -> dict:
    """tunelab extension: revoke one of your API keys; calls with it fail from now on."""
    await run_in_threadpool(request.app.state.accounts.revoke_key, key_id, principal.owner)
    return {}
