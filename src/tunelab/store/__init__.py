"""The store: SQLAlchemy 2 tables, queries and Alembic migrations.

SQLite (WAL) under ``Settings.home`` by default; any SQLAlchemy URL via
``TUNELAB_DATABASE_URL``. Migrations are applied whenever a process opens the store.
"""

from tunelab.paging import Page
from tunelab.store.repo import Store
from tunelab.store.tables import FileRow, JobRow, OperationRow, SnapshotRow, TunedModelRow

__all__ = ["FileRow", "JobRow", "OperationRow", "Page", "SnapshotRow", "Store", "TunedModelRow"]
