"""Queries on the account tables: users, API keys, OAuth clients and tokens, sign-in attempts.

``auth/`` decides who may do what and words every error; this module only reads and writes
rows, each method one transaction. Where a decision must hold under concurrency (a cap on a
user's API keys, a sign-in count), the check and the write share the transaction and the caller
passes the number or the policy in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunelab.store.quotas import user_limits
from tunelab.store.repo import Store
from tunelab.store.tables import (
    ApiKeyRow,
    JobRow,
    OAuthClientRow,
    OAuthTokenRow,
    SignInAttemptRow,
    TunedModelRow,
    UserRow,
    utcnow,
)

# The lock ``lock_owner`` takes for sign-in counts: one name no user can have (names start with
# a letter or digit), so counting attempts never waits on a user's own writes.
SIGNIN_LOCK = "~signin"


class _Refused(Exception):
    """Leaves a sign-in count's transaction without writing (a refused attempt is not
    counted, so it does not lengthen the wait)."""

    def __init__(self, wait: float):
        super().__init__(wait)
        self.wait = wait


def _active(s: Session, name: str) -> bool:
    row = s.get(UserRow, name)
    return row is not None and not row.disabled


class AccountRecords:
    """The account tables of one ``Store``."""

    def __init__(self, store: Store):
        self.store = store

    # -- users --------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(UserRow)) > 0

    def add_user(self, row: UserRow) -> str | None:
        """Add ``row`` unless its name or email address is taken; returns which one was
        (``"name"``, ``"email"``), else None."""
        try:
            with self.store.session() as s:
                if s.get(UserRow, row.name) is not None:
                    return "name"
                if row.email and s.scalar(select(UserRow).where(UserRow.email == row.email)):
                    return "email"
                s.add(row)
        except IntegrityError:  # another process added the same name or email meanwhile
            return "name" if self.get_user(row.name) is not None else "email"
        return None

    def get_user(self, name: str) -> UserRow | None:
        with self.store.session() as s:
            return s.get(UserRow, name)

    def find_user(self, name_or_email: str) -> UserRow | None:
        """By name, else by email address (case-insensitive)."""
        with self.store.session() as s:
            return s.get(UserRow, name_or_email) or s.scalar(
                select(UserRow).where(func.lower(UserRow.email) == name_or_email.lower()))

    def list_users(self) -> list[UserRow]:
        with self.store.session() as s:
            return list(s.scalars(select(UserRow).order_by(UserRow.create_time)))

    def update_user(self, name: str, **fields: object) -> bool:
        """Set columns of a user; False when there is no such user."""
        with self.store.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                return False
            for k, v in fields.items():
                setattr(row, k, v)
            return True

    def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (or enable) a user; disabling also revokes every token of theirs, in the
        same transaction. False when there is no such user."""
        with self.store.session() as s:
            row = s.get(UserRow, name)
            if row is None:
                return False
            row.disabled = disabled
            if disabled:
                s.execute(update(OAuthTokenRow).where(OAuthTokenRow.user == name)
                          .values(revoked=True))
            return True

    # -- limits -------------------------------------------------------------------------
    def limits_of(self, user: str) -> tuple[int, int]:
        """(max concurrent jobs, max tuned models) of ``user``: their own, else the server's."""
        with self.store.session() as s:
            return user_limits(s, self.store.quota, user)

    def count_tuned_models(self, owner: str) -> int:
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(TunedModelRow)
                            .where(TunedModelRow.owner == owner)) or 0

    def count_live_jobs(self, owner: str) -> int:
        """Jobs of ``owner`` that are queued or running."""
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(JobRow)
                            .where(JobRow.owner == owner, JobRow.state != "done")) or 0

    # -- API keys -----------------------------------------------------------------------
    def add_api_key(self, row: ApiKeyRow, limit: int) -> int | None:
        """Add ``row`` unless its user already has ``limit`` live keys (0: no limit); returns
        that count when refused, else None. Counted under the user's lock, so concurrent
        creates cannot pass the limit together."""
        with self.store.session() as s:
            if limit > 0:
                self.store.lock_owner(s, row.user)
                n = s.scalar(select(func.count()).select_from(ApiKeyRow)
                             .where(ApiKeyRow.user == row.user, ApiKeyRow.revoked.is_(False)))
                if n >= limit:
                    return n
            s.add(row)
        return None

    def list_api_keys(self, user: str | None) -> list[ApiKeyRow]:
        with self.store.session() as s:
            q = select(ApiKeyRow)
            if user is not None:
                q = q.where(ApiKeyRow.user == user)
            return list(s.scalars(q.order_by(ApiKeyRow.create_time)))

    def revoke_api_key(self, key_id: str, user: str | None) -> bool:
        """Revoke a key (of ``user``, unless None); False when there is no such key."""
        with self.store.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or (user is not None and row.user != user):
                return False
            row.revoked = True
            return True

    def use_api_key(self, key_hash: str, touch_after: timedelta) -> str | None:
        """The user of a live key (not revoked, its user not disabled), else None. Its
        ``last_used`` is written when older than ``touch_after`` (not on every request)."""
        now = utcnow()
        with self.store.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
            if row is None or row.revoked or not _active(s, row.user):
                return None
            if row.last_used is None or now - row.last_used > touch_after:
                row.last_used = now
            return row.user

    # -- OAuth clients and tokens -------------------------------------------------------
    def replace_client(self, row: OAuthClientRow) -> None:
        """Add a client, replacing one with the same id (and so its old secret)."""
        with self.store.session() as s:
            old = s.get(OAuthClientRow, row.client_id)
            if old is not None:
                s.delete(old)
                s.flush()
            s.add(row)

    def get_client(self, client_id: str) -> OAuthClientRow | None:
        with self.store.session() as s:
            return s.get(OAuthClientRow, client_id)

    def live_client(self, client_id: str) -> OAuthClientRow | None:
        """A client that is not revoked and whose user is not disabled."""
        with self.store.session() as s:
            row = s.get(OAuthClientRow, client_id)
            return row if row is not None and not row.revoked and _active(s, row.user) else None

    def add_tokens(self, rows: Sequence[OAuthTokenRow]) -> None:
        with self.store.session() as s:
            s.add_all(rows)

    def live_refresh_token(self, token_hash: str) -> OAuthTokenRow | None:
        """A refresh token that is not revoked or expired and whose user is not disabled."""
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, token_hash)
            if (row is None or row.kind != "refresh" or row.revoked
                    or (row.expires_at is not None and row.expires_at < utcnow())
                    or not _active(s, row.user)):
                return None
            return row

    def access_token(self, token_hash: str) -> tuple[OAuthTokenRow | None, bool]:
        """(the access token, whether it has expired); the token is None when it is unknown,
        revoked, its refresh token was revoked or its user is disabled."""
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, token_hash)
            if row is None or row.kind != "access" or row.revoked or not _active(s, row.user):
                return None, False
            if row.parent is not None:
                parent = s.get(OAuthTokenRow, row.parent)
                if parent is not None and parent.revoked:
                    return None, False
            return row, row.expires_at is not None and row.expires_at < utcnow()

    def revoke_token(self, token_hash: str) -> bool:
        """Revoke a token, and a refresh token's access tokens with it; False when unknown."""
        with self.store.session() as s:
            row = s.get(OAuthTokenRow, token_hash)
            if row is None:
                return False
            row.revoked = True
            if row.kind == "refresh":
                s.execute(update(OAuthTokenRow).where(OAuthTokenRow.parent == token_hash)
                          .values(revoked=True))
            return True

    def purge_tokens(self, expired_before: datetime) -> int:
        """Delete tokens that expired before ``expired_before``; returns how many."""
        with self.store.session() as s:
            gone = s.execute(delete(OAuthTokenRow).where(
                OAuthTokenRow.expires_at < expired_before))
            return gone.rowcount or 0

    # -- sign-in attempts ---------------------------------------------------------------
    def count_attempt(self, keys: Sequence[str], forget_after: timedelta,
                      wait_for: Callable[[str, int], float]) -> float:
        """Count one attempt against each key, unless one of them must still wait: then
        nothing is counted and the longest wait (seconds) comes back; 0.0 when counted.
        ``wait_for(key, failures)`` says how long a key waits after that many failures; a
        key without a failure for ``forget_after`` starts again from none. One transaction
        under one lock, so a burst of concurrent attempts is cut off at the limit."""
        now = utcnow()
        try:
            with self.store.session() as s:
                self._count(s, keys, now, forget_after, wait_for)
        except _Refused as refused:
            return refused.wait
        return 0.0

    def _count(self, s: Session, keys: Sequence[str], now: datetime, forget_after: timedelta,
               wait_for: Callable[[str, int], float]) -> None:
        self.store.lock_owner(s, SIGNIN_LOCK)
        rows = []
        for key in keys:
            row = s.get(SignInAttemptRow, key)
            if row is None:
                row = SignInAttemptRow(key=key, failures=0, last_failure=now)
                s.add(row)
            elif now - row.last_failure > forget_after:
                row.failures, row.locked_until = 0, None
            rows.append(row)
        waits = [(r.locked_until - now).total_seconds() for r in rows
                 if r.locked_until is not None and r.locked_until > now]
        if waits:
            raise _Refused(max(waits))
        for row in rows:
            row.failures += 1
            row.last_failure = now
            wait = wait_for(row.key, row.failures)
            row.locked_until = now + timedelta(seconds=wait) if wait else None

    def attempt_succeeded(self, forget: str | None, credit: Sequence[str],
                          wait_for: Callable[[str, int], float]) -> None:
        """A right secret: the ``forget`` key's count goes; each ``credit`` key gets its one
        attempt back (and is unlocked when ``wait_for`` says it need not wait any more)."""
        with self.store.session() as s:
            self.store.lock_owner(s, SIGNIN_LOCK)
            if forget is not None:
                row = s.get(SignInAttemptRow, forget)
                if row is not None:
                    s.delete(row)
            for key in credit:
                row = s.get(SignInAttemptRow, key)
                if row is not None:
                    row.failures = max(0, row.failures - 1)
                    if wait_for(key, row.failures) == 0:
                        row.locked_until = None

    def purge_attempts(self, forget_after: timedelta) -> int:
        """Drop counts that are forgotten anyway (no failure for ``forget_after``, no wait
        left); returns how many."""
        now = utcnow()
        with self.store.session() as s:
            gone = s.execute(delete(SignInAttemptRow).where(
                SignInAttemptRow.last_failure < now - forget_after,
                or_(SignInAttemptRow.locked_until.is_(None),
                    and_(SignInAttemptRow.locked_until < now))))
            return gone.rowcount or 0
