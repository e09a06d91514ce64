"""The store's tables (SQLAlchemy 2 declarative). Migrations in ``migrations/`` create them;
append a new migration for every change here (never edit an applied one)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps are stored as naive UTC (SQLite has no time zones) and read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class TunedModelRow(Base):
    """A tuned model: what the user asked for, and where its tuning stands."""

    __tablename__ = "tuned_models"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    base_model: Mapped[str] = mapped_column(String(255))  # "models/{id}"
    source_tuned_model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="CREATING")  # CREATING|ACTIVE|FAILED
    state_message: Mapped[str] = mapped_column(Text, default="")
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_p: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch_count: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    learning_rate: Mapped[float] = mapped_column(Float)  # the effective rate
    learning_rate_multiplier: Mapped[float | None] = mapped_column(Float, nullable=True)
    example_count: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    dataset_file: Mapped[str | None] = mapped_column(String(63), nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    complete_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OperationRow(Base):
    """A long-running operation (``tunedModels/{id}/operations/{op}``)."""

    __tablename__ = "operations"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    tuned_model_id: Mapped[str] = mapped_column(String(63), index=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SnapshotRow(Base):
    """One optimizer step. Upserted by (model, step): a resumed job reports steps again."""

    __tablename__ = "snapshots"

    tuned_model_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    mean_loss: Mapped[float] = mapped_column(Float)
    compute_time: Mapped[datetime] = mapped_column(UTCDateTime)


class FileRow(Base):
    """Stored data: an uploaded file (kind "upload") or the examples of a create request
    (kind "dataset"), as a file under the artifacts directory."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    mime_type: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    path: Mapped[str] = mapped_column(Text)  # relative to the artifacts directory
    example_count: Mapped[int] = mapped_column(Integer, default=0)
    info: Mapped[dict] = mapped_column(JSON, default=dict)  # columns, warnings
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobRow(Base):
    """The queue. A worker owns a running job while ``lease_expires_at`` is in the future;
    ``seq`` orders jobs by submission."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tuned_model_id: Mapped[str] = mapped_column(String(63), index=True)
    operation: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # queued | running | done
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completed_steps: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict] = mapped_column(JSON, default=dict)  # what the executor needs
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    enqueue_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# -- accounts and credentials (auth/). Secrets are never stored: only SHA-256 hashes of
# random tokens and scrypt hashes of passwords.
class UserRow(Base):
    """An account. ``name`` is what is stored as ``owner`` on everything the user creates."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="user")  # user | service
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # set while the password is one the user did not choose (the one-time password of
    # ``tunelab users add``): sign-in works, and the Studio asks for a new one first
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_tuned_models: Mapped[int | None] = mapped_column(Integer, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKeyRow(Base):
    """An API key: ``id`` is its public handle (shown in lists), ``key_hash`` its SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16), default="")  # last 4 characters
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OAuthClientRow(Base):
    """A confidential OAuth client: a service account's client_credentials identity."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text, default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuthTokenRow(Base):
    """An access token (short-lived) or refresh token (long-lived), by SHA-256 hash. An
    access token minted from a refresh token names it in ``parent`` so revoking the refresh
    token revokes its access tokens too."""

    __tablename__ = "oauth_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # access | refresh
    user: Mapped[str] = mapped_column(String(255), index=True)
    client_id: Mapped[str] = mapped_column(String(255), default="")
    scopes: Mapped[str] = mapped_column(Text, default="")
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PermissionRow(Base):
    """A share of a tuned model: ``grantee`` is a user name (USER) or None (EVERYONE)."""

    __tablename__ = "permissions"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    tuned_model_id: Mapped[str] = mapped_column(String(63), index=True)
    grantee_type: Mapped[str] = mapped_column(String(16))  # USER | EVERYONE
    grantee: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(16))  # READER | WRITER
    create_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignInAttemptRow(Base):
    """Recent sign-in attempts of one user name, OAuth client or client address (``key``: the
    kind and a SHA-256 of the value, so nothing a caller typed is stored). Kept in the store so
    every API process behind one database enforces the same backoff."""

    __tablename__ = "signin_attempts"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
