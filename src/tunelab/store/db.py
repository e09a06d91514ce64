"""Engine, sessions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, so the API process and worker
processes can read while one of them writes. Migrations are applied on start by every process
that opens the store; concurrent starts take turns (SQLite: a file lock; PostgreSQL: an
advisory lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

# Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
MIGRATION_LOCK = 0x7475_6E65_6C61_62  # "tunelab"


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file readable only by its owner (0600), as SQLite would create it
    world-readable (0644 under the usual umask) and it holds password and key hashes. SQLite
    gives its -wal and -shm files the database file's mode; files left by an earlier version
    are tightened too (when they are ours to change)."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    db = Path(path)
    if db.parent.is_dir():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with contextlib.suppress(OSError):  # missing, not ours, or a read-only disk
            st = f.stat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                f.chmod(0o600)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


@contextlib.contextmanager
def _migration_lock(url: str, lock_dir: Path | None) -> Iterator[None]:
    if not url.startswith("sqlite") or lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".migrate.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upgrade(engine: Engine, lock_dir: Path | None = None) -> None:
    """Bring the database schema to the newest migration (idempotent)."""
    from alembic import command

    with _migration_lock(str(engine.url), lock_dir):
        cfg = _alembic_config()
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # serve and workers on other machines may start together: take turns (the
                # lock ends with this transaction; PostgreSQL's DDL is transactional).
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
