"""One typed settings object; every knob is a ``TUNELAB_*`` environment variable.

Settings are created once at the edge (CLI command, app factory, worker) and passed down
explicitly; no module reads the environment on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunelab.allocator import ALLOCATORS


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "tunelab"


class Settings(BaseSettings):
    """tunelab's configuration. Each field can be set as ``TUNELAB_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TUNELAB_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home,
        description="Data directory: database, model cache, uploads, adapters.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default is SQLite (WAL) at HOME/tunelab.db.",
    )
    default_base_model: str = Field(
        default="smollm2-135m-instruct", description="Base model used when none is named."
    )
    extra_models: dict[str, str] = Field(
        default_factory=dict,
        description='More base models by name: JSON {"my-model": "/path/to/hf-folder-or.gguf"}.',
    )
    threads: int | None = Field(
        default=None,
        description="torch threads of this process: a worker's training, the CLI's local "
        "generation; default: all cores. `tunelab serve` gives its local workers their share "
        "of the cores instead (see api_threads).",
    )
    api_threads: int | None = Field(
        default=None,
        description="torch threads the API process generates with. Default: when `serve` starts "
        "local workers, a quarter of the cores (at least 1), the workers sharing the rest; "
        "otherwise all cores. docs/reliability.md explains the split.",
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'mps'.")
    precision: str = Field(
        default="auto",
        pattern="^(auto|fp32|bf16|bf16-stored)$",
        description="What the frozen base weights are held in: 'auto' (bf16 where a short probe "
        "measures it clearly faster than fp32 on this CPU or the GPU supports it, cached in the "
        "data dir; else fp32, kept in bf16 where memory is short), 'fp32', 'bf16', or "
        "'bf16-stored' (weights kept in bf16 for half the memory, products in fp32). LoRA "
        "weights, optimizer state and loss are always fp32.",
    )
    seed: int = Field(default=0, description="Seed for shuffling and LoRA initialisation.")
    train_memory_mb: int | None = Field(
        default=None,
        ge=16,
        description="Memory (MB) a training step may keep for its backward pass. A run whose "
        "longest batch would keep more splits its batches into passes of at least 256 tokens "
        "that fit, else recomputes each layer's insides in the backward pass (about a third "
        "more compute) and splits if need be. Default: half of the memory the system reports "
        "available when training starts.",
    )
    allocator: str = Field(
        default="auto",
        pattern=f"^({'|'.join(ALLOCATORS)})$",
        description="The C allocator of the processes that train: 'auto' (jemalloc where the "
        "system has it, e.g. Debian's libjemalloc2: they restart once at start with it "
        "preloaded; it keeps less freed memory) or 'system' (the C library's). Read when a "
        "process starts (allocator.py).",
    )
    adapter_cache_bytes: int = Field(
        default=512 * 1024 * 1024,
        description="LRU budget for adapters kept loaded in a serving process (bytes).",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        description="Largest request body (bytes), refused with 413 before it is read: 8 MiB "
        "holds a 4 MB dataset inline with room for JSON escaping. File uploads have their own "
        "limit, 4 MB plus 64 KiB of multipart framing.",
    )
    max_queued_generations: int = Field(
        default=8,
        description="Generation requests that may wait while one runs (a model serves one at a "
        "time until batched serving lands); one more is answered 503 UNAVAILABLE with "
        "Retry-After, so a burst cannot tie up the threads the other endpoints need.",
    )
    lease_seconds: float = Field(
        default=30.0,
        description="A worker's claim on a job lapses this long after its last heartbeat.",
    )
    storage_retry_seconds: float = Field(
        default=30.0,
        description="A job whose storage is full or read-only goes back to the queue and is "
        "tried again after this long, doubling up to 10 minutes while the fault lasts.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Run training as Ray tasks on this cluster ('auto', 'HOST:PORT' or "
        "'ray://HOST:PORT') instead of in the worker processes; docs/deployment.md.",
    )
    ray_num_cpus: float = Field(default=1.0, description="CPUs one Ray training task asks for.")
    ray_num_gpus: float = Field(
        default=0.0, description="GPUs one Ray training task asks for (1 to train on a GPU node)."
    )
    artifact_store: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Buckets tuning datasets may be read from, by URI scheme: JSON {"s3": '
        '{...}, "gs": {...}}, each scheme\'s fsspec options (s3fs: endpoint_url, key, secret, '
        'client_kwargs; gcsfs: project, token, endpoint_url). {} takes the package\'s usual '
        "credentials (AWS_* variables or an instance role; Application Default Credentials). "
        "A scheme not listed is refused with what to do; a dataset read is bounded like an "
        "upload (4 MB). Needs pip install 'tunelab[s3]' / 'tunelab[gcs]'; docs/sdks.md.",
    )
    vertex_project: str | None = Field(
        default=None,
        description="The one project the Vertex AI routes serve (projects/{project}/…); "
        "another is answered 403 PERMISSION_DENIED, as Vertex answers a project the caller "
        "has no access to. Not set: any project works and only comes back in the names.",
    )
    vertex_location: str | None = Field(
        default=None,
        description="The one location the Vertex AI routes serve (…/locations/{location}/…), "
        "like vertex_project. Not set: any location works.",
    )
    step_delay_seconds: float = Field(
        default=0.0,
        description="Testing only: a worker sleeps this long after each training step, so tests "
        "can stop or kill a job mid-epoch on a model that trains in milliseconds.",
    )

    access_token_seconds: int = Field(
        default=3600,
        description="Lifetime of an OAuth access token (1 hour, as Google's); clients refresh "
        "it with their refresh token.",
    )
    refresh_token_seconds: int = Field(
        default=180 * 24 * 3600,
        description="Lifetime of an OAuth refresh token (180 days); revocable at any time.",
    )
    max_concurrent_jobs: int = Field(
        default=4,
        description="Per user: tuning jobs queued or running at once (0 = no limit). A user's "
        "own limit (tunelab users limits) overrides it.",
    )
    max_tuned_models: int = Field(
        default=100,
        description="Per user: tuned models stored (0 = no limit). Overridable per user.",
    )
    max_files: int = Field(
        default=100,
        description="Per user: uploaded files stored (0 = no limit); 100 uploads of at most "
        "4 MB each bound one user's share of the data dir to 400 MB.",
    )
    max_api_keys: int = Field(
        default=20,
        description="Per user: API keys not revoked (0 = no limit). Revoke unused keys to make "
        "room.",
    )
    max_description_chars: int = Field(
        default=2000,
        description="Longest tuned model description, in characters (0 = no limit).",
    )
    signin_attempts: int = Field(
        default=5,
        description="Sign-ins (password grant, Studio, client secret) allowed per user before "
        "each further one must wait; a client address gets four times as many (it may be shared).",
    )
    signin_backoff_seconds: float = Field(
        default=1.0,
        description="The first wait after too many sign-in attempts; it doubles with each "
        "further wrong attempt (1, 2, 4 … s), up to signin_max_backoff_seconds.",
    )
    signin_max_backoff_seconds: float = Field(
        default=900.0,
        description="Longest wait between sign-in attempts (15 minutes). Failures are forgotten "
        "after four times this long without one, or at once on a correct password.",
    )
    bad_credentials_burst: int = Field(
        default=100,
        description="API requests with a wrong key or token one client address may make in a "
        "burst before it is answered 429 (0 = no limit).",
    )
    bad_credentials_per_second: float = Field(
        default=10.0,
        description="How fast a client address earns back wrong-credential requests after a "
        "burst (a sustained rate this low cannot search the 256-bit key space).",
    )

    @field_validator("artifact_store")
    @classmethod
    def _known_schemes(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - {"gs", "s3"})
        if unknown:
            raise ValueError(f"names {', '.join(unknown)}: tunelab reads datasets from the "
                             "schemes gs and s3 only")
        return value

    @property
    def credentials_file(self) -> Path:
        """The owner account's credentials, written (mode 0600) on the first ``serve``."""
        return self.home / "credentials.json"

    @property
    def models_dir(self) -> Path:
        """Cache of base models converted to safetensors."""
        return self.home / "models"

    @property
    def artifacts_dir(self) -> Path:
        """Adapters, checkpoints and uploaded files."""
        return self.home / "artifacts"

    def thread_split(self, local_workers: int) -> tuple[int, int]:
        """(API threads, threads of each local worker) for `serve` running ``local_workers``
        tuning workers on this machine. torch keeps every thread of its pool busy-waiting
        between operations, so two processes that each take all cores slow each other down
        (measured before the split: polling p99 8.5 s and half the training steps/s). The API
        only generates, one request at a time, so it gets a quarter of the cores (at least
        one); the workers share the rest (at least one each). ``api_threads`` and ``threads``
        override either side."""
        cores = os.cpu_count() or 1
        if local_workers <= 0:
            return self.api_threads or self.threads or cores, 0
        api = self.api_threads or max(1, cores // 4)
        return api, self.threads or max(1, (cores - api) // local_workers)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'tunelab.db'}"

    def ensure_dirs(self) -> None:
        """Create the data directory (readable only by its owner: it holds the database with
        password hashes, and users' data) and its folders."""
        from tunelab.fsutil import private_dir

        private_dir(self.home)
        for d in (self.models_dir, self.artifacts_dir):
            d.mkdir(parents=True, exist_ok=True)
