"""``Accounts``: the one object the API, the Studio and the CLI hold for every auth rule.

Each concept has its own module, and ``Accounts`` only puts them together and passes calls on:

- ``auth/users.py``       users: names, passwords, email addresses, disabling
- ``auth/api_keys.py``    API keys: create (capped per user), list, revoke, check
- ``auth/tokens.py``      OAuth clients and tokens: the grants, checking and revoking tokens
- ``auth/permissions.py`` roles on tuned models, sharing, transferring ownership
- ``auth/limits.py``      per-user limits on tuning jobs and tuned models
- ``auth/throttle.py``    rate limits on guessing secrets

None of them touches SQL: the rows are read and written by ``store/accounts.py`` and
``store/permissions.py``.
"""

from __future__ import annotations

from tunelab.auth.api_keys import ApiKeys
from tunelab.auth.limits import Limits
from tunelab.auth.permissions import Permissions
from tunelab.auth.principal import Caller
from tunelab.auth.throttle import CredentialThrottle, SignInGuard
from tunelab.auth.tokens import PUBLIC_CLIENT, OAuthError, OAuthTokens
from tunelab.auth.users import Users
from tunelab.config import Settings
from tunelab.store import Page, Store, TunedModelRow
from tunelab.store.accounts import AccountRecords
from tunelab.store.tables import ApiKeyRow, UserRow

__all__ = ["PUBLIC_CLIENT", "Accounts", "OAuthError"]


class Accounts:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        records = AccountRecords(store)
        self.users = Users(records)
        self.limits = Limits(records)
        self.signins = SignInGuard(records, settings)
        self.credential_throttle = CredentialThrottle.of(settings)
        self.keys = ApiKeys(records, self.users, settings.max_api_keys)
        self.tokens = OAuthTokens(records, self.users, self.signins, settings)
        self.permissions = Permissions(store, self.users, self.limits)

    # -- users (auth/users.py) ----------------------------------------------------------
    def has_users(self) -> bool:
        return self.users.has_users()

    def add_user(self, name: str, password: str | None = None, *, email: str | None = None,
                 kind: str = "user") -> tuple[UserRow, str | None]:
        return self.users.add_user(name, password, email=email, kind=kind)

    def get_user(self, name: str) -> UserRow:
        return self.users.get_user(name)

    def find_user(self, name_or_email: str) -> UserRow | None:
        return self.users.find_user(name_or_email)

    def list_users(self) -> list[UserRow]:
        return self.users.list_users()

    def set_password(self, name: str, password: str) -> None:
        self.users.set_password(name, password)

    def change_password(self, name: str, current: str, new: str, *,
                        address: str | None = None) -> None:
        """A user's own change of password; a wrong current password counts as a failed
        sign-in (rate limited like one), so a stolen access token cannot guess it. A new
        password that breaks the rules is refused first, without counting an attempt."""
        self.users.check_new_password(new)
        with self.signins.attempt(f"user:{name}", address):
            self.users.change_password(name, current, new)

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        self.users.set_disabled(name, disabled)

    def set_limits(self, name: str, max_jobs: int | None, max_models: int | None) -> None:
        self.users.set_limits(name, max_jobs, max_models)

    # -- API keys (auth/api_keys.py) ----------------------------------------------------
    def create_key(self, user: str, name: str = "") -> tuple[ApiKeyRow, str]:
        return self.keys.create_key(user, name)

    def list_keys(self, user: str | None) -> list[ApiKeyRow]:
        return self.keys.list_keys(user)

    def revoke_key(self, key_id: str, user: str | None) -> None:
        self.keys.revoke_key(key_id, user)

    def check_key(self, secret: str) -> Caller:
        return self.keys.check_key(secret)

    # -- OAuth (auth/tokens.py) ---------------------------------------------------------
    def create_client(self, user: str, scope_text: str | None = None) -> tuple[str, str]:
        return self.tokens.create_client(user, scope_text)

    def check_client(self, client_id: str, client_secret: str | None, *,
                     address: str | None = None) -> None:
        self.tokens.check_client(client_id, client_secret, address=address)

    def password_grant(self, username: str, password: str, scope_text: str | None,
                       client_id: str, *, address: str | None = None) -> dict:
        return self.tokens.password_grant(username, password, scope_text, client_id,
                                          address=address)

    def refresh_grant(self, refresh_token: str, scope_text: str | None, client_id: str, *,
                      address: str | None = None) -> dict:
        return self.tokens.refresh_grant(refresh_token, scope_text, client_id, address=address)

    def client_credentials_grant(self, client_id: str, client_secret: str,
                                 scope_text: str | None, *, address: str | None = None) -> dict:
        return self.tokens.client_credentials_grant(client_id, client_secret, scope_text,
                                                    address=address)

    def check_access_token(self, secret: str) -> Caller:
        return self.tokens.check_access_token(secret)

    def revoke_token(self, secret: str) -> bool:
        return self.tokens.revoke_token(secret)

    def purge_expired_tokens(self) -> int:
        return self.tokens.purge_expired_tokens()

    # -- roles and sharing (auth/permissions.py) ----------------------------------------
    def role_of(self, model: TunedModelRow, user: str) -> str | None:
        return self.permissions.role_of(model, user)

    def require(self, model_id: str, user: str, need: str) -> TunedModelRow:
        return self.permissions.require(model_id, user, need)

    def list_visible(self, user: str, mode: str, page_size: int, page_token: str | None,
                     text: str | None) -> Page:
        return self.permissions.list_visible(user, mode, page_size, page_token, text)

    def list_permissions(self, model: TunedModelRow) -> list[dict]:
        return self.permissions.list_permissions(model)

    def get_permission(self, model: TunedModelRow, perm_id: str) -> dict:
        return self.permissions.get_permission(model, perm_id)

    def create_permission(self, model: TunedModelRow, grantee_type: str, email: str | None,
                          role: str) -> dict:
        return self.permissions.create_permission(model, grantee_type, email, role)

    def update_permission(self, model: TunedModelRow, perm_id: str, role: str) -> dict:
        return self.permissions.update_permission(model, perm_id, role)

    def delete_permission(self, model: TunedModelRow, perm_id: str) -> None:
        self.permissions.delete_permission(model, perm_id)

    def transfer_ownership(self, model: TunedModelRow, email: str) -> None:
        self.permissions.transfer_ownership(model, email)

    def forget_model(self, model_id: str) -> None:
        self.permissions.forget_model(model_id)

    # -- limits (auth/limits.py) --------------------------------------------------------
    def check_create_limits(self, user: str) -> None:
        self.limits.check_create_limits(user)
