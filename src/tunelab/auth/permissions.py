"""Roles on tuned models, and sharing them (the Gemini API's ``tunedModels/*/permissions``).

The owner of a model is its ``OWNER``; others get ``READER`` or ``WRITER`` by a permission
(to a user, or ``READER`` to everyone). Someone with no role on a model is told it does not
exist (404), so model ids say nothing to strangers; a role too low is 403 naming the role
needed.
"""

from __future__ import annotations

from tunelab.auth.limits import Limits
from tunelab.auth.rules import OWNER, READER, ROLE_RANK, WRITER
from tunelab.auth.users import Users
from tunelab.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from tunelab.ids import random_id
from tunelab.paging import decode_token, encode_token
from tunelab.store import Page, Store, TunedModelRow
from tunelab.store.permissions import PermissionRecords
from tunelab.store.tables import PermissionRow


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"Tuned model 'tunedModels/{model_id}' was not found. "
        "List your tuned models with GET /v1beta/tunedModels."
    )


def _check_role(role: str) -> None:
    """The roles a permission may grant (OWNER moves by transfer, never by a grant)."""
    if role not in (READER, WRITER):
        raise InvalidArgument("role must be READER or WRITER (OWNER: use "
                              ":transferOwnership).")


class Permissions:
    def __init__(self, store: Store, users: Users, limits: Limits):
        self.store, self.users, self.limits = store, users, limits
        self.records = PermissionRecords(store)

    # -- roles --------------------------------------------------------------------------
    def role_of(self, model: TunedModelRow, user: str) -> str | None:
        if model.owner == user:
            return OWNER
        ranks = self.records.roles_on(model.id, user)
        return max(ranks, key=lambda r: ROLE_RANK[r]) if ranks else None

    def require(self, model_id: str, user: str, need: str) -> TunedModelRow:
        """The model, if ``user`` has at least role ``need`` on it. No role at all → 404 (as if
        it did not exist); a role too low → 403 naming the role needed."""
        model = self.store.find_tuned_model(model_id)
        role = self.role_of(model, user) if model is not None else None
        if model is None or role is None:
            raise _not_found(model_id)
        if ROLE_RANK[role] < ROLE_RANK[need]:
            raise PermissionDenied(
                f"The caller does not have permission: you are a {role} of "
                f"tunedModels/{model_id} and this needs {need}. Ask its owner to share it with "
                f"you as {need}."
            )
        return model

    def list_visible(self, user: str, mode: str, page_size: int, page_token: str | None,
                     text: str | None) -> Page:
        """Tuned models for ``GET /tunedModels``. ``mode``: ``default`` (owned or shared with
        the user), ``owner`` (owned), ``writers``/``readers`` (the user has that role or
        more), ``everyone`` (shared with everyone)."""
        offset = decode_token(page_token)
        rows = self.records.visible_models(user, mode, text, offset, page_size + 1,
                                           writer_roles=(WRITER, OWNER))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    # -- permissions --------------------------------------------------------------------
    def _email_of(self, name: str) -> str:
        """How a permission names a user: their email address, else their name."""
        user = self.users.find_user(name)
        return user.email if user and user.email else name

    def _owner_permission(self, model: TunedModelRow) -> dict:
        return {"name": f"tunedModels/{model.id}/permissions/owner", "granteeType": "USER",
                "emailAddress": self._email_of(model.owner), "role": OWNER}

    def _perm_out(self, row: PermissionRow) -> dict:
        out = {"name": f"tunedModels/{row.tuned_model_id}/permissions/{row.id}",
               "granteeType": row.grantee_type, "role": row.role}
        if row.grantee:
            out["emailAddress"] = self._email_of(row.grantee)
        return out

    def _perm_row(self, model: TunedModelRow, perm_id: str) -> PermissionRow:
        row = self.records.get_permission(perm_id)
        if row is None or row.tuned_model_id != model.id:
            raise NotFound(f"Permission 'tunedModels/{model.id}/permissions/{perm_id}' was not "
                           "found; list them with GET …/permissions.")
        return row

    def list_permissions(self, model: TunedModelRow) -> list[dict]:
        rows = self.records.list_permissions(model.id)
        return [self._owner_permission(model)] + [self._perm_out(r) for r in rows]

    def get_permission(self, model: TunedModelRow, perm_id: str) -> dict:
        if perm_id == "owner":
            return self._owner_permission(model)
        return self._perm_out(self._perm_row(model, perm_id))

    def _grantee(self, model: TunedModelRow, grantee_type: str, email: str | None,
                 role: str) -> str | None:
        """The user a new permission is for (None: everyone), once the request is valid."""
        if grantee_type == "USER":
            if not email:
                raise InvalidArgument("emailAddress is required when granteeType is USER.")
            user = self.users.find_user(email)
            if user is None:
                raise InvalidArgument(
                    f"emailAddress '{email}' is not a tunelab user (give a user name or the "
                    "email address of a user; see `tunelab users list`).")
            if user.name == model.owner:
                raise InvalidArgument(f"'{email}' owns tunedModels/{model.id} already.")
            return user.name
        if grantee_type == "EVERYONE":
            if email:
                raise InvalidArgument("emailAddress must be empty when granteeType is EVERYONE.")
            if role != READER:
                raise InvalidArgument("A model can be shared with EVERYONE as READER only.")
            return None
        if grantee_type == "GROUP":
            raise InvalidArgument("granteeType GROUP is not supported by tunelab; use USER or "
                                  "EVERYONE.")
        raise InvalidArgument("granteeType is required: USER or EVERYONE.")

    def create_permission(self, model: TunedModelRow, grantee_type: str, email: str | None,
                          role: str) -> dict:
        if role == OWNER:
            raise InvalidArgument(
                "role OWNER cannot be granted; use POST "
                f"/v1beta/tunedModels/{model.id}:transferOwnership to change the owner.")
        if role not in (READER, WRITER):
            raise InvalidArgument("role is required: READER or WRITER.")
        grantee = self._grantee(model, grantee_type, email, role)
        row = PermissionRow(id=random_id(12), tuned_model_id=model.id,
                            grantee_type=grantee_type, grantee=grantee, role=role)
        dup = self.records.add_permission(row)
        if dup is not None:
            raise AlreadyExists(
                f"Permission tunedModels/{model.id}/permissions/{dup.id} already grants "
                f"this grantee {dup.role}; PATCH it to change the role.")
        return self._perm_out(row)

    def update_permission(self, model: TunedModelRow, perm_id: str, role: str) -> dict:
        if perm_id == "owner":
            raise FailedPrecondition("The owner's permission cannot be changed; use "
                                     ":transferOwnership.")
        row = self._perm_row(model, perm_id)
        _check_role(role)
        if row.grantee_type == "EVERYONE" and role != READER:
            raise InvalidArgument("A model can be shared with EVERYONE as READER only.")
        self.records.set_role(perm_id, role)
        row.role = role
        return self._perm_out(row)

    def delete_permission(self, model: TunedModelRow, perm_id: str) -> None:
        if perm_id == "owner":
            raise FailedPrecondition("The owner's permission cannot be deleted; transfer "
                                     "ownership or delete the model.")
        self._perm_row(model, perm_id)
        self.records.delete_permission(perm_id)

    def transfer_ownership(self, model: TunedModelRow, email: str) -> None:
        """The new owner gets the model, its operations, job and dataset; the old owner stays
        on as WRITER (as in the Gemini API)."""
        user = self.users.find_user(email or "")
        if user is None or user.disabled:
            raise InvalidArgument(f"emailAddress '{email}' is not a tunelab user.")
        if user.name == model.owner:
            return
        self.limits.check_model_limit(user.name)
        self.records.transfer_ownership(model.id, user.name, PermissionRow(
            id=random_id(12), tuned_model_id=model.id, grantee_type="USER",
            grantee=model.owner, role=WRITER))

    def forget_model(self, model_id: str) -> None:
        """Drop a deleted model's permissions."""
        self.records.delete_permissions_of(model_id)
