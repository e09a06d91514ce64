"""Per-user limits, and how a user hears they are at one.

The store enforces each limit in the same transaction as the write that would pass it (so
concurrent requests cannot all pass a check made before any of them wrote); the checks here
come first, so a user at a limit hears so before a long request is read and validated.
"""

from __future__ import annotations

from tunelab.errors import QuotaExceeded
from tunelab.store.accounts import AccountRecords
from tunelab.store.quotas import jobs_limit_exceeded, models_limit_exceeded


def api_keys_limit_exceeded(user: str, n: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        "max_api_keys",
        f"Quota exceeded for max_api_keys: user '{user}' has {n} API keys and the limit is "
        f"{limit}. Revoke a key you no longer use (tunelab keys revoke, DELETE "
        "/v1beta/apiKeys/ID, or the Studio's keys page), or ask the administrator to raise the "
        "limit (TUNELAB_MAX_API_KEYS).")


class Limits:
    def __init__(self, records: AccountRecords):
        self.records = records

    def check_model_limit(self, user: str) -> None:
        """Raise ``QuotaExceeded`` when ``user`` stores as many tuned models as allowed."""
        _, max_models = self.records.limits_of(user)
        if max_models <= 0:
            return
        n = self.records.count_tuned_models(user)
        if n >= max_models:
            raise models_limit_exceeded(user, n, max_models)

    def check_create_limits(self, user: str) -> None:
        """A quick look before a new tuning job is validated; the store checks again,
        atomically, when it adds the job (``Store.create_tuned_model``)."""
        max_jobs, _ = self.records.limits_of(user)
        if max_jobs > 0:
            n = self.records.count_live_jobs(user)
            if n >= max_jobs:
                raise jobs_limit_exceeded(user, n, max_jobs)
        self.check_model_limit(user)
