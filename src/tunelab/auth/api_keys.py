"""API keys: long-lived secrets that may read models and call them (never tune; that needs an
OAuth token, as in the Gemini API). A key is shown once; only its SHA-256 is stored, with its
last four characters as a hint and a short public id to list and revoke it by."""

from __future__ import annotations

from datetime import timedelta

from tunelab.auth.errors import ApiKeyInvalid
from tunelab.auth.limits import api_keys_limit_exceeded
from tunelab.auth.principal import Caller
from tunelab.auth.secrets import API_KEY, new_secret, token_hash
from tunelab.auth.users import Users
from tunelab.errors import NotFound
from tunelab.ids import random_id
from tunelab.store.accounts import AccountRecords
from tunelab.store.tables import ApiKeyRow

# A key's last use is written at most once a minute: a key used for every request must not
# cost a write each.
TOUCH_AFTER = timedelta(minutes=1)


class ApiKeys:
    def __init__(self, records: AccountRecords, users: Users, max_api_keys: int):
        self.records, self.users, self.max_api_keys = records, users, max_api_keys

    def create_key(self, user: str, name: str = "") -> tuple[ApiKeyRow, str]:
        """A new API key; the secret is returned once and only its hash is kept. At most
        ``max_api_keys`` live keys per user (0: no limit)."""
        self.users.get_user(user)
        secret = new_secret(API_KEY)
        row = ApiKeyRow(id=random_id(10), user=user, name=name[:255],
                        key_hash=token_hash(secret), hint=secret[-4:], revoked=False)
        held = self.records.add_api_key(row, self.max_api_keys)
        if held is not None:
            raise api_keys_limit_exceeded(user, held, self.max_api_keys)
        return row, secret

    def list_keys(self, user: str | None) -> list[ApiKeyRow]:
        """``user``'s keys, or everyone's (None)."""
        return self.records.list_api_keys(user)

    def revoke_key(self, key_id: str, user: str | None) -> None:
        if not self.records.revoke_api_key(key_id, user):
            raise NotFound(f"API key '{key_id}' was not found; list your keys with "
                           "`tunelab keys list` or GET /v1beta/apiKeys.")

    def check_key(self, secret: str) -> Caller:
        user = self.records.use_api_key(token_hash(secret), TOUCH_AFTER)
        if user is None:
            raise ApiKeyInvalid()
        return Caller(user, frozenset(), "key")
