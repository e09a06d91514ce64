"""User-facing errors: one exception type per kind of user mistake.

Each maps to a Google RPC status (and so an HTTP code) in one place, ``api/errors.py``;
the CLI prints ``message`` in plain words. Messages say what was wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class TunelabError(Exception):
    """Base class. ``status`` is the google.rpc code name used on the wire."""

    status = "INTERNAL"
    http_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(TunelabError):
    status = "INVALID_ARGUMENT"
    http_code = 400


class NotFound(TunelabError):
    status = "NOT_FOUND"
    http_code = 404


class AlreadyExists(TunelabError):
    status = "ALREADY_EXISTS"
    http_code = 409


class FailedPrecondition(TunelabError):
    status = "FAILED_PRECONDITION"
    http_code = 400


class PermissionDenied(TunelabError):
    status = "PERMISSION_DENIED"
    http_code = 403


class Unauthenticated(TunelabError):
    status = "UNAUTHENTICATED"
    http_code = 401


class ResourceExhausted(TunelabError):
    status = "RESOURCE_EXHAUSTED"
    http_code = 429


class DataLoss(TunelabError):
    """A stored file is damaged: truncated, garbled, or not what tunelab wrote."""

    status = "DATA_LOSS"
    http_code = 500


class Unavailable(TunelabError):
    """The service cannot take the request now (the generation queue is full, the storage is
    full or read-only); it may succeed if retried after ``retry_after`` seconds (sent as
    ``Retry-After``)."""

    status = "UNAVAILABLE"
    http_code = 503

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class ModelNotAvailable(NotFound):
    """A base model is known but its weights are not installed (names the package)."""


class HyperparameterError(InvalidArgument):
    """Bad hyperparameters (e.g. both learning rate and multiplier)."""


@dataclass(frozen=True)
class Problem:
    """One located finding in a dataset: where, which field, what is wrong / what to do.

    A warning also says what kind it is (``code``, e.g. ``DUPLICATE_EXAMPLES``) and which
    examples it concerns (``rows``), so that a client places it without reading ``message``."""

    message: str
    location: str = ""  # e.g. "data.csv, row 7" or "example 3"
    field: str = ""  # e.g. "output"
    row: int | None = None  # 1-based example number, when the finding concerns one example
    code: str = ""  # the kind of warning (data/validate.py's WARNING_CODES)
    rows: tuple[int, ...] = ()  # 1-based example numbers a warning concerns

    def __str__(self) -> str:
        where = ", ".join(
            p for p in (self.location, f"field '{self.field}'" if self.field else "") if p
        )
        return f"{where}: {self.message}" if where else self.message


@dataclass
class DatasetError(InvalidArgument):
    """Every problem found in a dataset at once (validation never stops at the first)."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        lines = [str(p) for p in self.problems]
        n = len(self.problems)
        head = f"The training data has {n} problem{'s' if n != 1 else ''}:"
        InvalidArgument.__init__(self, head + "\n" + "\n".join(f"- {line}" for line in lines))

    def __str__(self) -> str:
        return self.message


# The service named in google.rpc.ErrorInfo, as the Gemini API names itself (clients match it).
SERVICE = "generativelanguage.googleapis.com"


def error_info(reason: str, **metadata: str) -> list[dict]:
    """A ``google.rpc.ErrorInfo`` detail: the machine-readable reason Google's clients read."""
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
             "domain": "googleapis.com", "metadata": {"service": SERVICE, **metadata}}]


class QuotaExceeded(ResourceExhausted):
    """A per-user limit; ``limit`` names it (max_concurrent_jobs, max_tuned_models, max_files,
    max_api_keys). Raised by the store, which checks a limit in the same transaction as the
    write that would pass it."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.details = error_info("RATE_LIMIT_EXCEEDED", quota_limit=limit)
