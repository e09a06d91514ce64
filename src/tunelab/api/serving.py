"""Base models loaded once per API process, each with a ``Generator`` (adapter LRU), and
the admission gate in front of generation."""

from __future__ import annotations

import asyncio
import math
import threading
import time

from tunelab.catalog import BaseModelSpec, load_base_model
from tunelab.config import Settings
from tunelab.data import Example
from tunelab.errors import Unavailable
from tunelab.jobs.base_models import require_served_base_model


class GenerationGate:
    """Admits generation requests: one runs at a time, ``queue`` more wait, and the rest are
    refused at once (503 UNAVAILABLE with ``Retry-After``).

    A model generates for one request at a time (``Generator`` holds a lock across the token
    loop), so more running at once would only queue on that lock, each holding one of the
    server's worker threads (40): 60 concurrent calls used to leave none for the other
    endpoints, and ``GET /models`` waited for the generations. Waiting here is on the event
    loop and holds no thread. Only the API's route class (``api/lenient.py``) uses the gate,
    after the caller's credentials are checked, so anonymous calls take no place in line."""

    RUNNING = 1

    def __init__(self, queue: int):
        self.capacity = self.RUNNING + max(0, queue)
        self._admitted = 0  # running + waiting; touched only on the event loop
        self._turn = asyncio.Semaphore(self.RUNNING)
        self._mean_seconds = 1.0  # running mean of one generation's time, for Retry-After

    async def enter(self) -> GenerationSlot:
        """Wait for the turn; ``Unavailable`` at once when the line is full."""
        if self._admitted >= self.capacity:
            wait = min(60, max(1, math.ceil(self._mean_seconds * self._admitted / self.RUNNING)))
            raise Unavailable(
                f"The model is overloaded: {self._admitted - self.RUNNING} generation requests "
                f"are already waiting for the one running. Retry after {wait} s (Retry-After); "
                "the server's operator can allow a longer line with "
                "TUNELAB_MAX_QUEUED_GENERATIONS.",
                retry_after=wait,
            )
        self._admitted += 1
        try:
            await self._turn.acquire()
        except BaseException:  # cancelled while waiting (the client went away)
            self._admitted -= 1
            raise
        return GenerationSlot(self)

    def _leave(self, seconds: float) -> None:
        self._turn.release()
        self._admitted -= 1
        self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds


class GenerationSlot:
    """One admitted request's turn; ``release`` ends it (only the first call counts)."""

    def __init__(self, gate: GenerationGate):
        self._gate: GenerationGate | None = gate
        self._start = time.monotonic()

    def release(self) -> None:
        if self._gate is not None:
            self._gate._leave(time.monotonic() - self._start)
            self._gate = None


class ReleaseAfter:
    """An ASGI response that gives the generation slot back once it has been sent (a
    streamed answer holds the model until its last chunk), or failed. Every protocol's route
    class (Gemini, Vertex, OpenAI) wraps its generation answers in it."""

    def __init__(self, response, slot: GenerationSlot):
        self.response = response
        self.slot = slot

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.slot.release()


class ServingPool:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._generators: dict = {}
        self._lock = threading.Lock()

    def generator(self, base_model: str):
        """The Generator for ``models/{id}``, one of the server's base models (loading it on
        first use); ``NotFound`` for any other name, a server folder's too."""
        from tunelab.inference import Generator

        spec = require_served_base_model(base_model, self.settings.extra_models)
        with self._lock:
            gen = self._generators.get(spec.id)
            if gen is None:
                # the API's share of the cores when `serve` runs local workers (config.py)
                threads = self.settings.api_threads or self.settings.threads
                base = load_base_model(
                    spec, self.settings.models_dir, self.settings.device, threads,
                    self.settings.precision,
                )
                gen = Generator(base, self.settings.adapter_cache_bytes)
                self._generators[spec.id] = gen
            return gen

    def example_token_counter(self, spec: BaseModelSpec):
        """Tokens of a whole formatted training example, for dataset validation."""
        from tunelab.data.batches import tokenize_example

        base = self.generator(spec.name).base

        def count(ex: Example) -> int:
            return tokenize_example(base.tokenizer, base.template, ex).length

        return count
