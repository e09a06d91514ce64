"""Users, API keys, OAuth clients and tokens, permissions and per-user limits: every read
and write of the auth tables, through the store's sessions.

Secrets are created here and returned exactly once; only their hashes are written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update

from tunelab.auth import scopes as sc
from tunelab.auth.errors import ApiKeyInvalid, InvalidToken, QuotaExceeded
from tunelab.auth.rules import OWNER, READER, ROLE_RANK, WRITER
from tunelab.auth.secrets import (
    ACCESS_TOKEN,
    API_KEY,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    UNUSABLE,
    check_password,
    hash_password,
    new_password,
    new_secret,
    token_hash,
)
from tunelab.auth.throttle import CredentialThrottle, SignInGuard
from tunelab.config import Settings
from tunelab.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from tunelab.store import FileRow, JobRow, OperationRow, Page, Store, TunedModelRow
from tunelab.store.repo import (
    decode_token,
    encode_token,
    jobs_limit_exceeded,
    models_limit_exceeded,
)
from tunelab.store.tables import (
    ApiKeyRow,
    OAuthClientRow,
    OAuthTokenRow,
    PermissionRow,
    UserRow,
    utcnow,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
PUBLIC_CLIENT = "tunelab"  # the CLI's and SDKs' client id; public (its secret is not checked)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error of the token endpoint (``invalid_grant``, …)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass
class Caller:
    """A verified credential: the user and what the credential allows."""

    user: str
    scopes: frozenset[str]
    via: str  # key | token


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"Tuned model 'tunedModels/{model_id}' was not found. "
        "List your tuned models with GET /v1beta/tunedModels."
    )


# Tokens expired longer ago than this are deleted (until then an expired access token still
# answers "expired" rather than "invalid"), at most once per PURGE_EVERY per process.
PURGE_AFTER = timedelta(days=1)
PURGE_EVERY = timedelta(minutes=10)


class Accounts:
    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self._last_purge: datetime | None = None
        self.signins = SignInGuard(store, settings)
        self.credential_throttle = CredentialThrottle.of(settings)

    # -- users --------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(UserRow)) > 0

    def add_user(self, name: str, password: str | None = None, *, email: str | None = None,
                 kind: str = "user", is_admin: bool = False) -> tuple[UserRow, str | None]:
        """Create a user; returns (row, the one-time password when none was given)."""
        if not NAME_RE.match(name):
            raise InvalidArgument(
                f"User name '{name}' is not valid: use letters, digits and . _ @ + - "
                "(at most 100 characters), starting with a letter or digit."
            )
        generated = None
        if kind == "user" and password is None:
            password = generated = new_password()
        if password is not None and len(password) < 8:
            raise InvalidArgument("The password is too short: use at least 8 characters.")
        with self.store.session() as s:
            if s.get(UserRow, name) is not None:
                raise AlreadyExists(f"User '{name}' already exists.")
            if email and s.scalar(select(UserRow).where(UserRow.email == email)) is not None:
                raise AlreadyExists(f"Another user has the email address '{email}'.")
            row = UserRow(name=name, email=email or None, kind=kind, is_admin=is_admin,
                          password_hash=hash_password(password) if password else None,
                          disabled=False)
            s.add(row)
        return row, generated

    def get_user(self, name: str) -> UserRow:
        with self.store.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFound(f"User '{name}' was not found; see `tunelab users list`.")
            return row

    def find_user(self, name_or_email: str) -> UserRow | None:
        """A user by name or email address (a Permission's ``emailAddress`` may be either)."""
        with self.store.session() as s:
            return s.get(UserRow, name_or_email) or s.scalar(
                select(UserRow).where(func.lower(UserRow.email) == name_or_email.lower())
            )

    def list_users(self) -> list[UserRow]:
        with self.store.session() as s:
            return list(s.scalars(select(UserRow).order_by(UserRow.create_time)))

    def set_password(self, name: str, password: str) -> None:
        if len(password) < 8:
            raise InvalidArgument("The password is too short: use at least 8 characters.")
        self.get_user(name)
        with self.store.session() as s:
            s.get(UserRow, name).password_hash = hash_password(password)

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable a user: every key and token of theirs stops working at once."""
        self.get_user(name)
        with self.store.session() as s:
            s.get(UserRow, name).disabled = disabled
            if disabled:
                s.execute(update(OAuthTokenRow).where(OAuthTokenRow.user == name)
                          .values(revoked=True))

    def set_limits(self, name: str, max_jobs: int | None, max_models: int | None) -> None:
        self.get_user(name)
        with self.store.session() as s:
            row = s.get(UserRow, name)
            row.max_concurrent_jobs, row.max_tuned_models = max_jobs, max_models

    def _active_user(self, s, name: str) -> UserRow | None:
        row = s.get(UserRow, name)
        return row if row is not None and not row.disabled else None

    # -- API keys -----------------------------------------------------------------------
    def create_key(self, user: str, name: str = "") -> tuple[ApiKeyRow, str]:
        """A new API key; the secret is returned once and only its hash is kept. At most
        ``max_api_keys`` live keys per user (counted under the user's lock, so concurrent
        creates cannot pass it together)."""
        self.get_user(user)
        secret = new_secret(API_KEY)
        row = ApiKeyRow(id=new_secret("")[:10].lower().replace("_", "x").replace("-", "y"),
                        user=user, name=name[:255], key_hash=token_hash(secret), hint=secret[-4:],
                        revoked=False)
        limit = self.settings.max_api_keys
        with self.store.session() as s:
            if limit > 0:
                self.store.lock_owner(s, user)
                n = s.scalar(select(func.count()).select_from(ApiKeyRow)
                             .where(ApiKeyRow.user == user, ApiKeyRow.revoked.is_(False)))
                if n >= limit:
                    raise QuotaExceeded(
                        "max_api_keys",
                        f"Quota exceeded for max_api_keys: user '{user}' has {n} API keys and "
                        f"the limit is {limit}. Revoke a key you no longer use (tunelab keys "
                        "revoke, DELETE /v1beta/apiKeys/ID, or the Studio's keys page), or ask "
                        "the administrator to raise the limit (TUNELAB_MAX_API_KEYS).")
            s.add(row)
        return row, secret

    def list_keys(self, user: str | None) -> list[ApiKeyRow]:
        with self.store.session() as s:
            q = select(ApiKeyRow)
            if user is not None:
                q = q.where(ApiKeyRow.user == user)
            return list(s.scalars(q.order_by(ApiKeyRow.create_time)))

    def revoke_key(self, key_id: str, user: str | None) -> None:
        with self.store.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or (user is not None and row.user != user):
                raise NotFound(f"API key '{key_id}' was not found; list your keys with "
                               "`tunelab keys list` or GET /v1beta/apiKeys.")
            row.revoked = True

    def check_key(self, secret: str) -> Caller:
        now = utcnow()
        with self.store.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == token_hash(secret)))
            if row is None or row.revoked or self._active_user(s, row.user) is None:
                raise ApiKeyInvalid()
            if row.last_used is None or now - row.last_used > timedelta(minutes=1):
                row.last_used = now
            return Caller(row.user, frozenset(), "key")

    # -- OAuth --------------------------------------------------------------------------
    def create_client(self, user: str, scope_text: str | None = None) -> tuple[str, str]:
        """A confidential client for a service account (client_credentials grant): returns
        (client_id, client_secret); the secret is shown once."""
        u = self.get_user(user)
        granted = " ".join(sc.parse(scope_text))
        client_id = f"{u.name}"
        secret = new_secret(CLIENT_SECRET)
        with self.store.session() as s:
            old = s.get(OAuthClientRow, client_id)
            if old is not None:
                s.delete(old)
                s.flush()
            s.add(OAuthClientRow(client_id=client_id, user=u.name,
                                 secret_hash=token_hash(secret), scopes=granted, revoked=False))
        return client_id, secret

    def purge_expired_tokens(self) -> int:
        """Delete tokens that expired over a day ago (refresh tokens outlive their access
        tokens, so no live access token loses its parent); returns how many went."""
        self._last_purge = utcnow()
        with self.store.session() as s:
            gone = s.execute(delete(OAuthTokenRow).where(
                OAuthTokenRow.expires_at < self._last_purge - PURGE_AFTER))
            n = gone.rowcount or 0
        self.signins.purge()
        return n

    def _maybe_purge(self) -> None:
        """Called before a grant opens its session (never inside one: SQLite could refuse the
        grant's write after another connection's)."""
        if self._last_purge is None or utcnow() - self._last_purge > PURGE_EVERY:
            self.purge_expired_tokens()

    def _issue(self, s, user: str, client_id: str, granted: tuple[str, ...],
               refresh: str | None, with_refresh: bool) -> dict:
        now = utcnow()
        access = new_secret(ACCESS_TOKEN)
        out = {"access_token": access, "token_type": "Bearer",
               "expires_in": self.settings.access_token_seconds, "scope": " ".join(granted)}
        parent = refresh
        if with_refresh:
            rt = new_secret(REFRESH_TOKEN)
            parent = token_hash(rt)
            s.add(OAuthTokenRow(
                token_hash=parent, kind="refresh", user=user, client_id=client_id,
                scopes=" ".join(granted), revoked=False,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_seconds)))
            out["refresh_token"] = rt
        s.add(OAuthTokenRow(
            token_hash=token_hash(access), kind="access", user=user, client_id=client_id,
            scopes=" ".join(granted), parent=parent, revoked=False,
            expires_at=now + timedelta(seconds=self.settings.access_token_seconds)))
        return out

    def _scopes(self, text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return sc.parse(text, default)
        except InvalidArgument as e:
            raise OAuthError("invalid_scope", e.message) from None

    def password_grant(self, username: str, password: str, scope_text: str | None,
                       client_id: str, *, address: str | None = None) -> dict:
        """Sign in. Attempts are rate limited per user and per client ``address``
        (``TooManyAttempts``), and an unknown, disabled or password-less user costs one
        password hash like a wrong password does: neither the answer nor its time says
        whether a user name exists."""
        granted = self._scopes(scope_text, sc.DEFAULT)
        self._maybe_purge()
        user = self.find_user(username)
        with self.signins.attempt(f"user:{user.name if user else username}", address):
            usable = user is not None and not user.disabled and user.kind == "user"
            right = check_password(password, user.password_hash if usable else UNUSABLE)
            if not (usable and right):
                raise OAuthError("invalid_grant", "Wrong user name or password.")
        with self.store.session() as s:
            return self._issue(s, user.name, client_id or PUBLIC_CLIENT, granted, None, True)

    def refresh_grant(self, refresh_token: str, scope_text: str | None, client_id: str, *,
                      address: str | None = None) -> dict:
        """A new access token for a refresh token; wrong refresh tokens count against the
        client ``address`` when one is given (the token endpoint's)."""
        self._maybe_purge()
        if address:
            with self.signins.attempt(None, address):
                return self.refresh_grant(refresh_token, scope_text, client_id)
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, token_hash(refresh_token))
            if (row is None or row.kind != "refresh" or row.revoked
                    or (row.expires_at is not None and row.expires_at < utcnow())
                    or self._active_user(s, row.user) is None):
                raise OAuthError("invalid_grant",
                                 "The refresh token is not valid (expired or revoked); sign in "
                                 "again (tunelab login, or the password grant).")
            had = tuple(row.scopes.split())
            granted = self._scopes(scope_text, had)
            if not all(g in had or sc.CLOUD in had for g in granted):
                raise OAuthError("invalid_scope",
                                 "A refreshed token cannot have scopes the refresh token lacks.")
            out = self._issue(s, row.user, row.client_id, granted, row.token_hash, False)
            out["refresh_token"] = refresh_token
            return out

    def client_credentials_grant(self, client_id: str, client_secret: str,
                                 scope_text: str | None, *, address: str | None = None) -> dict:
        self._maybe_purge()
        with self.signins.attempt(f"client:{client_id}", address), self.store.session() as s:
            row = s.get(OAuthClientRow, client_id or "")
            if (row is None or row.revoked or not client_secret
                    or token_hash(client_secret) != row.secret_hash
                    or self._active_user(s, row.user) is None):
                raise OAuthError("invalid_client", "Unknown client or wrong client secret.", 401)
            allowed = tuple(row.scopes.split())
            granted = self._scopes(scope_text, allowed)
            if not all(g in allowed or sc.CLOUD in allowed for g in granted):
                raise OAuthError("invalid_scope", "The client may not have these scopes.")
            return self._issue(s, row.user, client_id, granted, None, False)

    def check_client(self, client_id: str, client_secret: str | None, *,
                     address: str | None = None) -> None:
        """Confidential clients must authenticate (rate limited like sign-ins); the public
        ``tunelab`` client (and any unregistered id, as with an installed app) need not."""
        with self.store.session() as s:
            row = s.get(OAuthClientRow, client_id or "")
        if row is None:
            return
        with self.signins.attempt(f"client:{client_id}", address):
            if not client_secret or token_hash(client_secret) != row.secret_hash:
                raise OAuthError("invalid_client", "Wrong client secret.", 401)

    def check_access_token(self, secret: str) -> Caller:
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, token_hash(secret))
            if row is None or row.kind != "access" or row.revoked:
                raise InvalidToken()
            if self._active_user(s, row.user) is None:
                raise InvalidToken()
            if row.parent is not None:
                parent = s.get(OAuthTokenRow, row.parent)
                if parent is not None and parent.revoked:
                    raise InvalidToken()
            if row.expires_at is not None and row.expires_at < utcnow():
                raise InvalidToken(expired=True)
            return Caller(row.user, frozenset(row.scopes.split()), "token")

    def revoke_token(self, secret: str) -> bool:
        """RFC 7009: revoking a refresh token also ends the access tokens minted from it."""
        h = token_hash(secret)
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, h)
            if row is None:
                return False
            row.revoked = True
            if row.kind == "refresh":
                s.execute(update(OAuthTokenRow).where(OAuthTokenRow.parent == h)
                          .values(revoked=True))
            return True

    # -- roles on tuned models ----------------------------------------------------------
    def role_of(self, model: TunedModelRow, user: str) -> str | None:
        if model.owner == user:
            return OWNER
        with self.store.session() as s:
            rows = s.scalars(select(PermissionRow).where(
                PermissionRow.tuned_model_id == model.id,
                or_(PermissionRow.grantee == user, PermissionRow.grantee_type == "EVERYONE"),
            ))
            ranks = [r.role for r in rows]
        return max(ranks, key=lambda r: ROLE_RANK[r]) if ranks else None

    def require(self, model_id: str, user: str, need: str) -> TunedModelRow:
        """The model, if ``user`` has at least role ``need`` on it. No role at all → 404 (as if
        it did not exist); a role too low → 403 naming the role needed."""
        with self.store.session() as s:
            model = s.get(TunedModelRow, model_id)
        if model is None:
            raise _not_found(model_id)
        role = self.role_of(model, user)
        if role is None:
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
        direct = select(PermissionRow.tuned_model_id).where(PermissionRow.grantee == user)
        if mode == "writers":
            direct = direct.where(PermissionRow.role.in_([WRITER, OWNER]))
        public = select(PermissionRow.tuned_model_id).where(
            PermissionRow.grantee_type == "EVERYONE")
        q = select(TunedModelRow)
        if mode == "owner":
            q = q.where(TunedModelRow.owner == user)
        elif mode == "everyone":
            q = q.where(TunedModelRow.id.in_(public))
        else:
            q = q.where(or_(TunedModelRow.owner == user, TunedModelRow.id.in_(direct)))
        if text:
            like = f"%{text.lower()}%"
            q = q.where(or_(func.lower(TunedModelRow.display_name).like(like),
                            func.lower(TunedModelRow.description).like(like)))
        q = q.order_by(TunedModelRow.create_time.desc(), TunedModelRow.id)
        with self.store.session() as s:
            rows = list(s.scalars(q.offset(offset).limit(page_size + 1)))
        more = len(rows) > page_size
        return Page(rows[:page_size], encode_token(offset + page_size) if more else None)

    # -- permissions --------------------------------------------------------------------
    def _owner_permission(self, model: TunedModelRow) -> dict:
        owner = self.find_user(model.owner)
        return {"name": f"tunedModels/{model.id}/permissions/owner", "granteeType": "USER",
                "emailAddress": (owner.email if owner and owner.email else model.owner),
                "role": OWNER}

    def _perm_out(self, row: PermissionRow) -> dict:
        out = {"name": f"tunedModels/{row.tuned_model_id}/permissions/{row.id}",
               "granteeType": row.grantee_type, "role": row.role}
        if row.grantee:
            u = self.find_user(row.grantee)
            out["emailAddress"] = u.email if u and u.email else row.grantee
        return out

    def list_permissions(self, model: TunedModelRow) -> list[dict]:
        with self.store.session() as s:
            rows = list(s.scalars(select(PermissionRow).where(
                PermissionRow.tuned_model_id == model.id).order_by(PermissionRow.create_time)))
        return [self._owner_permission(model)] + [self._perm_out(r) for r in rows]

    def get_permission(self, model: TunedModelRow, perm_id: str) -> dict:
        if perm_id == "owner":
            return self._owner_permission(model)
        return self._perm_out(self._perm_row(model, perm_id))

    def _perm_row(self, model: TunedModelRow, perm_id: str) -> PermissionRow:
        with self.store.session() as s:
            row = s.get(PermissionRow, perm_id)
        if row is None or row.tuned_model_id != model.id:
            raise NotFound(f"Permission 'tunedModels/{model.id}/permissions/{perm_id}' was not "
                           "found; list them with GET …/permissions.")
        return row

    def create_permission(self, model: TunedModelRow, grantee_type: str, email: str | None,
                          role: str) -> dict:
        if role == OWNER:
            raise InvalidArgument(
                "role OWNER cannot be granted; use POST "
                f"/v1beta/tunedModels/{model.id}:transferOwnership to change the owner.")
        if role not in (READER, WRITER):
            raise InvalidArgument("role is required: READER or WRITER.")
        grantee = None
        if grantee_type == "USER":
            if not email:
                raise InvalidArgument("emailAddress is required when granteeType is USER.")
            user = self.find_user(email)
            if user is None:
                raise InvalidArgument(
                    f"emailAddress '{email}' is not a tunelab user (give a user name or the "
                    "email address of a user; see `tunelab users list`).")
            if user.name == model.owner:
                raise InvalidArgument(f"'{email}' owns tunedModels/{model.id} already.")
            grantee = user.name
        elif grantee_type == "EVERYONE":
            if email:
                raise InvalidArgument("emailAddress must be empty when granteeType is EVERYONE.")
            if role != READER:
                raise InvalidArgument("A model can be shared with EVERYONE as READER only.")
        elif grantee_type == "GROUP":
            raise InvalidArgument("granteeType GROUP is not supported by tunelab; use USER or "
                                  "EVERYONE.")
        else:
            raise InvalidArgument("granteeType is required: USER or EVERYONE.")
        with self.store.session() as s:
            dup = s.scalar(select(PermissionRow).where(
                PermissionRow.tuned_model_id == model.id,
                PermissionRow.grantee_type == grantee_type,
                PermissionRow.grantee == grantee if grantee else PermissionRow.grantee.is_(None)))
            if dup is not None:
                raise AlreadyExists(
                    f"Permission tunedModels/{model.id}/permissions/{dup.id} already grants "
                    f"this grantee {dup.role}; PATCH it to change the role.")
            row = PermissionRow(id=new_secret("")[:12].lower().replace("_", "x").replace("-", "y"),
                                tuned_model_id=model.id, grantee_type=grantee_type,
                                grantee=grantee, role=role)
            s.add(row)
        return self._perm_out(row)

    def update_permission(self, model: TunedModelRow, perm_id: str, role: str) -> dict:
        if perm_id == "owner":
            raise FailedPrecondition("The owner's permission cannot be changed; use "
                                     ":transferOwnership.")
        row = self._perm_row(model, perm_id)
        if role not in (READER, WRITER):
            raise InvalidArgument("role must be READER or WRITER (OWNER: use "
                                  ":transferOwnership).")
        if row.grantee_type == "EVERYONE" and role != READER:
            raise InvalidArgument("A model can be shared with EVERYONE as READER only.")
        with self.store.session() as s:
            s.get(PermissionRow, perm_id).role = role
            row.role = role
        return self._perm_out(row)

    def delete_permission(self, model: TunedModelRow, perm_id: str) -> None:
        if perm_id == "owner":
            raise FailedPrecondition("The owner's permission cannot be deleted; transfer "
                                     "ownership or delete the model.")
        self._perm_row(model, perm_id)
        with self.store.session() as s:
            s.delete(s.get(PermissionRow, perm_id))

    def transfer_ownership(self, model: TunedModelRow, email: str) -> None:
        """The new owner gets the model, its operations, job and dataset; the old owner stays
        on as WRITER (as in the Gemini API)."""
        user = self.find_user(email or "")
        if user is None or user.disabled:
            raise InvalidArgument(f"emailAddress '{email}' is not a tunelab user.")
        if user.name == model.owner:
            return
        old = model.owner
        self.check_model_limit(user.name)
        with self.store.session() as s:
            m = s.get(TunedModelRow, model.id)
            m.owner = user.name
            s.execute(update(OperationRow).where(OperationRow.tuned_model_id == model.id)
                      .values(owner=user.name))
            s.execute(update(JobRow).where(JobRow.tuned_model_id == model.id)
                      .values(owner=user.name))
            if m.dataset_file:
                s.execute(update(FileRow).where(FileRow.id == m.dataset_file)
                          .values(owner=user.name))
            for p in s.scalars(select(PermissionRow).where(
                    PermissionRow.tuned_model_id == model.id,
                    PermissionRow.grantee.in_([user.name, old]))):
                s.delete(p)
            s.flush()
            s.add(PermissionRow(id=new_secret("")[:12].lower().replace("_", "x")
                                .replace("-", "y"), tuned_model_id=model.id,
                                grantee_type="USER", grantee=old, role=WRITER))

    def forget_model(self, model_id: str) -> None:
        """Drop a deleted model's permissions."""
        with self.store.session() as s:
            for p in s.scalars(select(PermissionRow).where(
                    PermissionRow.tuned_model_id == model_id)):
                s.delete(p)

    # -- limits -------------------------------------------------------------------------
    def _limits(self, user: str) -> tuple[int, int]:
        with self.store.session() as s:
            return self.store._user_limits(s, user)

    def check_model_limit(self, user: str) -> None:
        _, max_models = self._limits(user)
        if max_models <= 0:
            return
        with self.store.session() as s:
            n = s.scalar(select(func.count()).select_from(TunedModelRow)
                         .where(TunedModelRow.owner == user))
        if n >= max_models:
            raise models_limit_exceeded(user, n, max_models)

    def check_create_limits(self, user: str) -> None:
        """A quick look before a new tuning job is validated, so a user at a limit hears so
        before their examples are read; the store checks again, atomically, when it adds the
        job (``Store.create_tuned_model``)."""
        max_jobs, _ = self._limits(user)
        if max_jobs > 0:
            with self.store.session() as s:
                n = s.scalar(select(func.count()).select_from(JobRow)
                             .where(JobRow.owner == user, JobRow.state != "done"))
            if n >= max_jobs:
                raise jobs_limit_exceeded(user, n, max_jobs)
        self.check_model_limit(user)
