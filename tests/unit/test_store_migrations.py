"""The Alembic migrations build exactly the tables ``store/tables.py`` declares, on SQLite (the
default store; tests/integration/test_postgres.py checks the same on PostgreSQL), and a store
made by an earlier version keeps its rows through the migrations that came after it."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from tunelab.store import Store
from tunelab.store.db import _alembic_config, make_engine
from tunelab.store.tables import Base


def test_migrations_on_a_fresh_sqlite_database_build_tables_py(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        with store.engine.connect() as conn:
            head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
            # an autogenerate diff: tables, columns, types, nullability and indexes
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
    finally:
        store.close()


def test_an_older_store_keeps_its_users_through_later_migrations(tmp_path):
    """0004 drops ``users.is_admin`` (SQLite rebuilds the table): the accounts stay."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(text(
            "INSERT INTO users (name, email, kind, is_admin, password_hash, disabled, "
            "create_time) VALUES ('ann', 'ann@example.com', 'user', 1, 'scrypt$x', 0, "
            "'2026-01-02 03:04:05')"))
    engine.dispose()
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT name, email, password_hash FROM users")).all()
            columns = {r[1] for r in conn.execute(text("PRAGMA table_info(users)"))}
        assert [tuple(r) for r in rows] == [("ann", "ann@example.com", "scrypt$x")]
        assert "is_admin" not in columns
    finally:
        store.close()
