"""The first ``tunelab serve`` on an empty store creates the owner account, with an API key
and a refresh token, and writes them to ``HOME/credentials.json`` (mode 0600: only the
account that runs tunelab can read it). The CLI picks the file up by itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunelab.auth.accounts import PUBLIC_CLIENT, Accounts
from tunelab.config import Settings

OWNER = "owner"


def write_private(path: Path, data: dict) -> None:
    """Write JSON readable by the current OS user only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def ensure_owner(settings: Settings, accounts: Accounts) -> Path | None:
    """Create the owner account if there is no user yet; returns the credentials file then."""
    if accounts.has_users():
        return None
    _, password = accounts.add_user(OWNER)
    _, key = accounts.create_key(OWNER, "created by the first tunelab serve")
    grant = accounts.password_grant(OWNER, password or "", None, PUBLIC_CLIENT)
    path = settings.credentials_file
    write_private(path, {
        "user": OWNER,
        "password": password,
        "api_key": key,
        "client_id": PUBLIC_CLIENT,
        "client_secret": "",
        "refresh_token": grant["refresh_token"],
        "scopes": grant["scope"],
    })
    return path
