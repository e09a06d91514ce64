"""``tunelab users …``, ``tunelab keys …`` and ``tunelab login``.

``users`` and ``keys`` work on the store in TUNELAB_HOME / TUNELAB_DATABASE_URL directly
(run them where the service runs, as the account that runs it). Secrets are printed once
and never again: only their hashes are stored.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tunelab.config import Settings
from tunelab.errors import TunelabError

console = Console()
err = Console(stderr=True)

users_app = typer.Typer(help="Accounts: add, list, disable, set limits.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


def _accounts():
    from tunelab.auth.accounts import Accounts
    from tunelab.store import Store

    settings = Settings()
    return Accounts(Store.open(settings), settings)


def _fail(e: TunelabError) -> typer.Exit:
    err.print(f"[red]{e.message}[/]")
    return typer.Exit(2)


def _read_stdin_password() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (stored as the owner of models).")],
    email: Annotated[str | None, typer.Option(help="Email address (optional).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    service: Annotated[
        bool, typer.Option("--service", help="A service account (client_credentials grant).")
    ] = False,
    scope: Annotated[
        str | None, typer.Option(help="Service account scopes (default: all), e.g. 'tuning'.")
    ] = None,
) -> None:
    """Add a user; prints a one-time password, which the user is asked to change at their
    first Studio sign-in (or reads a password from stdin). With --service,
    prints the client id and secret of a service account instead."""
    accounts = _accounts()
    try:
        if service:
            accounts.add_user(name, None, email=email, kind="service")
            client_id, secret = accounts.create_client(name, scope)
            console.print(f"Service account [bold]{name}[/] created. Its credentials (shown "
                          "once; store them now):")
            console.print(f"  client_id:     {client_id}\n  client_secret: {secret}",
                          highlight=False)
            return
        password = _read_stdin_password() if password_stdin else None
        _, generated = accounts.add_user(name, password, email=email)
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"User [bold]{name}[/] created.")
    if generated:
        console.print(f"One-time password (shown once): {generated}", highlight=False)
        console.print("At their first Studio sign-in they are asked to choose their own "
                      "(POST /v1beta/account:changePassword for other clients).")


@users_app.command("list")
def users_list() -> None:
    """List users (never their secrets)."""
    table = Table("name", "email", "kind", "disabled", "max jobs", "max models", "created")
    for u in _accounts().list_users():
        table.add_row(u.name, u.email or "", u.kind, "yes" if u.disabled else "",
                      "" if u.max_concurrent_jobs is None else str(u.max_concurrent_jobs),
                      "" if u.max_tuned_models is None else str(u.max_tuned_models),
                      u.create_time.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    enable: Annotated[bool, typer.Option("--enable", help="Enable the user again.")] = False,
) -> None:
    """Disable a user: their keys and tokens stop working at once."""
    try:
        _accounts().set_disabled(name, not enable)
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"User {name} {'enabled' if enable else 'disabled'}.")


@users_app.command("password")
def users_password(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Set a user's password, read from stdin."""
    try:
        _accounts().set_password(name, _read_stdin_password())
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"Password of {name} changed.")


@users_app.command("limits")
def users_limits(
    name: Annotated[str, typer.Argument(help="User name.")],
    max_jobs: Annotated[int | None, typer.Option(help="Concurrent tuning jobs (0 = none).")]
    = None,
    max_models: Annotated[int | None, typer.Option(help="Stored tuned models (0 = none).")]
    = None,
) -> None:
    """Set a user's own limits (unset = the server's TUNELAB_MAX_* settings)."""
    try:
        _accounts().set_limits(name, max_jobs, max_models)
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"Limits of {name}: max jobs {max_jobs if max_jobs is not None else 'default'}"
                  f", max models {max_models if max_models is not None else 'default'}.")


def _default_user(user: str | None) -> str:
    if user:
        return user
    from tunelab.auth.client import load_credentials

    creds = load_credentials(Settings())
    if creds and creds.get("user"):
        return creds["user"]
    from tunelab.auth.bootstrap import OWNER

    return OWNER


UserOpt = Annotated[str | None, typer.Option("--user", help="Whose keys (default: you).")]


@keys_app.command("create")
def keys_create(
    user: UserOpt = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create an API key (shown once). It can read models and generate; tuning needs OAuth."""
    try:
        row, secret = _accounts().create_key(_default_user(user), name)
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"API key {row.id} for {row.user} (shown once; store it now):")
    print(secret)


@keys_app.command("list")
def keys_list(user: UserOpt = None, all_users: Annotated[
        bool, typer.Option("--all", help="Every user's keys.")] = False) -> None:
    """List API keys: id, owner, label, last characters, state."""
    table = Table("id", "user", "name", "ends with", "state", "created", "last used")
    for k in _accounts().list_keys(None if all_users else _default_user(user)):
        table.add_row(k.id, k.user, k.name, "…" + k.hint, "revoked" if k.revoked else "active",
                      k.create_time.strftime("%Y-%m-%d %H:%M"),
                      k.last_used.strftime("%Y-%m-%d %H:%M") if k.last_used else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")]) -> None:
    """Revoke an API key; it stops working at once."""
    try:
        _accounts().revoke_key(key_id, None)
    except TunelabError as e:
        raise _fail(e) from None
    console.print(f"API key {key_id} revoked.")


def login(
    server: Annotated[str, typer.Option("--server", help="URL of the tunelab service.")],
    user: Annotated[str, typer.Argument(help="Your user name or email.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    scope: Annotated[str | None, typer.Option(help="Scopes (default: all).")] = None,
) -> None:
    """Sign in (OAuth password grant); keeps the refresh token in HOME/login.json (0600)."""
    import httpx

    from tunelab.auth.bootstrap import write_private
    from tunelab.auth.client import login_file

    password = _read_stdin_password() if password_stdin else typer.prompt(
        "Password", hide_input=True)
    data = {"grant_type": "password", "username": user, "password": password,
            "client_id": "tunelab"}
    if scope:
        data["scope"] = scope
    r = httpx.post(server.rstrip("/") + "/oauth2/token", data=data, timeout=30)
    if r.status_code != 200:
        err.print(f"[red]Sign-in failed: {r.json().get('error_description', r.text)}[/]")
        raise typer.Exit(2)
    body = r.json()
    path = login_file(Settings())
    write_private(path, {"user": user, "server": server, "client_id": "tunelab",
                         "client_secret": "", "refresh_token": body["refresh_token"],
                         "scopes": body.get("scope", "")})
    console.print(f"Signed in to {server} as {user}; credentials in {path}.")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.command()(login)
