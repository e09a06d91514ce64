"""``Store``: every read and write of the tuned-model tables goes through it, one class that
callers hold, its queries written by concept: ``tuned_models.py`` (tuned models, their snapshots
and operations), ``queue.py`` (the job queue, API and worker sides) and ``files.py``
(uploads), on ``base.py`` (engine, transactions, the owner's lock) and ``quotas.py``. Its
companions ``store/accounts.py`` (users, keys, tokens, sign-in attempts) and
``store/permissions.py`` (shares of tuned models) take a ``Store``.

Rows come back detached (``expire_on_commit=False``) so callers can read them after the
session closes. Each method is one transaction.
"""

from __future__ import annotations

from tunelab.store.files import FileQueries
from tunelab.store.queue import QueueQueries
from tunelab.store.tuned_models import TunedModelQueries


class Store(TunedModelQueries, QueueQueries, FileQueries):
    """The database behind the service (SQLite by default, any SQLAlchemy URL): the queries
    of every concept on one engine."""

