"""Users: who may sign in, with which name, password and email address.

A user's ``name`` is stored as the owner of everything they create. Passwords are chosen by
people (or generated once and shown once) and stored only as scrypt hashes.
"""

from __future__ import annotations

import re

from tunelab.auth.secrets import hash_password, new_password
from tunelab.errors import AlreadyExists, InvalidArgument, NotFound
from tunelab.store.accounts import AccountRecords
from tunelab.store.tables import UserRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
MIN_PASSWORD = 8


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(
            f"The password is too short: use at least {MIN_PASSWORD} characters.")


class Users:
    def __init__(self, records: AccountRecords):
        self.records = records

    def has_users(self) -> bool:
        return self.records.has_users()

    def add_user(self, name: str, password: str | None = None, *, email: str | None = None,
                 kind: str = "user") -> tuple[UserRow, str | None]:
        """Create a user (``kind``: ``user``, or ``service`` for a client_credentials account
        without a password); returns (row, the one-time password when none was given)."""
        if not NAME_RE.match(name):
            raise InvalidArgument(
                f"User name '{name}' is not valid: use letters, digits and . _ @ + - "
                "(at most 100 characters), starting with a letter or digit."
            )
        generated = None
        if kind == "user" and password is None:
            password = generated = new_password()
        if password is not None:
            _check_password(password)
        row = UserRow(name=name, email=email or None, kind=kind,
                      password_hash=hash_password(password) if password else None,
                      disabled=False)
        taken = self.records.add_user(row)
        if taken == "name":
            raise AlreadyExists(f"User '{name}' already exists.")
        if taken == "email":
            raise AlreadyExists(f"Another user has the email address '{email}'.")
        return row, generated

    def get_user(self, name: str) -> UserRow:
        row = self.records.get_user(name)
        if row is None:
            raise NotFound(f"User '{name}' was not found; see `tunelab users list`.")
        return row

    def find_user(self, name_or_email: str) -> UserRow | None:
        """A user by name or email address (a Permission's ``emailAddress`` may be either)."""
        return self.records.find_user(name_or_email)

    def list_users(self) -> list[UserRow]:
        return self.records.list_users()

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        if not self.records.update_user(name, password_hash=hash_password(password)):
            self.get_user(name)  # raises NotFound

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable a user: every key and token of theirs stops working at once."""
        if not self.records.set_disabled(name, disabled):
            self.get_user(name)

    def set_limits(self, name: str, max_jobs: int | None, max_models: int | None) -> None:
        """A user's own limits; None: the server's (TUNELAB_MAX_*)."""
        if not self.records.update_user(name, max_concurrent_jobs=max_jobs,
                                        max_tuned_models=max_models):
            self.get_user(name)
