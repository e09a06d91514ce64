"""Engine, sessions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, so the API process and worker
processes can read while one of them writes. Migrations are applied on start by every process
that opens the store; concurrent starts take turns (SQLite: a file lock; PostgreSQL: an
advisory lock).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

# Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
MIGRATION_LOCK = 0x7475_6E65_6C61_62  # "tunelab"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
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
