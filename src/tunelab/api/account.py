"""tunelab extension: the signed-in user's own account.

A user created with a one-time password (``tunelab users add`` prints it once) is asked to
choose their own at the next Studio sign-in; this endpoint is how, for the Studio and for any
client. Changing a password is account administration, like managing API keys: an API key can
never call it, only an OAuth token of the user (the tuning scope or ``cloud-platform``). The
current password is asked for, so a token left in a browser is not enough to take the account
over; a wrong one counts as a failed sign-in (rate limited the same way, 429 with Retry-After).

    POST /v1beta/account:changePassword  {"currentPassword", "newPassword"} → Account
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from tunelab.api.deps import Principal, client_address, current_principal
from tunelab.api.gemini.schemas import _In, _Out
from tunelab.api.lenient import LenientJSONRoute
from tunelab.auth.users import MAX_PASSWORD

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]


class Account(_Out):
    name: str = Field(description="The user name, stored as the owner of what they create.")
    email: str | None = None
    must_change_password: bool = Field(
        description="Whether the password is a one-time password the user should replace.")


class ChangePassword(_In):
    current_password: str = Field(max_length=MAX_PASSWORD)
    new_password: str = Field(max_length=MAX_PASSWORD,
                              description="At least 8 characters, other than the current one.")


@router.post("/account:changePassword", response_model=Account, tags=["account"],
             response_model_exclude_none=True, response_model_by_alias=True)
async def change_password(body: ChangePassword, request: Request, principal: Auth) -> Account:
    """tunelab extension: replace your own password (the current one is required). Your
    signed-in sessions stay signed in; a one-time password is no longer asked to be changed."""
    accounts = request.app.state.accounts
    await run_in_threadpool(accounts.change_password, principal.owner, body.current_password,
                            body.new_password, address=client_address(request))
    user = await run_in_threadpool(accounts.get_user, principal.owner)
    return Account(name=user.name, email=user.email,
                   must_change_password=user.must_change_password)
