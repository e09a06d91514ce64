"""Per-user limits the store enforces in the transaction of the write that would exceed them
(a user's concurrent jobs, tuned models and files; the length of a description), and the
words of a limit exceeded (``auth/limits.py`` says the same before any write)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunelab.errors import InvalidArgument, QuotaExceeded
from tunelab.store.tables import JobRow, TunedModelRow, UserRow

if TYPE_CHECKING:
    from tunelab.config import Settings


@dataclass(frozen=True)
class Quota:
    """Per-user limits the store enforces in the same transaction as the write that would
    exceed them, so concurrent requests cannot all pass a check made before any of them wrote.
    0 means no limit; a user's own ``max_concurrent_jobs``/``max_tuned_models`` override the
    first two (``tunelab users limits``)."""

    max_concurrent_jobs: int = 0
    max_tuned_models: int = 0
    max_files: int = 0
    max_description_chars: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Quota:
        return cls(settings.max_concurrent_jobs, settings.max_tuned_models, settings.max_files,
                   settings.max_description_chars)

    def check_description(self, description: str | None) -> None:
        n = len(description or "")
        if self.max_description_chars and n > self.max_description_chars:
            raise InvalidArgument(
                f"description is {n:,} characters; the limit is {self.max_description_chars:,}. "
                "Shorten it (the administrator sets the limit: TUNELAB_MAX_DESCRIPTION_CHARS).")


def jobs_limit_exceeded(user: str, n: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        "max_concurrent_jobs",
        f"Quota exceeded for max_concurrent_jobs: user '{user}' has {n} tuning jobs queued or "
        f"running and the limit is {limit}. Wait for one to finish or cancel one, or ask the "
        "administrator to raise the limit (tunelab users limits, TUNELAB_MAX_CONCURRENT_JOBS).")


def models_limit_exceeded(user: str, n: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        "max_tuned_models",
        f"Quota exceeded for max_tuned_models: user '{user}' stores {n} tuned models and the "
        f"limit is {limit}. Delete a tuned model, or ask the administrator to raise the limit "
        "(tunelab users limits, TUNELAB_MAX_TUNED_MODELS).")


def user_limits(s: Session, quota: Quota, owner: str) -> tuple[int, int]:
    """``owner``'s own limits on jobs and tuned models, else the server's."""
    row = s.get(UserRow, owner)
    jobs = row.max_concurrent_jobs if row and row.max_concurrent_jobs is not None else \
        quota.max_concurrent_jobs
    models = row.max_tuned_models if row and row.max_tuned_models is not None else \
        quota.max_tuned_models
    return jobs, models

def check_create_quota(s: Session, quota: Quota, owner: str, queued: bool) -> None:
    """Raise ``QuotaExceeded`` when ``owner`` may not add a tuned model (with a queued job
    when ``queued``); inside the write's transaction, under the owner's lock."""
    max_jobs, max_models = user_limits(s, quota, owner)
    if queued and max_jobs > 0:
        n = s.scalar(select(func.count()).select_from(JobRow)
                     .where(JobRow.owner == owner, JobRow.state != "done"))
        if n >= max_jobs:
            raise jobs_limit_exceeded(owner, n, max_jobs)
    if max_models > 0:
        n = s.scalar(select(func.count()).select_from(TunedModelRow)
                     .where(TunedModelRow.owner == owner))
        if n >= max_models:
            raise models_limit_exceeded(owner, n, max_models)
