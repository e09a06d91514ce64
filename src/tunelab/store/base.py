"""What every query module of the store stands on: the engine, one transaction per call
(``session``), the per-user limits (``quota``) and the owner's lock under which counted
writes are checked. ``Store`` (``repo.py``) is this with the queries of every concept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from tunelab.store.db import make_engine, session_factory, upgrade
from tunelab.store.quotas import Quota
from tunelab.store.tables import UserRow

if TYPE_CHECKING:
    from tunelab.config import Settings

# First key of the PostgreSQL advisory locks that serialize one user's counted writes (the
# second is the hash of the user's name); any fixed 32-bit number unlike MIGRATION_LOCK.
OWNER_LOCK = 0x746C_7131  # "tlq1"


class StoreBase:
    """The database behind the service (SQLite by default, any SQLAlchemy URL)."""

    def __init__(self, url: str, *, migrate: bool = True, lock_dir=None,
                 quota: Quota | None = None):
        self.url = url
        self.quota = quota or Quota()
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine, lock_dir)
        self._sessions = session_factory(self.engine)

    @classmethod
    def open(cls, settings: Settings) -> Self:
        settings.ensure_dirs()
        return cls(settings.resolved_database_url(), lock_dir=settings.home,
                   quota=Quota.of(settings))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def lock_owner(self, s: Session, owner: str) -> None:
        """Make ``s`` the only transaction that counts and adds ``owner``'s rows until it ends.
        Must be the session's first statement. PostgreSQL: an advisory lock on the owner, held
        to the end of the transaction (other users are not held up). SQLite lets one writer in
        at a time, so a write as the first statement takes the database's write lock before
        anything is read (a read first could see counts another writer is about to change)."""
        if self.engine.dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:owner))"),
                      {"ns": OWNER_LOCK, "owner": owner})
        else:
            s.execute(update(UserRow).where(UserRow.name == owner).values(name=UserRow.name))
