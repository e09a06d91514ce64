"""Users: who may sign in, with which name, password and email address.

A user's ``name`` is stored as the owner of everything they create. Passwords are chosen by
people (or generated once and shown once) and stored only as scrypt hashes.
"""

from __future__ import annotations

import re

from tunelab.auth.secrets import UNUSABLE, check_password, hash_password, new_password
from tunelab.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tunelab.store.accounts import AccountRecords
from tunelab.store.tables import UserRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
MIN_PASSWORD = 8
# Longer is not safer in practice, and scrypt would hash whatever length it is given.
MAX_PASSWORD = 1024


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidArgument(
            f"The password is too short: use at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise InvalidArgument(
            f"The password is too long: use at most {MAX_PASSWORD} characters.")


def _bad(field: str, message: str) -> InvalidArgument:
    """A 400 naming the field (google.rpc.BadRequest), so a form can mark the right input."""
    e = InvalidArgument(message)
    e.details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                  "fieldViolations": [{"field": field, "description": message}]}]
    return e


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
                      disabled=False, must_change_password=generated is not None)
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
        """Set a password given by whoever runs ``tunelab users password`` (not a one-time
        one: the user is not asked to change it)."""
        _check_password(password)
        if not self.records.update_user(name, password_hash=hash_password(password),
                                        must_change_password=False):
            self.get_user(name)  # raises NotFound

    def change_password(self, name: str, current: str, new: str) -> None:
        """A user replaces their own password, proving they know the current one (an access
        token alone, perhaps left in a browser, must not be enough to take the account over).
        Clears the request to change a one-time password."""
        user = self.get_user(name)
        if user.kind != "user" or user.password_hash is None:
            raise FailedPrecondition(
                f"The account '{name}' has no password: it signs in with client credentials.")
        if not check_password(current, user.password_hash or UNUSABLE):
            raise _bad("currentPassword", "The current password is wrong.")
        if new == current:
            raise _bad("newPassword", "The new password is the current one: choose another.")
        self.check_new_password(new)
        self.records.update_user(name, password_hash=hash_password(new),
                                 must_change_password=False)

    @staticmethod
    def check_new_password(new: str) -> None:
        """The rules a new password must meet, as a 400 naming ``newPassword``."""
        try:
            _check_password(new)
        except InvalidArgument as e:
            raise _bad("newPassword", e.message) from None

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        """Disable a user: every key and token of theirs stops working at once."""
        if not self.records.set_disabled(name, disabled):
            self.get_user(name)

    def set_limits(self, name: str, max_jobs: int | None, max_models: int | None) -> None:
        """A user's own limits; None: the server's (TUNELAB_MAX_*)."""
        if not self.records.update_user(name, max_concurrent_jobs=max_jobs,
                                        max_tuned_models=max_models):
            self.get_user(name)
