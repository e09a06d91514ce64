"""``tunedModels.permissions`` and ``tunedModels:transferOwnership``: sharing a tuned model
with a user (by name or email address) or with everyone, as READER or WRITER.

Enums arrive as strings or integers (google-generativeai sends ``"role": 3``); responses use
strings. The owner appears in the list as the permission ``…/permissions/owner``.

tunelab extension: ``GET …/permissions:mine`` answers the permission that gives the caller
access (their own, the one shared with everyone, or the owner's), so a client such as the
Studio can show only the controls the caller's role allows, without probing with calls that
answer 403. Errors a client may want to word itself carry a ``google.rpc.ErrorInfo`` reason:
``ALREADY_SHARED`` (metadata: the existing ``permission`` and its ``role``) and
``USER_NOT_FOUND``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tunelab.api.deps import Principal, current_principal, rule_for
from tunelab.api.gemini.schemas import Empty
from tunelab.api.lenient import LenientJSONRoute
from tunelab.auth.accounts import Accounts
from tunelab.auth.rules import ROLE_RANK
from tunelab.errors import AlreadyExists, InvalidArgument
from tunelab.paging import decode_token, encode_token

router = APIRouter(route_class=LenientJSONRoute)
Auth = Annotated[Principal, Depends(current_principal)]

GRANTEE_TYPES = {0: "GRANTEE_TYPE_UNSPECIFIED", 1: "USER", 2: "GROUP", 3: "EVERYONE"}
ROLES = {0: "ROLE_UNSPECIFIED", 1: "OWNER", 2: "WRITER", 3: "READER"}


def _enum(value: str | int | None, names: dict[int, str], field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        if int(value) not in names:
            raise InvalidArgument(f"Invalid value at '{field}': {value}.")
        return names[int(value)]
    if value.upper() not in names.values():
        raise InvalidArgument(f"Invalid value at '{field}': '{value}'; one of "
                              + ", ".join(list(names.values())[1:]) + ".")
    return value.upper()


class PermissionIn(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, extra="forbid")
    name: str | None = Field(None, description="Output only; ignored.")
    grantee_type: str | int | None = Field(None, description="USER or EVERYONE (or 1, 3).")
    email_address: str | None = Field(None, description="A tunelab user name or email.")
    role: str | int | None = Field(None, description="READER or WRITER (or 3, 2).")


class Permission(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              serialize_by_alias=True)
    name: str
    grantee_type: str
    email_address: str | None = None
    role: str


class ListPermissionsResponse(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              serialize_by_alias=True)
    permissions: list[Permission] | None = None
    next_page_token: str | None = None


class TransferOwnershipRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, extra="forbid")
    email_address: str = Field(description="The new owner: a tunelab user name or email.")


def _ctx(request: Request, principal: Principal, model_id: str):
    accounts: Accounts = request.app.state.accounts
    model = request.app.state.models.get(model_id, principal.owner,
                                         rule_for(request).role or "OWNER")
    return accounts, model


P = "/tunedModels/{model_id}/permissions"
X = {"response_model_exclude_none": True, "tags": ["permissions"]}
DOMAIN = "tunelab"


def _error_info(reason: str, **metadata: str) -> list[dict]:
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
             "domain": DOMAIN, "metadata": metadata}]


def _already_shared(accounts: Accounts, model, grantee_type: str, email: str | None,
                    ) -> AlreadyExists:
    """The 409 for sharing again: names the existing permission and says to change its role
    (in words that fit an API client and the Studio alike)."""
    who = "everyone"
    match = [p for p in accounts.list_permissions(model)[1:] if p["granteeType"] == grantee_type]
    if grantee_type == "USER":
        user = accounts.find_user(email or "")
        who = f"'{email}'"
        ids = {user.name, user.email} if user else {email}
        match = [p for p in match if p.get("emailAddress") in ids]
    if not match:  # removed meanwhile: say it plainly rather than point at nothing
        return AlreadyExists(f"{who} already has access to tunedModels/{model.id}.")
    perm = match[0]
    err = AlreadyExists(
        f"{who} already has access to tunedModels/{model.id} as {perm['role']} (permission "
        f"{perm['name']}). To change the role, update that permission's role instead of "
        "sharing again; to stop sharing, delete it.")
    err.details = _error_info("ALREADY_SHARED", permission=perm["name"], role=perm["role"])
    return err


@router.post(P, response_model=Permission, **X)
def create_permission(model_id: str, body: PermissionIn, request: Request,
                      principal: Auth) -> Permission:
    """Share the model: ``{"granteeType": "USER", "emailAddress": "bob", "role": "READER"}``
    or ``{"granteeType": "EVERYONE", "role": "READER"}``."""
    accounts, model = _ctx(request, principal, model_id)
    grantee_type = _enum(body.grantee_type, GRANTEE_TYPES, "grantee_type") or ""
    email = (body.email_address or "").strip() or None
    if grantee_type == "USER" and email and accounts.find_user(email) is None:
        err = InvalidArgument(
            f"'{email}' is not a user of this tunelab server; check the user name or email "
            "address, or ask an administrator to add the user.")
        err.details = _error_info("USER_NOT_FOUND", emailAddress=email)
        raise err
    try:
        out = accounts.create_permission(model, grantee_type, email,
                                         _enum(body.role, ROLES, "role") or "")
    except AlreadyExists:
        raise _already_shared(accounts, model, grantee_type, email) from None
    return Permission(**out)


@router.get(P + ":mine", response_model=Permission, **X)
def get_own_permission(model_id: str, request: Request, principal: Auth) -> Permission:
    """tunelab extension: the permission that gives the caller access, the strongest one when
    several do (the owner's, the caller's own, or the one shared with everyone)."""
    accounts, model = _ctx(request, principal, model_id)
    perms = accounts.list_permissions(model)
    role = accounts.role_of(model, principal.owner)
    if role == "OWNER":
        return Permission(**perms[0])
    me = accounts.find_user(principal.owner)
    ids = {principal.owner, me.email if me else None}
    mine = [p for p in perms[1:]
            if p["granteeType"] == "EVERYONE" or p.get("emailAddress") in ids]
    return Permission(**max(mine, key=lambda p: ROLE_RANK[p["role"]]))


@router.get(P, response_model=ListPermissionsResponse, **X)
def list_permissions(
    model_id: str, request: Request, principal: Auth,
    page_size: Annotated[int | None, Query(alias="pageSize")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> ListPermissionsResponse:
    accounts, model = _ctx(request, principal, model_id)
    perms = accounts.list_permissions(model)
    offset, size = decode_token(page_token), min(page_size or 10, 1000) if page_size else 10
    page = perms[offset:offset + size]
    return ListPermissionsResponse(
        permissions=[Permission(**p) for p in page] or None,
        next_page_token=encode_token(offset + size) if offset + size < len(perms) else None)


@router.get(P + "/{perm_id}", response_model=Permission, **X)
def get_permission(model_id: str, perm_id: str, request: Request,
                   principal: Auth) -> Permission:
    accounts, model = _ctx(request, principal, model_id)
    return Permission(**accounts.get_permission(model, perm_id))


@router.patch(P + "/{perm_id}", response_model=Permission, **X)
def update_permission(
    model_id: str, perm_id: str, body: PermissionIn, request: Request, principal: Auth,
    update_mask: Annotated[str | None, Query(alias="updateMask")] = None,
) -> Permission:
    """Only ``role`` can change (``updateMask=role``, or no mask)."""
    accounts, model = _ctx(request, principal, model_id)
    if update_mask and {m.strip() for m in update_mask.split(",")} - {"role"}:
        raise InvalidArgument("Only 'role' of a permission can be updated (updateMask=role).")
    return Permission(**accounts.update_permission(model, perm_id,
                                                   _enum(body.role, ROLES, "role") or ""))


@router.delete(P + "/{perm_id}", response_model=Empty, tags=["permissions"])
def delete_permission(model_id: str, perm_id: str, request: Request, principal: Auth) -> Empty:
    accounts, model = _ctx(request, principal, model_id)
    accounts.delete_permission(model, perm_id)
    return Empty()


@router.post("/tunedModels/{model_id}:transferOwnership", response_model=Empty,
             tags=["permissions"])
def transfer_ownership(model_id: str, body: TransferOwnershipRequest, request: Request,
                       principal: Auth) -> Empty:
    """Make another user the owner; you stay on as WRITER."""
    accounts, model = _ctx(request, principal, model_id)
    accounts.transfer_ownership(model, body.email_address)
    return Empty()
