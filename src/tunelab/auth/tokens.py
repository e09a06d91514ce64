"""OAuth 2 clients and tokens: tunelab is its own token server (``/oauth2/token``).

Grants: ``password`` (people: the CLI, the Studio, the SDKs), ``refresh_token`` and
``client_credentials`` (service accounts). An access token is short-lived and names the refresh
token it was minted from, so revoking the refresh token ends it too. Only SHA-256 hashes of
tokens and client secrets are stored. Every grant that checks a secret is rate limited
(``auth/throttle.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tunelab.auth import scopes as sc
from tunelab.auth.errors import InvalidToken
from tunelab.auth.principal import Caller
from tunelab.auth.secrets import (
    ACCESS_TOKEN,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    UNUSABLE,
    check_password,
    new_secret,
    token_hash,
)
from tunelab.auth.throttle import SignInGuard
from tunelab.auth.users import Users
from tunelab.config import Settings
from tunelab.errors import InvalidArgument
from tunelab.store.accounts import AccountRecords
from tunelab.store.tables import OAuthClientRow, OAuthTokenRow, utcnow

PUBLIC_CLIENT = "tunelab"  # the CLI's and SDKs' client id; public (its secret is not checked)

# Tokens expired longer ago than this are deleted (until then an expired access token still
# answers "expired" rather than "invalid"), at most once per PURGE_EVERY per process.
PURGE_AFTER = timedelta(days=1)
PURGE_EVERY = timedelta(minutes=10)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error of the token endpoint (``invalid_grant``, …)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _scopes(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return sc.parse(text, default)
    except InvalidArgument as e:
        raise OAuthError("invalid_scope", e.message) from None


def _within(granted: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    return all(g in allowed or sc.CLOUD in allowed for g in granted)


class OAuthTokens:
    def __init__(self, records: AccountRecords, users: Users, signins: SignInGuard,
                 settings: Settings):
        self.records, self.users, self.signins = records, users, signins
        self.access_seconds = settings.access_token_seconds
        self.refresh_seconds = settings.refresh_token_seconds
        self._last_purge: datetime | None = None

    # -- clients ------------------------------------------------------------------------
    def create_client(self, user: str, scope_text: str | None = None) -> tuple[str, str]:
        """A confidential client for a service account (client_credentials grant): returns
        (client_id, client_secret); the secret is shown once. A user has one client: a new
        one replaces the old (and its secret)."""
        u = self.users.get_user(user)
        granted = " ".join(sc.parse(scope_text))
        secret = new_secret(CLIENT_SECRET)
        self.records.replace_client(OAuthClientRow(
            client_id=u.name, user=u.name, secret_hash=token_hash(secret), scopes=granted,
            revoked=False))
        return u.name, secret

    def check_client(self, client_id: str, client_secret: str | None, *,
                     address: str | None = None) -> None:
        """Confidential clients must authenticate (rate limited like sign-ins); the public
        ``tunelab`` client (and any unregistered id, as with an installed app) need not."""
        row = self.records.get_client(client_id or "")
        if row is None:
            return
        with self.signins.attempt(f"client:{client_id}", address):
            if not client_secret or token_hash(client_secret) != row.secret_hash:
                raise OAuthError("invalid_client", "Wrong client secret.", 401)

    # -- grants -------------------------------------------------------------------------
    def _issue(self, user: str, client_id: str, granted: tuple[str, ...], parent: str | None,
               with_refresh: bool) -> dict:
        """A new access token (and refresh token), as the token endpoint answers."""
        now = utcnow()
        scopes = " ".join(granted)
        access = new_secret(ACCESS_TOKEN)
        out = {"access_token": access, "token_type": "Bearer",
               "expires_in": self.access_seconds, "scope": scopes}
        rows = []
        if with_refresh:
            refresh = new_secret(REFRESH_TOKEN)
            parent = token_hash(refresh)
            rows.append(OAuthTokenRow(
                token_hash=parent, kind="refresh", user=user, client_id=client_id,
                scopes=scopes, revoked=False,
                expires_at=now + timedelta(seconds=self.refresh_seconds)))
            out["refresh_token"] = refresh
        rows.append(OAuthTokenRow(
            token_hash=token_hash(access), kind="access", user=user, client_id=client_id,
            scopes=scopes, parent=parent, revoked=False,
            expires_at=now + timedelta(seconds=self.access_seconds)))
        self.records.add_tokens(rows)
        return out

    def password_grant(self, username: str, password: str, scope_text: str | None,
                       client_id: str, *, address: str | None = None) -> dict:
        """Sign in. Attempts are rate limited per user and per client ``address``
        (``TooManyAttempts``), and an unknown, disabled or password-less user costs one
        password hash like a wrong password does: neither the answer nor its time says
        whether a user name exists."""
        granted = _scopes(scope_text, sc.DEFAULT)
        self._maybe_purge()
        user = self.users.find_user(username)
        with self.signins.attempt(f"user:{user.name if user else username}", address):
            usable = user is not None and not user.disabled and user.kind == "user"
            right = check_password(password, user.password_hash if usable else UNUSABLE)
            if not (usable and right):
                raise OAuthError("invalid_grant", "Wrong user name or password.")
        return self._issue(user.name, client_id or PUBLIC_CLIENT, granted, None, True)

    def refresh_grant(self, refresh_token: str, scope_text: str | None, client_id: str, *,
                      address: str | None = None) -> dict:
        """A new access token for a refresh token; wrong refresh tokens count against the
        client ``address`` when one is given (the token endpoint's)."""
        self._maybe_purge()
        if address:
            with self.signins.attempt(None, address):
                return self.refresh_grant(refresh_token, scope_text, client_id)
        row = self.records.live_refresh_token(token_hash(refresh_token))
        if row is None:
            raise OAuthError("invalid_grant",
                             "The refresh token is not valid (expired or revoked); sign in "
                             "again (tunelab login, or the password grant).")
        had = tuple(row.scopes.split())
        granted = _scopes(scope_text, had)
        if not _within(granted, had):
            raise OAuthError("invalid_scope",
                             "A refreshed token cannot have scopes the refresh token lacks.")
        out = self._issue(row.user, row.client_id, granted, row.token_hash, False)
        out["refresh_token"] = refresh_token
        return out

    def client_credentials_grant(self, client_id: str, client_secret: str,
                                 scope_text: str | None, *, address: str | None = None) -> dict:
        self._maybe_purge()
        with self.signins.attempt(f"client:{client_id}", address):
            row = self.records.live_client(client_id or "")
            if (row is None or not client_secret
                    or token_hash(client_secret) != row.secret_hash):
                raise OAuthError("invalid_client", "Unknown client or wrong client secret.", 401)
        allowed = tuple(row.scopes.split())
        granted = _scopes(scope_text, allowed)
        if not _within(granted, allowed):
            raise OAuthError("invalid_scope", "The client may not have these scopes.")
        return self._issue(row.user, client_id, granted, None, False)

    # -- using and ending tokens --------------------------------------------------------
    def check_access_token(self, secret: str) -> Caller:
        row, expired = self.records.access_token(token_hash(secret))
        if row is None:
            raise InvalidToken()
        if expired:
            raise InvalidToken(expired=True)
        return Caller(row.user, frozenset(row.scopes.split()), "token")

    def revoke_token(self, secret: str) -> bool:
        """RFC 7009: revoking a refresh token also ends the access tokens minted from it."""
        return self.records.revoke_token(token_hash(secret))

    def purge_expired_tokens(self) -> int:
        """Delete tokens that expired over a day ago (refresh tokens outlive their access
        tokens, so no live access token loses its parent); returns how many went."""
        self._last_purge = utcnow()
        n = self.records.purge_tokens(self._last_purge - PURGE_AFTER)
        self.signins.purge()
        return n

    def _maybe_purge(self) -> None:
        if self._last_purge is None or utcnow() - self._last_purge > PURGE_EVERY:
            self.purge_expired_tokens()
